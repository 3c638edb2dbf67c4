"""Exp. A, verdict: is Z causal at the pre-registered primary configuration?

Only the primary cell ``study.patching.primary`` (site, layer, k, alignment,
direction, source) gives the headline; every other cell is exploratory (its
p-values are Holm-adjusted across the grid, :func:`zhunt.experiments.patching_metrics.add_holm`).

At the primary cell the Z patch is compared with the energy-matched random
patch (``random_matched``: a random k-subspace whose patch moves the state by
the same norm) on the same pairs, by two paired tests:

* **IIA**: ``iia_Z - iia_matched >= MIN_IIA_GAIN`` and the exact McNemar p;
* **NPE**: ``npe_Z - npe_matched >= MIN_NPE_GAIN`` and the Wilcoxon signed-rank p.

The two p-values are Holm-adjusted together (family-wise level ``ALPHA``). A
test *favours Z* when its adjusted p < ``ALPHA`` and the gain reaches its
minimum; it *favours random* when adjusted p < ``ALPHA`` and the gain is below
minus that minimum.

``causal``  both tests favour Z;
``partial`` one test favours Z and neither favours random;
``reverse`` a test favours random and none favours Z;
``null``    otherwise (including too few pairs: fewer than ``MIN_PAIRS``);
``untestable`` the template-aligned *full* interchange at the primary cell's site and layer moves
            the first answer token in fewer than ``MIN_CEILING_IIA`` of its pairs: the prompt
            positions there do not carry the answer, so neither Z nor any control can, and a
            ``null`` would read as evidence against Z that the design cannot give.

Under the null (Z no better than a matched random subspace) the label is
``null`` with probability >= 1 - ALPHA (Holm controls the family-wise error of
the two tests); 4/20 vs 0/20 hits (McNemar p = 0.125) is ``null``.

Positive control: the template-aligned ``full`` interchange must reach
``iia >= POSITIVE_CONTROL_MIN_IIA`` at every layer (an exact interchange gives 1).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from zhunt.experiments.patching_thresholds import (ALPHA, MIN_CEILING_IIA, MIN_IIA_GAIN, MIN_NPE_GAIN,
                                                   MIN_PAIRS, POSITIVE_CONTROL_MIN_IIA)
from zhunt.experiments.patching_thresholds import INTERCHANGE_VERDICTS as VERDICTS
from zhunt.stats import holm

__all__ = ["ALPHA", "MIN_CEILING_IIA", "MIN_IIA_GAIN", "MIN_NPE_GAIN", "MIN_PAIRS", "POSITIVE_CONTROL_MIN_IIA",
           "VERDICTS",
           "interchange_verdict", "positive_control", "verdict_caption"]



def interchange_verdict(z: Mapping, matched: Mapping, ceiling_iia: float = float("nan")) -> tuple[str, dict]:
    """Verdict of the primary cell from its ``z`` and ``random_matched`` rows.

    Parameters
    ----------
    z, matched : mapping
        Rows of :func:`zhunt.experiments.patching_metrics.subspace_metrics` (``n_iia, iia,
        npe``; ``z`` also ``p_vs_random_matched``, ``p_npe_vs_random_matched``).
    ceiling_iia : float, optional
        IIA of the template-aligned full interchange at the primary cell's site and layer
        (:func:`positive_control`); NaN (no aligned cell, or no pair whose clean runs diverge)
        skips the ceiling check.

    Returns
    -------
    verdict : str
        One of :data:`VERDICTS`.
    criteria : dict
        ``iia_gain, npe_gain, p_iia, p_npe`` (Holm-adjusted over the two),
        ``iia_for_z, npe_for_z, iia_for_random, npe_for_random`` (bools),
        ``enough_pairs``, ``ceiling_iia``.
    """
    gains = {"iia": float(z["iia"]) - float(matched["iia"]), "npe": float(z["npe"]) - float(matched["npe"])}
    mins = {"iia": MIN_IIA_GAIN, "npe": MIN_NPE_GAIN}
    raw = np.array([z.get("p_vs_random_matched", np.nan), z.get("p_npe_vs_random_matched", np.nan)], float)
    adj = dict(zip(("iia", "npe"), holm(raw)))
    enough = int(z.get("n_iia", 0)) >= MIN_PAIRS
    crit: dict = {"iia_gain": gains["iia"], "npe_gain": gains["npe"], "p_iia": adj["iia"], "p_npe": adj["npe"],
                  "enough_pairs": enough, "ceiling_iia": float(ceiling_iia)}
    for t in ("iia", "npe"):
        sig = bool(enough and np.isfinite(adj[t]) and adj[t] < ALPHA and np.isfinite(gains[t]))
        crit[f"{t}_for_z"] = sig and gains[t] >= mins[t]
        crit[f"{t}_for_random"] = sig and gains[t] <= -mins[t]
    for_z = crit["iia_for_z"] + crit["npe_for_z"]
    for_r = crit["iia_for_random"] + crit["npe_for_random"]
    if np.isfinite(ceiling_iia) and ceiling_iia < MIN_CEILING_IIA:
        return "untestable", crit
    if for_z == 2:
        return "causal", crit
    if for_z == 1 and not for_r:
        return "partial", crit
    if for_r and not for_z:
        return "reverse", crit
    return "null", crit


def positive_control(table: pd.DataFrame) -> dict:
    """``{layer: iia}`` of the aligned ``full`` rows and whether every one reaches the threshold.

    Returns
    -------
    dict
        ``layers`` (``{(site, layer): iia}``, NaN where no pair's clean runs diverge),
        ``holds`` (every testable layer reaches the threshold; False when none is testable),
        ``testable`` (some layer has pairs).
    """
    t = table[(table["alignment"] == "aligned") & (table["subspace"] == "full")]
    vals = {(r.site, int(r.layer)): float(r.iia) for r in t.itertuples()}
    tested = {key: v for key, v in vals.items() if np.isfinite(v)}
    ok = bool(tested) and all(v >= POSITIVE_CONTROL_MIN_IIA for v in tested.values())
    return {"layers": vals, "holds": ok, "testable": bool(tested)}


def verdict_caption() -> str:
    """The verdict rule and its thresholds, for the verdict file and the report captions."""
    return (f"Headline from the pre-registered primary cell only (study.patching.primary); the rest is "
            f"exploratory, Holm-adjusted across the grid. At the primary cell Z is compared with the "
            f"energy-matched random subspace on the same pairs: IIA by exact McNemar, NPE by the two-sided "
            f"Wilcoxon signed-rank test, the two p-values Holm-adjusted at alpha = {ALPHA}. A test favours Z when "
            f"its adjusted p < {ALPHA} and the gain is >= {MIN_IIA_GAIN} (IIA) / {MIN_NPE_GAIN} (NPE). causal = "
            f"both favour Z; partial = one does and none favours random; reverse = random is favoured; null "
            f"otherwise, or with fewer than {MIN_PAIRS} pairs with a first answer token (the first token where the "
            f"base's and the donor run's clean continuations diverge; IIA, LD and NPE are read there, the common "
            f"prefix teacher-forced and patched like the prompt). Rates carry Wilson "
            f"95% intervals, NPE a percentile bootstrap interval over pairs. Positive control: the template-aligned "
            f"full interchange must give IIA >= {POSITIVE_CONTROL_MIN_IIA} at every layer; untestable = at the "
            f"primary cell's site and layer it gives IIA < {MIN_CEILING_IIA} (those prompt positions do not carry the "
            f"first answer token, so no subspace patch there can: the test has no ceiling). Beside Z, not in the label: "
            f"das (a learned k-dim subspace, held-out pairs; overlap_z / overlap_ms = Grassmann similarity with Z / "
            f"M_s, angle_*_deg_median = median principal angle) and ms_ablation (the base run with the language "
            f"subspace M_s projected out, h <- h - lam P_Ms h, at study.patching.ms_ablation.primary_lam; the other "
            f"lam are exploratory rows).")
