"""Benchmark: the aligned cosine of the weight-family stage, singular values only vs the full Procrustes.

Usage::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python bench/families.py [--models smollm2 gemma qwen] [--repeats 3]

:func:`zhunt.weights.families.aligned_cos` needs only the sum of the singular values of
``A^T B``; with ``return_rotation=True`` it still solves the whole Procrustes problem
(:func:`scipy.linalg.orthogonal_procrustes`: SVD with singular vectors, then ``U V^T``), which is
what every call did before 2026-12-08. Both arms run on the same random float64 matrices of each
family's shape (residual-side alignment, as the stage's primary reading), interleaved, and the
script prints the median process CPU time of each arm, their ratio and the relative difference of
the two cosines. Shapes (``nn.Linear`` (out, in)) are those of the named models' decoder layers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from zhunt.weights.families import FAMILIES, _align_axis, aligned_cos

#: d_model, query heads x head_dim, kv heads x head_dim, d_ff
SHAPES = {
    "smollm2": (576, 9 * 64, 3 * 64, 1536),
    "gemma": (640, 4 * 256, 1 * 256, 2048),
    "qwen": (2048, 16 * 128, 2 * 128, 11008),
}


def family_shapes(d: int, q: int, kv: int, ff: int) -> dict[str, tuple[int, int]]:
    return {"q_proj": (q, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, q),
            "gate_proj": (ff, d), "up_proj": (ff, d), "down_proj": (d, ff)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'model':8s} {'family':10s} {'shape':>13s} {'procrustes s':>13s} {'svdvals s':>10s} {'ratio':>6s} {'rel diff':>9s}")
    for model in args.models:
        tot = {"full": 0.0, "vals": 0.0}
        for fam, shape in family_shapes(*SHAPES[model]).items():
            A, B = rng.standard_normal(shape), rng.standard_normal(shape)
            axis = _align_axis(fam, "residual")
            times = {"full": [], "vals": []}
            for r in range(args.repeats):
                for arm in (("full", "vals") if r % 2 == 0 else ("vals", "full")):
                    t = time.process_time()
                    c = aligned_cos(A, B, axis=axis, return_rotation=True)[0] if arm == "full" else \
                        aligned_cos(A, B, axis=axis)
                    times[arm].append(time.process_time() - t)
                    if arm == "full":
                        c_full = c
                    else:
                        c_vals = c
            f, v = statistics.median(times["full"]), statistics.median(times["vals"])
            tot["full"] += f
            tot["vals"] += v
            print(f"{model:8s} {fam:10s} {str(shape):>13s} {f:13.3f} {v:10.3f} {f / v:6.2f} "
                  f"{abs(c_full - c_vals) / abs(c_full):9.1e}")
        print(f"{model:8s} {'all 7':10s} {'':>13s} {tot['full']:13.3f} {tot['vals']:10.3f} "
              f"{tot['full'] / tot['vals']:6.2f}   (one layer pair; families: {', '.join(FAMILIES)})")


if __name__ == "__main__":
    main()
