"""Reference numbers quoted from the seed documents (comparison rows only, never an input).

The seeds measured Qwen2.5-3B (36 decoder layers, d = 2048) only. These values are
quoted, not recomputed; every entry names where in the seeds it comes from.
"""

from __future__ import annotations

__all__ = ["QWEN25_3B_LAYER"]

#: Seed 001's weight-only bottleneck and seed 000's best Phase 2 configuration for
#: Qwen2.5-3B: the reference row of the cross-model layer comparison. The seed's
#: Phase 2 ran at L32 and L33 only, so its "data-best layer" is the better of two.
QWEN25_3B_LAYER = {
    "model": "Qwen2.5-3B (seed, quoted)",
    "num_layers": 36,
    "d": 2048,
    "predicted_layer": 33,
    "predicted_source": "seed 001, structural table: L33 heads collapse to eff. rank ~78 (lowest), "
                        "L33->L34 the sharpest phase boundary",
    "data_best_layer": 32,
    "data_best_source": "seed 000, 'Best config: L32, multi-head, k=50, mean-pool', "
                        "ratio_Z = 0.730 vs ratio_Zp = 0.824 (Phase 2 ran at L32 and L33 only)",
    "data_score": "rel_ratio",
    "k": 50,
    "phases": "1-33-2",
}
