"""Benchmark: every verdict on its null and planted inputs over seeds (issue 13, "every verdict calibrated").

Usage::

    python bench/calibration.py [--n 200] [--n-planted 100] [--cases qk,garch] [--tsv out.tsv]
    python bench/calibration.py --quick          # 5 seeds of each kind, the cheap cases only

For each case of :data:`zhunt.calibration.CASES` (the registry ``tests/test_calibration.py`` asserts
on, with the same generators of :mod:`zhunt.calibration.generators`): the verdict function, the
rate of null labels among ``--n`` null inputs and of positive labels among ``--n-planted`` planted
inputs, each with its Wilson 95 % interval (:func:`zhunt.stats.binomial_ci`), the seeds, the
thresholds (read from the verdict's module) and the wall time. Seeds ``0 .. n-1``: the first seeds
are the ones the tests use, so a test's rate is the first part of the bench's. Cases marked
``literal`` (``*`` after the name) are rules kept for comparison, not calibrated verdicts.
A case's ``--n`` is capped at ``--max-expensive`` for the cases whose single run takes over 0.1 s
in the tests' budget (Exp. A interchange, Exp. B, GARCH and cointegration model verdicts, layer
prediction), unless ``--max-expensive 0``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import machine  # noqa: E402

from zhunt.calibration import CASES, calibrate  # noqa: E402

#: Cases with a run above ~0.1 s (their --n is capped by --max-expensive).
EXPENSIVE = ("exp_a_interchange", "exp_a_grid_overall", "exp_b_zdominated", "exp_b_zh_en", "exp_b_phases",
             "garch_model", "cointegration_model", "layer_prediction", "families_gaussian", "families_flat")


def _fmt(rate, lo, hi) -> str:
    return f"{100 * rate:5.1f}% [{100 * lo:5.1f}, {100 * hi:5.1f}]"


def _thresholds(c) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.thresholds().items()) or "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="null seeds per case")
    ap.add_argument("--n-planted", type=int, default=100, help="planted seeds per case")
    ap.add_argument("--max-expensive", type=int, default=100,
                    help="cap on both counts for the expensive cases (0: no cap)")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--tsv", default="", help="also write the table (one row per case) to this TSV")
    ap.add_argument("--quick", action="store_true", help="5 seeds of each kind, the cheap cases only")
    args = ap.parse_args()
    names = [x for x in args.cases.split(",") if x]
    unknown = sorted(set(names) - {c.name for c in CASES})
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}")
    cases = [c for c in CASES if (not names or c.name in names) and not (args.quick and c.name in EXPENSIVE)]
    n0, n1 = (5, 5) if args.quick else (args.n, args.n_planted)
    print(machine())
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} null seeds {n0}, planted seeds {n1}, "
          f"expensive cases capped at {args.max_expensive or 'no cap'}")
    head = (f"{'case':22s} {'verdict function':58s} {'null label rate [Wilson 95%]':>30s} "
            f"{'positive rate (planted) [Wilson 95%]':>38s} {'n null':>6s} {'n pl.':>5s} {'s':>6s}  thresholds")
    print(head)
    rows = []
    for c in cases:
        cap = args.max_expensive if (c.name in EXPENSIVE and args.max_expensive) else None
        a, b = (min(n0, cap), min(n1, cap)) if cap else (n0, n1)
        t0 = time.perf_counter()
        r = calibrate(c, n_seeds=a, n_planted=b)
        dt = time.perf_counter() - t0
        name = c.name + ("*" if c.literal else "")
        print(f"{name:22s} {c.verdict[:58]:58s} {_fmt(r['null_rate'], r['null_lo'], r['null_hi']):>30s} "
              f"{_fmt(r['pos_rate'], r['pos_lo'], r['pos_hi']):>38s} {r['n']:6d} {r['n_planted']:5d} {dt:6.1f}  "
              f"{_thresholds(c)}", flush=True)
        rows.append({"case": c.name, "literal": c.literal, "verdict": c.verdict, "n_null": r["n"],
                     "null_rate": r["null_rate"], "null_lo": r["null_lo"], "null_hi": r["null_hi"],
                     "n_planted": r["n_planted"], "pos_rate": r["pos_rate"], "pos_lo": r["pos_lo"],
                     "pos_hi": r["pos_hi"], "seconds": dt, "thresholds": _thresholds(c)})
    if args.tsv:
        import pandas as pd

        pd.DataFrame(rows).to_csv(args.tsv, sep="\t", index=False)
    print("* literal: a rule kept for comparison next to the calibrated verdict (not held to the 95% null rate)")


if __name__ == "__main__":
    main()
