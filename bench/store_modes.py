"""Benchmark: what float16 storage and `extraction.layers: study` change downstream.

Usage::

    python bench/store_modes.py                       # the organism (resources/models/organism)
    python bench/store_modes.py --model gemma3-270m   # any prepared model of config.yaml
    python bench/store_modes.py --configfile tests/tiny/config.yaml --model organism-tiny

Runs the real stages (Snakemake, the repository's rules) three times on the same prepared model
folder, each in its own scratch copy of the workflow: ``float32 / all`` (the reference),
``float16 / all`` and ``float16 / study``, and compares every numeric column of the Phase 2 table
(ratios and percentiles), Exp. B's R(k) table and the bridge table (R^2, LOO R^2) with the
reference: max |change| and max relative change ``|x - x_ref| / |x_ref|`` (over entries with
``|x_ref| > 1e-6``). It also reports each store's size. Results: a Markdown table on stdout and in
``<out>/store_modes.md``. The model folder is linked read-only, never rebuilt
(``--rerun-triggers mtime``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
ARMS = {  # name -> extraction settings
    "float32/all": {"dtype": "float32", "layers": "all"},
    "float16/all": {"dtype": "float16", "layers": "all"},
    "float16/study": {"dtype": "float16", "layers": "study"},
}
TABLES = {  # what -> (path under results/<model>, the columns the report's headline reads)
    "Phase 2": ("zspace/phase2.tsv", ("ratio",)),
    "R(k)": ("decomposition/R.tsv", ("R",)),
    "bridge": ("bridge/bridge.tsv", ("r2",)),
}
#: rows of a table that are well posed (the bridge with N problems <= k is singular: seed Exp. D)
WELL_POSED = {"bridge": lambda df: ~df["n_le_k"].astype(str).str.lower().isin(["true", "1"])}
ITEMS = ("Snakefile", "config.yaml", "workflow", "envs", "profiles", "resources/prompts", "tests/tiny")


def _copy(dst: Path, model: str) -> None:
    if not (ROOT / "resources/models" / model / "config.json").is_file():
        sys.exit(f"resources/models/{model} is not a prepared model folder (this bench never builds one)")
    for item in ITEMS:
        src, out = ROOT / item, dst / item
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, out)
    (dst / "resources/models").mkdir(parents=True, exist_ok=True)
    link = dst / "resources/models" / model
    if not link.exists():
        link.symlink_to((ROOT / "resources/models" / model).resolve())


def _run(wd: Path, model: str, configfiles, arm: dict, cores: int) -> float:
    extra = wd / "store_mode.yaml"
    extra.write_text(yaml.safe_dump({"analyze": [model], "extraction": arm}))
    targets = [f"results/{model}/{path}" for path, _ in TABLES.values()]
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--rerun-triggers", "mtime",
           "--configfile", *configfiles, str(extra), "--", *targets]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"snakemake failed in {wd}:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def compare(ref: pd.DataFrame, other: pd.DataFrame, headline) -> dict:
    """Max absolute and relative change of the numeric columns (rows aligned by position)."""
    if ref.shape != other.shape or list(ref.columns) != list(other.columns):
        raise SystemExit(f"tables differ in shape: {ref.shape} vs {other.shape}")
    num = [c for c in ref.columns if pd.api.types.is_float_dtype(ref[c])]
    for c in ref.columns:
        if c not in num:
            if not ref[c].astype(str).equals(other[c].astype(str)):
                raise SystemExit(f"non-numeric column {c!r} differs between arms")
    out = {}
    for name, cols in (("all numeric", num), ("headline", [c for c in num if any(h in c for h in headline)])):
        a = ref[cols].to_numpy(float)
        b = other[cols].to_numpy(float)
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = np.where(ok, a, 0.0), np.where(ok, b, 0.0)
        diff = np.abs(a - b)[ok]
        big = ok & (np.abs(a) > 1e-6)
        rel = (np.abs(a - b)[big] / np.abs(a)[big])
        out[name] = (float(diff.max()) if diff.size else 0.0, float(rel.max()) if rel.size else 0.0, len(cols))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="organism")
    ap.add_argument("--configfile", action="append", default=[], help="extra config layered on config.yaml")
    ap.add_argument("--out", default="/tmp/zhunt-store-modes")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    out = Path(args.out)
    tables, sizes, walls = {}, {}, {}
    for name, arm in ARMS.items():
        wd = out / name.replace("/", "-")
        _copy(wd, args.model)
        walls[name] = _run(wd, args.model, args.configfile, arm, args.cores)
        res = wd / "results" / args.model
        tables[name] = {what: pd.read_csv(res / path, sep="\t") for what, (path, _) in TABLES.items()}
        sizes[name] = sum(p.stat().st_size for p in (res / "activations").glob("*.h5"))
    lines = [f"model `{args.model}`; reference float32/all; store size float32/all = "
             f"{sizes['float32/all'] / 2**20:.2f} MiB", "",
             "| arm | store MiB | table | columns | max abs change | max rel change | headline cols | "
             "headline max abs | headline max rel |", "|---|---|---|---|---|---|---|---|---|"]
    for name in list(ARMS)[1:]:
        for what, (_, headline) in TABLES.items():
            ref, other = tables["float32/all"][what], tables[name][what]
            parts = [(what, ref, other)]
            if what in WELL_POSED:
                keep = WELL_POSED[what](ref).to_numpy()
                parts.append((f"{what} (N > k rows: {int(keep.sum())} of {len(keep)})",
                              ref[keep].reset_index(drop=True), other[keep].reset_index(drop=True)))
            for label, r, o in parts:
                c = compare(r, o, headline)
                (aa, ar, na), (ha, hr, nh) = c["all numeric"], c["headline"]
                lines.append(f"| {name} | {sizes[name] / 2**20:.2f} | {label} | {na} | {aa:.3g} | {ar:.3g} | "
                             f"{nh} | {ha:.3g} | {hr:.3g} |")
    lines += ["", "wall s: " + ", ".join(f"{k} {v:.0f}" for k, v in walls.items())]
    text = "\n".join(lines) + "\n"
    (out / "store_modes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
