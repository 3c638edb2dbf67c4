"""Benchmark: one Exp. A interchange cell (the work of rule ``patching_cell``) at several forward batch sizes.

Usage::

    python bench/cell.py resources/models/organism --store results/organism/activations/organism.h5 \\
        --prompts results/organism/prompts/organism.tsv --mask results/organism/masks/L3.h5 \\
        --template organism --cell input_L3_k16_mean_en-from-zh_donor --n-donors 3 \\
        --max-new-tokens 16 --batch-sizes 16,64,128 --repeats 3

The model, prompts and store are loaded once (:func:`zhunt.experiments.patching_cells.cell_context`);
each arm is :func:`zhunt.experiments.patching_cells.cell_records` of ``--cell`` at one batch size
(its clean runs, the two teacher-forced passes and the patched generation; the ``ms_ablation`` rows
at ``--ms-lam`` with ``--ms-basis``; no DAS rows), arms
interleaved, median of ``--repeats``. Prints each arm's median process CPU and wall time, the
ratio to the first batch size, and the largest difference of the records from the first arm's
(a batch size changes only padding: equal text columns, float-level numbers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved, machine, print_arms  # noqa: E402

from zhunt.experiments.patching_cells import cell_context, cell_records, read_cell_bases  # noqa: E402
from zhunt.experiments.patching_design import parse_cell  # noqa: E402


def records_diff(a, b) -> str:
    """Differing non-numeric cells and the largest numeric difference between two record tables."""
    import pandas as pd

    num = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c])]
    other = [c for c in a.columns if c not in num]
    n_text = int(sum((a[c].astype(str) != b[c].astype(str)).sum() for c in other))
    diffs = {c: float(np.nanmax(np.abs(a[c].astype(float) - b[c].astype(float)))) for c in num
             if a[c].notna().any()}
    worst = max(diffs, key=diffs.get)
    return f"{n_text} differing text cells; largest numeric difference {diffs[worst]:.1e} ({worst})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--store", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--mask", required=True)
    ap.add_argument("--templates", default="resources/prompts/templates.yaml")
    ap.add_argument("--template", default="organism")
    ap.add_argument("--languages", default="en,zh")
    ap.add_argument("--cell", default="input_L3_k16_mean_en-from-zh_donor")
    ap.add_argument("--ms-basis", default=None, help="ms_basis.h5: add the ms_ablation rows (offset 0, mean)")
    ap.add_argument("--ms-lam", type=float, default=1.0)
    ap.add_argument("--n-donors", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-sizes", default="16,64,128")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls of each arm first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="batch sizes 16 and 64, 1 repeat")
    args = ap.parse_args()
    if args.quick:
        args.batch_sizes, args.repeats = "16,64", 1
    torch.set_num_threads(args.threads)
    ctx = cell_context(args.model_dir, args.store, args.prompts, args.languages.split(","), args.templates,
                       args.template)
    cell = parse_cell(args.cell)
    bases = read_cell_bases(cell, ctx["adapter"].hidden_size, args.mask, ms_path=args.ms_basis,
                            ms_layers=[cell.layer] if args.ms_basis else ())
    lams = [args.ms_lam] if args.ms_basis else ()
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    rec = {}
    arms = {f"bs{bs}": (lambda bs=bs: rec.__setitem__(bs, cell_records(
        ctx, cell, bases, n_donors=args.n_donors, max_new_tokens=args.max_new_tokens, batch_size=bs, ms_lams=lams)))
        for bs in sizes}
    cpu: dict = {}
    wall = interleaved(arms, args.repeats, warmup=args.warmup, cpu=cpu)
    print(f"# bench/cell.py  {machine()}")
    print(f"model={args.model_dir} cell={args.cell} ms_basis={args.ms_basis} n_donors={args.n_donors} "
          f"max_new_tokens={args.max_new_tokens} rows={len(rec[sizes[0]])} threads={args.threads} repeats={args.repeats}")
    med_c, med_w = print_arms(wall, cpu, 6)
    first = f"bs{sizes[0]}"
    for bs in sizes[1:]:
        print(f"bs{bs} / {first} = {med_c[f'bs{bs}'] / med_c[first]:.2f}x CPU, {med_w[f'bs{bs}'] / med_w[first]:.2f}x "
              f"wall; records vs {first}: {records_diff(rec[sizes[0]], rec[bs])}")


if __name__ == "__main__":
    main()
