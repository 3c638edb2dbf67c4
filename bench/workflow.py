"""Benchmark: workflow overheads on the tiny config, in a temporary copy of the workflow.

Usage::

    python bench/workflow.py [--repeats 5] [--keep DIR] [--quick]
    python bench/workflow.py --rss-only          # only the extraction peak-RSS table
    python bench/workflow.py --keep /tmp/wf --no-rss   # reuse a finished copy; overheads only

Never touches the repository's own ``results/`` or ``.snakemake/``: the
workflow (Snakefile, config.yaml, workflow/, profiles/, resources/ without
models, envs/, tests/tiny/) is copied to a temporary directory and Snakemake
runs there with ``--configfile tests/tiny/config.yaml``. Prints:

1. the wall time of the full tiny run (for reference);
2. ``snakemake -n`` on the finished run: median of ``--repeats`` (goal < 5 s),
   and that it reports nothing to do;
3. the jobs a dry run schedules after changing one ARD lambda: expected only
   ``ard_layer`` and its dependants (``ard_summary``, ``ard_heldout``, the
   per-model summary), nothing upstream;
4. peak RSS of :func:`zhunt.data.extraction.extract_to_store`, each in a fresh
   subprocess: the process's RSS after loading the model and a 2-prompt
   warm-up extraction (safetensors weights are memory-mapped and only become
   resident when first used), and the high-water mark during the measured
   extraction alone (``/proc/self/clear_refs`` resets it after the warm-up), for
   several models and two prompt-set sizes per model, both with the same
   longest batch (the store is streamed batch by batch, so the extraction peak
   should not grow with the number of prompts; it follows one batch's hidden
   states plus the HDF5 chunk cache of at most 4 x ~1 MiB per hidden index).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import machine  # noqa: E402

from zhunt.dryrun import scheduled_jobs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "config.yaml", "workflow", "profiles", "resources", "envs", "tests/tiny"]
TINY = "tests/tiny/config.yaml"
UPSTREAM = {"prepare_model", "train_organism", "organism_prompts", "extract_activations", "build_masks",
            "structure", "weight_families", "qk_operators", "theory", "toy_theorem", "behaviour", "garch",
            "phase2", "datadriven_z", "patching", "decomposition", "bridge"}


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def snakemake(wd, *args, configfile=TINY, timeout=1800, cpu=None):
    """Run the Snakemake CLI in ``wd``; returns (result, wall seconds). ``cpu``: list that gets the
    CPU seconds (user + sys) of the run appended."""
    c0, t0 = children_cpu(), time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", configfile, *args],
                         cwd=wd, capture_output=True, text=True, timeout=timeout)
    if cpu is not None:
        cpu.append(children_cpu() - c0)
    return res, time.perf_counter() - t0


def make_copy(wd: Path) -> None:
    for item in COPY:
        src, dst = ROOT / item, wd / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("models", "__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)


# Runs in a fresh interpreter: load a model, reset the RSS high-water mark, extract, report.
RSS_PROBE = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import pandas as pd, torch
from zhunt.data.extraction import extract_to_store
from zhunt.models import get_adapter, load_model
from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long

model_dir, prompts, template, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024  # MiB
model, tok = load_model(model_dir, device="cpu")
long = to_long(load_prompt_table(prompts, languages=["en", "zh"]), ["en", "zh"])
long = long.assign(text=render_prompts(long, template, load_templates("resources/prompts/templates.yaml"),
                                       tokenizer=tok))
# longest prompts first, so every set size holds the same longest batch (the peak follows the
# longest batch: (L + 1) x B x T_max x d floats); then repeat the set (new ids) up to n rows
lens = [len(x) for x in tok(list(long["text"]))["input_ids"]]
long = long.assign(_len=lens).sort_values("_len", ascending=False, kind="stable").drop(columns="_len")
reps = -(-n // len(long))
long = pd.concat([long.assign(id=long["id"].astype(str) + f"-r{r}") for r in range(reps)]).head(n)
ad = get_adapter(model)
params_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20
with tempfile.TemporaryDirectory() as tmp:  # warm-up on 2 prompts: pages the (memory-mapped) weights in
    extract_to_store(model, tok, ad.layers, long.head(2), Path(tmp) / "w.h5", batch_size=batch)
after_load = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    info = extract_to_store(model, tok, ad.layers, long, Path(tmp) / "x.h5", batch_size=batch)
    dt = time.perf_counter() - t0
    store_mib = (Path(tmp) / "x.h5").stat().st_size / 2 ** 20
t_max = max(lens)
batch_mib = (ad.num_layers + 1) * min(batch, n) * t_max * ad.hidden_size * 4 / 2 ** 20
print(json.dumps(dict(params_mib=params_mib, after_load=after_load, hwm=status("VmHWM"), rows=info["n_rows"],
                      prompts=info["n_prompts"], layers=ad.num_layers, d=ad.hidden_size, store_mib=store_mib,
                      seconds=dt, t_max=t_max, batch_mib=batch_mib)))
"""


def rss_table(models, batch):
    print("peak RSS of extract_to_store (fresh process per row; MiB; batch size "
          f"{batch}; 'after load' = RSS after loading + a 2-prompt warm-up; 'peak - load' = growth of the "
          "high-water mark during the measured extraction):")
    print("  (prompts sorted longest first, so both sizes share the longest batch; 'batch' = one batch's "
          "L + 1 hidden states at the longest length T_max, float32)")
    print(f"{'model':<14s} {'params':>7s} {'prompts':>7s} {'tokens':>7s} {'T_max':>5s} {'batch':>6s} {'store':>7s} "
          f"{'after load':>10s} {'extract peak':>12s} {'peak - load':>11s} {'seconds':>7s}")
    rows = []
    for name, mdir, prompts, template, sizes in models:
        if not (Path(mdir) / "config.json").is_file():
            print(f"{name:<14s} (no model at {mdir}: skipped)")
            continue
        for n in sizes:
            res = subprocess.run([sys.executable, "-c", RSS_PROBE, str(mdir), str(prompts), template, str(n),
                                  str(batch)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
            if res.returncode != 0:
                print(f"{name:<14s} n={n}: failed: {res.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append((name, r))
            print(f"{name:<14s} {r['params_mib']:7.0f} {r['prompts']:7d} {r['rows']:7d} {r['t_max']:5d} "
                  f"{r['batch_mib']:6.0f} {r['store_mib']:7.1f} "
                  f"{r['after_load']:10.0f} {r['hwm']:12.0f} {r['hwm'] - r['after_load']:11.0f} "
                  f"{r['seconds']:7.1f}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="dry runs timed")
    ap.add_argument("--keep", default=None, help="use/keep this directory instead of a temporary one "
                                                 "(an existing finished copy is reused)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rss-only", action="store_true", help="only the extraction peak-RSS table")
    ap.add_argument("--no-rss", action="store_true", help="skip the extraction peak-RSS table")
    ap.add_argument("--quick", action="store_true", help="3 dry runs; RSS for the organism only")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 3
    print(f"# bench/workflow.py  {machine()}")

    # sizes: both above the point where the HDF5 chunk cache (4 chunks of ~1 MiB per hidden index)
    # is full, so a flat peak shows streaming
    organism = ("organism", "/tmp/zhunt-organism", "/tmp/zhunt-organism-report/organism.tsv", "organism",
                [60, 240] if args.quick else [600, 2400])
    models = [organism] if args.quick else [
        organism,
        ("smollm2-135m", "/tmp/zhunt-models/smollm2-135m", ROOT / "resources/prompts/math.tsv", "completion",
         [64, 256]),
        ("gemma3-270m", "/tmp/zhunt-models/gemma3-270m", ROOT / "resources/prompts/math.tsv", "completion",
         [64, 256]),
    ]
    if not args.rss_only:
        tmp = None
        if args.keep:
            wd = Path(args.keep)
            wd.mkdir(parents=True, exist_ok=True)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="zhunt-bench-wf-")
            wd = Path(tmp.name)
        if not (wd / "Snakefile").exists():
            make_copy(wd)
        res, dt = snakemake(wd)
        if res.returncode != 0:
            print(res.stderr[-3000:])
            raise SystemExit(f"tiny run failed in {wd}")
        print(f"tiny workflow run in {wd}: {dt:.1f} s  (jobs: {sum(scheduled_jobs(res.stdout + res.stderr).values())}"
              f" or already done)")

        times, cpu, nothing = [], [], True
        for _ in range(args.repeats):
            res, dt = snakemake(wd, "-n", cpu=cpu)
            times.append(dt)
            nothing &= res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
        med, cmed = statistics.median(times), statistics.median(cpu)
        # verdict on CPU time: Snakemake's dry run is single-threaded, so its CPU time is the wall
        # time it would take on an idle core; wall time shows the load of the moment
        print(f"snakemake -n on the finished run: median {cmed:.2f} s CPU, {med:.2f} s wall over {args.repeats} "
              f"(wall min..max {min(times):.2f}..{max(times):.2f}); nothing to do: {nothing}  "
              f"(goal < 5 s: {'met' if cmed < 5 and nothing else 'MISSED'})")

        cfg = yaml.safe_load((wd / TINY).read_text())
        ard = cfg["models"]["organism-tiny"]["study"]["ard"]
        old = list(ard["lambdas"])
        ard["lambdas"] = old[:-1] + [old[-1] * 2]
        (wd / "tests/tiny/lambda.yaml").write_text(yaml.safe_dump(cfg))
        res, dt = snakemake(wd, "-n", configfile="tests/tiny/lambda.yaml")
        jobs = scheduled_jobs(res.stdout)
        bad = sorted(set(jobs) & UPSTREAM)
        print(f"after ard.lambdas {old} -> {ard['lambdas']}: dry run ({dt:.1f} s) schedules {jobs}; "
              f"upstream rules rescheduled: {bad or 'none'}  "
              f"(goal ARD + dependants only: {'met' if jobs and not bad else 'MISSED'})")
        if tmp is not None:
            tmp.cleanup()

    if not args.no_rss:
        rss_table(models, args.batch_size)


if __name__ == "__main__":
    main()
