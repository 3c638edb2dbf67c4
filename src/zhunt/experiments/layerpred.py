"""Do the weights predict the layer where the data finds Z? (seed 001, "Key novelty")

The seeds claim that the layer holding a language-agnostic subspace can be found from
static weights alone: the structure stage (:mod:`zhunt.weights.structure`) predicts a bottleneck
layer from the attention-kernel effective ranks and the similarity drop that follows.
This module tests that claim on the data side, layer by layer:

1. **Weight-only scores per layer** are the structure stage's own numbers
   (``structure/layer_scores.tsv``, :func:`zhunt.weights.structure.layer_score_table`); nothing is
   recomputed here.
2. **Data sweep** (:func:`layer_sweep`): at every decoder layer ``l``, at the configured
   site (hidden index ``j = zhunt.models.site.hidden_index(l, site)``), the Phase 2 metrics of
   the weight-derived ``Z`` of that layer at one k (pooled vectors, :mod:`zhunt.activations.zspace`):
   ``ratio_Z``, ``ratio_Zperp``, their quotient ``rel_ratio = ratio_Z / ratio_Zperp``,
   the percentile of ``ratio_Z`` among Haar-random k-dim subspaces and the language
   energy ``E_lang(Z) / (k / d)``. Causal per-layer scores: Exp. A's IIA / NPE of each
   layer's own ``Z`` at every layer (the causal sweep, :mod:`zhunt.experiments.layer_causal`,
   read by :func:`sweep_causal_scores`) and of a learned k-dim subspace (DAS) at the DAS sweep's
   layers (every layer of a small model, every third plus the predicted and configured layers of a
   larger one: :func:`zhunt.experiments.layer_causal.das_sweep`, read by :func:`das_sweep_scores`;
   without that sweep, DAS at the patching layers from ``subspaces.tsv``, :func:`causal_scores`).
3. **Comparison** (:func:`compare_layers`): per data score, the data-best layer, its
   distance to the predicted layer in layers and as a fraction of depth (``Δ / (L - 1)``),
   and the Spearman correlation (``scipy.stats.spearmanr``) of every weight score with
   every data score across layers, each oriented so that positive means "the more
   bottleneck-like by the weights, the cleaner Z by the data".

Permutation null (:func:`shift_spearman`)
-----------------------------------------
Layer profiles are smooth and often trend with depth, so permuting layers freely makes
any two trending profiles look correlated. The null keeps the order structure of the
data profile and only moves it relative to the weight profile: all ``n`` circular
shifts of the ``n`` layers, and the same ``n`` shifts of the reversed order (the
``2n`` symmetries of a cycle; the reversal doubles the resolution: with circular shifts
alone, 18 layers could never reach p < 0.05). One-sided exact p-value in the oriented
direction, identity included::

    p = #{g in G : rho(w, d o g) >= rho(w, d)} / |G|,   |G| = 2n,  p >= 1 / (2n).

Layers where either score is undefined (NaN: e.g. ``sim_prev`` at layer 0, a causal score
measured at some layers only) are dropped first and the null acts on the remaining
sequence.

Verdict (:func:`layer_verdict`, thresholds :data:`ALPHA`, :data:`PREDICT_FRAC`,
:data:`NEAR_FRAC`, :data:`MIN_LAYERS`)
---------------------------------------------------------------------------------
From the pre-registered primary pair (weight score :data:`PRIMARY_WEIGHT`, the score the
prediction itself uses; data score :data:`PRIMARY_DATA`, the seed's Phase 2 criterion):

* ``"too few layers"`` when fewer than :data:`MIN_LAYERS` layers are compared: then
  ``1 / (2n) > ALPHA`` and no outcome could be significant;
* ``"predicts"``: ``p <= ALPHA`` and ``Δ / (L - 1) <= PREDICT_FRAC``;
* ``"near"``: ``p <= ALPHA`` and ``Δ / (L - 1) <= NEAR_FRAC``;
* ``"does not predict"`` otherwise.

A location hit alone is not evidence (a random data profile puts its best layer within
one layer of any prediction with probability ~3 / L), so both positive labels need the
profile correlation; by construction of the exact permutation test, random per-layer
scores give a positive label in at most ``ALPHA`` of cases (``tests/test_layerpred.py``
checks it over seeds, and that planted profiles give ``"predicts"``). The other data
scores get the same verdict as exploratory rows, and every (weight score, data score)
p-value also gets a Holm-adjusted value across the grid (:func:`zhunt.stats.holm`).
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.errors import ZhuntError

__all__ = [
    "ALPHA", "PREDICT_FRAC", "NEAR_FRAC", "MIN_LAYERS", "VERDICTS",
    "WEIGHT_SCORES", "DATA_SCORES", "CAUSAL_SCORES", "PRIMARY_WEIGHT", "PRIMARY_DATA", "PRIMARY_POOLING",
    "cycle_symmetries", "shift_spearman", "best_layer", "layer_verdict", "compare_layers",
    "layer_sweep", "causal_scores", "sweep_causal_scores", "das_sweep_scores", "check_sweep_params", "comparison_tables",
    "models_layer_table",
    "thresholds_caption", "SWEEP_KIND",
]

log = logging.getLogger("zhunt.experiments.layerpred")

#: Significance level of the shift-permutation test of the primary pair.
ALPHA = 0.05
#: "predicts": the data-best layer lies within this fraction of depth of the predicted one
#: (Qwen2.5-3B's seed numbers, L33 vs L32 of 36 layers, give 1/35 = 0.029).
PREDICT_FRAC = 0.10
#: "near": within this fraction of depth.
NEAR_FRAC = 0.25
#: Fewest compared layers for which the exact test can reach ALPHA: 1 / (2n) <= ALPHA.
MIN_LAYERS = math.ceil(1 / (2 * ALPHA))
VERDICTS = ("predicts", "near", "does not predict", "too few layers")

#: Weight-only scores (columns of ``structure/layer_scores.tsv``) and their orientation:
#: +1 = higher is more bottleneck-like by the seeds' reading, -1 = lower is.
WEIGHT_SCORES: dict = {
    "attn_eff_rank_mean": -1,  # the bottleneck has the lowest head effective rank (1.py)
    "attn_eff_rank_cv": -1,    # ... and the most uniform one across heads (CV < 0.08 at L33)
    "ffn_ratio": -1,           # the FFN avoids the attention subspace there (0.57x chance, 2.py)
    "sim_prev": +1,            # the approach pair L32<->L33 is the most similar (0.482, 2.py)
    "drop_after": +1,          # the sharpest phase boundary follows it (L33 -> L34, 2.py)
}
#: Phase 2 data scores (columns of ``layers/sweep.tsv``): -1 = lower means a cleaner Z.
DATA_SCORES: dict = {
    "rel_ratio": -1,             # ratio_Z / ratio_Z⊥: seed 001's ratio_Z < ratio_Zp criterion
    "ratio_Z_percentile": -1,    # ratio_Z among Haar-random k-dim subspaces (small = better)
    "E_lang_Z_over_chance": -1,  # language energy in Z relative to k/d (seed: 80-86% at k=20-50)
}
#: Causal scores (the causal and DAS sweeps, or ``patching/subspaces.tsv``): +1 = higher means the
#: subspace carries more of the answer.
CAUSAL_SCORES: dict = {"iia_z": +1, "npe_z": +1, "iia_das": +1, "npe_das": +1}
PRIMARY_WEIGHT = "attn_eff_rank_mean"
PRIMARY_DATA = "rel_ratio"
#: Pooling of the primary data score (seed 000's best configuration is mean-pooled).
PRIMARY_POOLING = "mean"
#: Mask kind of the sweep (the multi-head Z of seed 000's best configuration).
SWEEP_KIND = "multihead"


def thresholds_caption() -> str:
    """The verdict thresholds in one sentence (for report captions and the verdict file)."""
    return (f"verdict from {PRIMARY_WEIGHT} vs {PRIMARY_DATA} ({PRIMARY_POOLING} pooling): 'predicts' = "
            f"shift-permutation p <= {ALPHA} and distance <= {PREDICT_FRAC} of depth; 'near' = p <= {ALPHA} "
            f"and distance <= {NEAR_FRAC}; 'too few layers' below {MIN_LAYERS} compared layers "
            f"(then p >= 1/(2n) > {ALPHA}); otherwise 'does not predict'")


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------

def cycle_symmetries(n: int) -> np.ndarray:
    """The ``2n`` index permutations of the permutation null: circular shifts and reversed shifts.

    Parameters
    ----------
    n : int
        Sequence length, ``n >= 1``.

    Returns
    -------
    ndarray of shape (2n, n), int
        Row ``s`` (``s < n``) is ``roll(arange(n), s)``; row ``n + s`` is
        ``roll(arange(n)[::-1], s)``. Row 0 is the identity.
    """
    base = np.arange(int(n))
    return np.stack([np.roll(base, s) for s in range(n)] + [np.roll(base[::-1], s) for s in range(n)])


def shift_spearman(w, d, w_sign: int = 1, d_sign: int = 1) -> dict:
    """Oriented Spearman correlation of two per-layer profiles and its exact shift-permutation p.

    Parameters
    ----------
    w, d : array_like of shape (L,)
        A weight score and a data score per layer (NaN where undefined).
    w_sign, d_sign : {1, -1}
        Orientations: the correlation is that of ``w_sign * w`` with ``d_sign * d``.

    Returns
    -------
    dict
        ``rho`` (``scipy.stats.spearmanr`` on the layers where both are finite),
        ``p_shift`` (one-sided, ``#{g: rho_g >= rho} / 2n`` over :func:`cycle_symmetries`),
        ``p_min`` (``1 / 2n``, the smallest attainable p), ``p_iid`` (scipy's two-sided
        p for exchangeable layers, for contrast), ``n`` (layers compared). NaN when
        fewer than 3 layers remain or either profile is constant.
    """
    from scipy.stats import rankdata, spearmanr

    w = np.asarray(w, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    if w.shape != d.shape or w.ndim != 1:
        raise ValueError(f"profiles must be 1-D of equal length, got {w.shape} and {d.shape}")
    ok = np.isfinite(w) & np.isfinite(d)
    x, y = w_sign * w[ok], d_sign * d[ok]
    n = int(ok.sum())
    out = {"rho": math.nan, "p_shift": math.nan, "p_min": 1 / (2 * n) if n else math.nan, "p_iid": math.nan,
           "n": n}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    res = spearmanr(x, y)
    rho = float(res.statistic)
    # Spearman = Pearson correlation of average ranks; permuting y permutes its ranks
    rx, ry = rankdata(x) - (n + 1) / 2, rankdata(y) - (n + 1) / 2
    null = (ry[cycle_symmetries(n)] @ rx) / math.sqrt(float(rx @ rx) * float(ry @ ry))
    out.update(rho=rho, p_iid=float(res.pvalue), p_shift=float(np.mean(null >= rho - 1e-12)))
    return out


def best_layer(layers, values, sign: int) -> int | None:
    """The layer with the best (``sign * value`` largest, earliest on ties) finite value; None if none."""
    v = sign * np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return None
    return int(np.asarray(layers)[ok][int(np.argmax(v[ok]))])


def layer_verdict(p: float, distance_frac: float, n: int) -> str:
    """Verdict of one (weight score, data score) comparison; thresholds in the module docstring.

    Parameters
    ----------
    p : float
        Shift-permutation p-value of the oriented correlation.
    distance_frac : float
        ``|predicted - data-best| / (L - 1)``.
    n : int
        Number of layers compared.
    """
    if n < MIN_LAYERS:
        return "too few layers"
    if not (np.isfinite(p) and p <= ALPHA) or not np.isfinite(distance_frac):
        return "does not predict"
    if distance_frac <= PREDICT_FRAC:
        return "predicts"
    if distance_frac <= NEAR_FRAC:
        return "near"
    return "does not predict"


def compare_layers(weights: pd.DataFrame, data: pd.DataFrame, predicted_layer: int, num_layers: int,
                   weight_scores: Mapping[str, int] | None = None, data_scores: Mapping[str, int] | None = None,
                   primary_weight: str = PRIMARY_WEIGHT, primary_data: str = PRIMARY_DATA):
    """Predicted vs data-best layer per data score, and every weight x data correlation.

    Parameters
    ----------
    weights : DataFrame
        ``layer`` plus weight-score columns (one row per layer).
    data : DataFrame
        ``layer`` plus data-score columns (one row per layer; layers may be missing).
    predicted_layer : int
        The weight-only prediction.
    num_layers : int
        L, the model's depth (distances are divided by ``L - 1``).
    weight_scores, data_scores : mapping name -> orientation (+1 / -1)
        Default: the columns of :data:`WEIGHT_SCORES` / :data:`DATA_SCORES` and
        :data:`CAUSAL_SCORES` present in the tables.
    primary_weight, primary_data : str
        The pre-registered pair; its row of the comparison is flagged ``primary``.

    Returns
    -------
    comparison : DataFrame, one row per data score
        ``data_score, orientation, primary, n_layers, data_best_layer, data_best_value,
        predicted_layer, distance_layers, distance_frac, location_p`` (fraction of the
        compared layers at least as close to the prediction: the exact chance of the hit
        under the shift null), ``weight_score`` (= primary_weight), ``rho, p_shift, p_min,
        verdict``.
    correlations : DataFrame, one row per (weight score, data score)
        ``weight_score, data_score, rho, p_shift, p_min, p_iid, n, p_holm``.
    """
    from zhunt.stats import holm

    if weight_scores is None:
        weight_scores = {c: s for c, s in WEIGHT_SCORES.items() if c in weights.columns}
    if data_scores is None:
        data_scores = {c: s for c, s in {**DATA_SCORES, **CAUSAL_SCORES}.items() if c in data.columns}
    if primary_weight not in weight_scores:
        raise ZhuntError("layer comparison", f"primary weight score {primary_weight!r} missing "
                                             f"(have {list(weight_scores)})")
    merged = pd.DataFrame({"layer": np.arange(int(num_layers))})
    merged = merged.merge(weights[["layer", *weight_scores]], on="layer", how="left")
    merged = merged.merge(data[["layer", *data_scores]], on="layer", how="left")
    span = max(int(num_layers) - 1, 1)
    corr_rows, comp_rows = [], []
    for dn, ds in data_scores.items():
        for wn, ws in weight_scores.items():
            r = shift_spearman(merged[wn], merged[dn], ws, ds)
            corr_rows.append({"weight_score": wn, "data_score": dn, "rho": r["rho"], "p_shift": r["p_shift"],
                              "p_min": r["p_min"], "p_iid": r["p_iid"], "n": r["n"]})
        prim = shift_spearman(merged[primary_weight], merged[dn], weight_scores[primary_weight], ds)
        finite = merged[np.isfinite(merged[dn].to_numpy(dtype=np.float64))]
        best = best_layer(finite["layer"], finite[dn], ds)
        dist = abs(best - int(predicted_layer)) if best is not None else math.nan
        frac = dist / span if best is not None else math.nan
        loc_p = (float(np.mean(np.abs(finite["layer"].to_numpy() - int(predicted_layer)) <= dist))
                 if best is not None else math.nan)
        comp_rows.append({
            "data_score": dn, "orientation": "higher is better" if ds > 0 else "lower is better",
            "primary": dn == primary_data, "n_layers": len(finite), "data_best_layer": best,
            "data_best_value": float(finite.loc[finite["layer"] == best, dn].iloc[0]) if best is not None else math.nan,
            "predicted_layer": int(predicted_layer), "distance_layers": dist, "distance_frac": frac,
            "location_p": loc_p, "weight_score": primary_weight, "rho": prim["rho"], "p_shift": prim["p_shift"],
            "p_min": prim["p_min"], "verdict": layer_verdict(prim["p_shift"], frac, prim["n"]),
        })
    corr = pd.DataFrame(corr_rows)
    corr["p_holm"] = holm(corr["p_shift"].to_numpy())
    return pd.DataFrame(comp_rows), corr


# ---------------------------------------------------------------------------------------------
# data side
# ---------------------------------------------------------------------------------------------

def layer_sweep(store, masks: Mapping[int, np.ndarray], k: int, *, site: str = "input",
                poolings: Sequence[str] = ("mean", "last"), langs=("zh", "en"), n_random: int = 100,
                seed: int = 0) -> pd.DataFrame:
    """Phase 2 metrics of each layer's own Z at one k, at every given layer (pooled vectors).

    Parameters
    ----------
    store : zhunt.data.store.ActivationStore
    masks : mapping layer -> ndarray of shape (k, d)
        ``V_Z`` of each decoder layer (orthonormal rows).
    k : int
        Subspace dimension (every mask has k rows).
    site : {"input", "output"}
        Layer ``l`` is read at hidden index ``zhunt.models.site.hidden_index(l, site)``.
    poolings : sequence of str
        Poolings of :data:`zhunt.activations.zspace.POOLINGS`.
    langs : (str, str)
        Cross-lingual deltas are ``x_a - x_b``.
    n_random : int
        Haar-random k-dim subspaces (the same draws at every layer, as in Phase 2).
    seed : int

    Returns
    -------
    DataFrame, one row per (layer, pooling)
        ``layer, site, hidden_index, k, kind, pooling, d, n_problems, ratio_full, ratio_Z,
        ratio_Zperp, rel_ratio, ratio_rand_mean, ratio_rand_lo, ratio_rand_hi,
        ratio_Z_percentile, E_lang_Z, E_lang_chance, E_lang_Z_over_chance, E_lang_rand_lo,
        E_lang_rand_hi, E_prob_Z, E_lang_over_prob_Z`` (definitions: :mod:`zhunt.activations.zspace`;
        random intervals are the 2.5 / 97.5 percentiles of the draws).
    """
    from zhunt.models.site import hidden_index
    from zhunt.activations.zspace import PairDeltas, paired_pooled, percentile_of, random_baseline, subspace_metrics

    d = store.hidden_size
    rows = []
    for l in sorted(masks):
        j = hidden_index(l, site)
        for pooling in poolings:
            X_a, X_b, ids = paired_pooled(store, j, langs, pooling)
            D = PairDeltas(X_a, X_b)
            rnd = random_baseline(D, k, n_random=n_random, seed=seed)
            m = subspace_metrics(D, masks[l])
            r_lo, r_hi = np.percentile(rnd["ratio"], [2.5, 97.5])
            e_lo, e_hi = np.percentile(rnd["E_lang"], [2.5, 97.5])
            chance = k / d
            rows.append({
                "layer": int(l), "site": site, "hidden_index": j, "k": int(k), "kind": SWEEP_KIND,
                "pooling": pooling, "d": d, "n_problems": len(ids), "ratio_full": D.ratio_full,
                "ratio_Z": m["ratio_S"], "ratio_Zperp": m["ratio_perp"],
                "rel_ratio": m["ratio_S"] / m["ratio_perp"] if m["ratio_perp"] > 0 else math.nan,
                "ratio_rand_mean": float(np.mean(rnd["ratio"])), "ratio_rand_lo": float(r_lo),
                "ratio_rand_hi": float(r_hi), "ratio_Z_percentile": percentile_of(m["ratio_S"], rnd["ratio"]),
                "E_lang_Z": m["E_lang"], "E_lang_chance": chance, "E_lang_Z_over_chance": m["E_lang"] / chance,
                "E_lang_rand_lo": float(e_lo), "E_lang_rand_hi": float(e_hi), "E_prob_Z": m["E_prob"],
                "E_lang_over_prob_Z": m["E_lang"] / m["E_prob"] if m["E_prob"] > 0 else math.nan,
            })
    return pd.DataFrame(rows)


def causal_scores(table: pd.DataFrame, site: str | None = None, k: int | None = None,
                  where: str = "patching/subspaces.tsv", subspaces: Sequence[str] = ("z", "das")) -> pd.DataFrame:
    """Per-layer causal scores of Z and DAS from the patching stage's per-subspace table.

    Parameters
    ----------
    table : DataFrame
        Rows with at least ``layer, subspace, iia, npe`` (``subspace`` in ``z``, ``das``, ...;
        other subspaces are ignored); optional ``site`` and ``k`` columns.
    site : str, optional
        Keep rows of this site (when the table has a ``site`` column).
    k : int, optional
        Keep rows of this k (when the table has a ``k`` column and holds that k).
        Rows of the mean-broadcast alignment are kept when the table has them (the
        design issue 17 names); the rest are averaged per (layer, subspace).
    where : str
        File named in errors.
    subspaces : sequence of str
        The subspaces to read (``("das",)`` when the causal sweep gives Z at every layer).

    Returns
    -------
    DataFrame
        ``layer`` and ``iia_<s>, npe_<s>`` for each of ``subspaces`` present: the mean over the
        remaining rows of each (layer, subspace), e.g. over directions.
    """
    need = {"layer", "subspace", "iia", "npe"}
    missing = sorted(need - set(table.columns))
    if missing:
        raise ZhuntError(where, f"expected columns {sorted(need)}, missing {missing}")
    t = table
    if site is not None and "site" in t.columns:
        t = t[t["site"] == site]
    if k is not None and "k" in t.columns and (t["k"] == k).any():
        t = t[t["k"] == k]
    if "alignment" in t.columns and (t["alignment"] == "mean").any():
        t = t[t["alignment"] == "mean"]  # issue 17: the donor design's mean-broadcast cells
    t = t[t["subspace"].isin(list(subspaces))]
    out = pd.DataFrame({"layer": sorted(t["layer"].astype(int).unique())})
    for sub in subspaces:
        g = t[t["subspace"] == sub].groupby("layer")[["iia", "npe"]].mean()
        if len(g):
            g = g.rename(columns={"iia": f"iia_{sub}", "npe": f"npe_{sub}"}).reset_index()
            out = out.merge(g, on="layer", how="left")
    return out


def sweep_causal_scores(table: pd.DataFrame, site: str, k: int, where: str = "layers/causal.tsv") -> pd.DataFrame:
    """``layer, iia_z, npe_z``: the causal sweep's Z scores at every layer
    (:func:`zhunt.experiments.layer_causal.causal_sweep`), at ``site`` and ``k``.

    Raises
    ------
    ZhuntError
        ``where`` without the sweep's columns, or without rows at ``site`` and ``k`` (a sweep
        of another site or k: rerun rule ``layer_causal``).
    """
    need = {"layer", "site", "k", "iia", "npe"}
    missing = sorted(need - set(table.columns))
    if missing:
        raise ZhuntError(where, f"expected columns {sorted(need)}, missing {missing}")
    t = table[(table["site"] == site) & (table["k"].astype(int) == int(k))]
    if t.empty:
        raise ZhuntError(where, f"no rows at site {site!r} and k={k} (the Phase 2 sweep's); rerun rule layer_causal")
    return pd.DataFrame({"layer": t["layer"].astype(int).to_numpy(), "iia_z": t["iia"].to_numpy(float),
                         "npe_z": t["npe"].to_numpy(float)})


def das_sweep_scores(table: pd.DataFrame, site: str, k: int, where: str = "layers/das.tsv") -> pd.DataFrame:
    """``layer, iia_das, npe_das``: the DAS sweep's held-out scores of the learned subspace
    (:func:`zhunt.experiments.layer_causal.das_sweep`, rows ``subspace == "das"``) at ``site`` and ``k``.

    Raises
    ------
    ZhuntError
        ``where`` without the sweep's columns, or without DAS rows at ``site`` and ``k``.
    """
    need = {"layer", "site", "k", "subspace", "iia", "npe"}
    missing = sorted(need - set(table.columns))
    if missing:
        raise ZhuntError(where, f"expected columns {sorted(need)}, missing {missing}")
    t = table[(table["site"] == site) & (table["k"].astype(int) == int(k)) & (table["subspace"] == "das")]
    if t.empty:
        raise ZhuntError(where, f"no das rows at site {site!r} and k={k} (the Phase 2 sweep's); rerun rule layer_das")
    return pd.DataFrame({"layer": t["layer"].astype(int).to_numpy(), "iia_das": t["iia"].to_numpy(float),
                         "npe_das": t["npe"].to_numpy(float)})


def check_sweep_params(site: str, poolings, n_random: int, model_name: str) -> str:
    """The checked site of a layer sweep (:func:`zhunt.models.site.check_site`); raises
    :class:`ZhuntError` for an unknown site or pooling or fewer than 20 random subspaces."""
    from zhunt.activations.zspace import POOLINGS
    from zhunt.models.site import check_site

    try:
        site = check_site(site)
    except ValueError as exc:
        raise ZhuntError(f"models.{model_name}.study.site", str(exc)) from None
    for p in poolings:
        if p not in POOLINGS:
            raise ZhuntError("poolings", f"unknown pooling {p!r} (expected one of {list(POOLINGS)})")
    if int(n_random) < 20:
        raise ZhuntError("zspace.n_random", f"n_random={n_random}: need at least 20 random subspaces for a "
                                            f"95% interval")
    return site


def comparison_tables(scores: pd.DataFrame, sweep: pd.DataFrame, model_name: str, *, causal=None,
                      causal_sweep=None, das_sweep=None, site: str = "input", where_scores: str = "layer_scores.tsv",
                      where_sweep: str = "sweep.tsv", where_causal: str = "subspaces.tsv",
                      where_causal_sweep: str = "causal.tsv", where_das_sweep: str = "das.tsv") -> dict:
    """Weight-only layer scores against the data sweep (and the causal scores, if given).

    Parameters
    ----------
    scores : DataFrame
        ``structure/layer_scores.tsv`` (:func:`zhunt.weights.structure.layer_score_table`).
    sweep : DataFrame
        ``layers/sweep.tsv`` (:func:`layer_sweep`); its :data:`PRIMARY_POOLING` rows are used.
    model_name : str
    causal : DataFrame, optional
        ``patching/subspaces.tsv`` (:func:`causal_scores`), filtered to ``site`` and the sweep's k:
        the DAS scores at the patching layers (unless ``das_sweep`` is given), and Z's too when
        there is no ``causal_sweep``.
    causal_sweep : DataFrame, optional
        ``layers/causal.tsv`` (:func:`sweep_causal_scores`): Z's IIA and NPE at every layer.
    das_sweep : DataFrame, optional
        ``layers/das.tsv`` (:func:`das_sweep_scores`): DAS's held-out IIA and NPE at the DAS sweep's layers.
    site : str
    where_scores, where_sweep, where_causal, where_causal_sweep, where_das_sweep : str
        Named in errors (the files the frames came from).

    Returns
    -------
    dict
        ``comparison``, ``correlations`` (:func:`compare_layers`, with model / num_layers / site / k
        columns), ``data`` (the sweep rows, causal columns merged), ``k``, ``num_layers``,
        ``predicted`` (the structure stage's layer) and ``verdict`` (of the primary pair).
    """
    for col in ("layer", PRIMARY_WEIGHT, "predicted", "phase"):
        if col not in scores.columns:
            raise ZhuntError(where_scores, f"no column {col!r} (expected the structure stage's layer scores)")
    if "pooling" not in sweep.columns or not (sweep["pooling"] == PRIMARY_POOLING).any():
        raise ZhuntError(where_sweep, f"no rows with pooling {PRIMARY_POOLING!r}")
    data = sweep[sweep["pooling"] == PRIMARY_POOLING].reset_index(drop=True)
    k = int(data["k"].iloc[0])
    if causal_sweep is not None:
        data = data.merge(sweep_causal_scores(causal_sweep, site, k, where_causal_sweep), on="layer", how="left")
    if das_sweep is not None:
        data = data.merge(das_sweep_scores(das_sweep, site, k, where_das_sweep), on="layer", how="left")
    subs = tuple(s for s in ("z", "das") if f"iia_{s}" not in data.columns)
    if causal is not None and subs:
        data = data.merge(causal_scores(causal, site=site, k=k, where=where_causal, subspaces=subs), on="layer",
                          how="left")
    num_layers = len(scores)
    predicted = int(scores.loc[scores["predicted"].astype(bool), "layer"].iloc[0])
    comp, corr = compare_layers(scores, data, predicted, num_layers)
    comp.insert(0, "model", model_name)
    comp.insert(1, "num_layers", num_layers)
    comp.insert(2, "site", site)
    comp.insert(3, "k", k)
    corr.insert(0, "model", model_name)
    return {"comparison": comp, "correlations": corr, "data": data, "k": k, "num_layers": num_layers,
            "predicted": predicted, "verdict": str(comp.loc[comp["primary"], "verdict"].iloc[0])}


def models_layer_table(comparisons) -> pd.DataFrame:
    """Cross-model table of the primary comparison, with the seed's Qwen2.5-3B row quoted last.

    Parameters
    ----------
    comparisons : iterable of (str, DataFrame)
        ``(where, layers/comparison.tsv)`` of each analysed model; ``where`` is named in errors.

    Returns
    -------
    DataFrame
        ``model, num_layers, predicted_layer, data_best_layer, data_score, predicted_frac,
        data_best_frac, distance_layers, distance_frac, rho, p_shift, verdict, reference``;
        fractions are ``layer / (L - 1)``.
    """
    from zhunt.seeds import QWEN25_3B_LAYER

    rows = []
    for where, c in comparisons:
        if "primary" not in c.columns or not c["primary"].astype(bool).any():
            raise ZhuntError(where, "no primary row (expected a layer comparison table)")
        p = c[c["primary"].astype(bool)].iloc[0]
        span = max(int(p["num_layers"]) - 1, 1)
        rows.append({"model": p["model"], "num_layers": int(p["num_layers"]),
                     "predicted_layer": int(p["predicted_layer"]), "data_best_layer": p["data_best_layer"],
                     "data_score": p["data_score"], "predicted_frac": int(p["predicted_layer"]) / span,
                     "data_best_frac": p["data_best_layer"] / span, "distance_layers": p["distance_layers"],
                     "distance_frac": p["distance_frac"], "rho": p["rho"], "p_shift": p["p_shift"],
                     "verdict": p["verdict"], "reference": False})
    q = QWEN25_3B_LAYER
    span = q["num_layers"] - 1
    dist = abs(q["data_best_layer"] - q["predicted_layer"])
    rows.append({"model": q["model"], "num_layers": q["num_layers"], "predicted_layer": q["predicted_layer"],
                 "data_best_layer": q["data_best_layer"], "data_score": q["data_score"],
                 "predicted_frac": q["predicted_layer"] / span, "data_best_frac": q["data_best_layer"] / span,
                 "distance_layers": dist, "distance_frac": dist / span, "rho": math.nan, "p_shift": math.nan,
                 "verdict": "n/a (2 layers measured)", "reference": True})
    return pd.DataFrame(rows)
