"""Aligned vs raw cosine similarity of weight families between adjacent layers (seed 002).

Question
--------
Adjacent decoder layers have nearly orthogonal weight matrices when compared
entry by entry. Is that real specialisation, or is shared structure hidden by
an arbitrary rotation (a "gauge") that training never had reason to fix? We
compare, for every weight family and every adjacent layer pair ``(L, L+1)``,
the plain cosine with the cosine after the best orthogonal alignment.

Definitions (fixed here)
------------------------
Families are the seven ``nn.Linear`` weights of a decoder layer, in the
orientation ``nn.Linear`` stores them (``out_features x in_features``):
``q_proj`` (H d_head, d), ``k_proj``/``v_proj`` (H_kv d_head, d),
``o_proj`` (d, H d_head), ``gate_proj``/``up_proj`` (d_ff, d),
``down_proj`` (d, d_ff).

* raw cosine: ``cos(W_L, W_{L+1}) = <W_L, W_{L+1}>_F / (||W_L||_F ||W_{L+1}||_F)``;
* aligned cosine: orient both matrices as ``M`` with the aligned side as the
  columns, find ``R = argmin_{R^T R = I} ||M_L R - M_{L+1}||_F``
  (:func:`scipy.linalg.orthogonal_procrustes`) and report
  ``<M_L R, M_{L+1}>_F / (||M_L||_F ||M_{L+1}||_F)`` (rotations keep norms).
  The numerator equals the nuclear norm of ``M_L^T M_{L+1}``;
* ``delta = aligned - raw``. Since ``R = I`` is feasible, ``delta >= 0`` always.

Which side is aligned
---------------------
Default ``side="residual"``: ``R`` acts on the residual-stream side (size
``d``): the input side of q/k/v/gate/up and the output side of o/down. Every
layer reads from and writes to the same residual stream, so this is the one
index whose meaning is shared across layers; "layer L+1 equals layer L up to a
rotation of the stream it reads/writes" is the gauge hypothesis the seed
tests, and ``R`` costs one ``d x d`` SVD per pair whatever the family.
``side="inner"`` aligns the other index instead (heads x d_head, or the
``d_ff`` neurons): that is where the exact symmetries of a single layer live
(per-head rotations, neuron permutations), but a full orthogonal group on it
is much larger than those symmetries and, for the MLP, costs a
``d_ff x d_ff`` SVD per pair.

Null: what a rotation finds with no shared structure
----------------------------------------------------
``delta >= 0`` always, and it is far from 0 even for unrelated matrices: for
two independent Gaussian ``n x m`` matrices aligned on ``m`` the aligned
cosine is of order ``sqrt(m / n)`` (0.46-0.90 for Gemma's family shapes), so
the seed's "delta ~ 0" can never be read literally. Every delta is therefore
compared with the same quantity, ``aligned - raw``, on two nulls:

* Gaussian (:func:`gaussian_baseline`): two independent i.i.d. Gaussian
  matrices of the family's shape, ``NULL_DRAWS`` seeded draws, mean delta;
* shuffled (``null_delta`` column of :func:`compare_layers`): the pair itself
  with the non-aligned index of ``W_{L+1}`` (its heads x d_head rows, or the
  ``d_ff`` neurons) put in a seeded random order. A permutation is
  orthogonal, so both matrices keep their entries, norms and singular values;
  only the correspondence between the layers is destroyed.

The verdict uses the shuffled null: ``null_delta(family)`` = its mean over the
pairs, ``excess = mean delta - null_delta``. The Gaussian null has the right
shape but not the right spectrum, and the spectrum alone moves the aligned
cosine of unrelated matrices: a flat spectrum (orthonormal rows) raises it
above the Gaussian level, a fast-decaying one lowers it (a rank-1 pair aligns
to only ``|a . b| / (|a| |b|)``). Against the Gaussian null, structureless
matrices with flat spectra read as "lifted" in every seed, and planted
structure in matrices with decaying spectra can read as not lifted
(tests/test_families.py); it is reported next to the shuffled null
(``null_delta_gaussian``) as the reference the seed's question was first posed
against.

Phases and hypotheses (:func:`hypothesis_verdict`)
--------------------------------------------------
The seed's two readings, with "delta" read against the null:

* training artefact: the rotation reveals shared structure, ``excess >
  DELTA_ZERO`` for a strict majority of the families;
* real specialisation: it reveals nothing beyond the null, ``excess <=
  DELTA_ZERO`` for every family;
* ``neither`` in between (some families lifted, not a majority).

Layer pairs are also labelled by the phase of ``L`` (:func:`phase_of`: the
seed's tables for 36 and 64 layers, fractional boundaries otherwise) for the
seed's secondary prediction, ``mean delta(phase E) - mean delta(phase C) >
E_OVER_C_MARGIN`` (late layers hide more behind the gauge); it is reported
(``late_over_middle``), not part of the label, and untestable when phase C or
E has no pair. Thresholds: :data:`DELTA_ZERO`, :data:`E_OVER_C_MARGIN`,
:data:`NULL_DRAWS`, :data:`SHUFFLE_DRAWS`.
"""

from __future__ import annotations

import logging

import numpy as np


__all__ = [
    "FAMILIES",
    "RESIDUAL_AXIS",
    "PHASES",
    "DELTA_ZERO",
    "E_OVER_C_MARGIN",
    "NULL_DRAWS",
    "SHUFFLE_DRAWS",
    "phase_of",
    "family_matrices",
    "raw_cos",
    "aligned_cos",
    "compare_pair",
    "compare_layers",
    "phase_means",
    "gaussian_baseline",
    "hypothesis_verdict",
    "null_table",
    "verdict_criteria",
    "shuffled_delta",
    "seed_jsons",
    "analyse_families",
]

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Axis of the ``nn.Linear`` weight (out, in) that indexes the residual stream.
RESIDUAL_AXIS: dict[str, int] = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 0,
                                 "gate_proj": 1, "up_proj": 1, "down_proj": 0}
PHASES: tuple[str, ...] = ("A", "B", "C", "D", "E", "tail")
SIDES = ("residual", "inner")

#: A family's mean delta counts as "~ 0" (no structure beyond the null) when it exceeds its
#: null delta by at most this much; by more, the family is "lifted" by the rotation.
DELTA_ZERO = 0.05
#: A family shows "delta(E) > delta(C)" when the difference exceeds this margin.
E_OVER_C_MARGIN = 0.02
#: Seeded draws of the Gaussian null per family shape.
NULL_DRAWS = 8
#: Seeded shuffles per (pair, family) of the shuffled null (averaged: the null's own noise
#: then adds 1/SHUFFLE_DRAWS of the observed delta's variance to the excess, not all of it).
SHUFFLE_DRAWS = 4

# Phase boundaries: last layer index of each phase for the two depths the seed
# measured (Qwen3-32B: 64 layers, Qwen3-4B: 36 layers; the 36-layer table has no
# phase E), and fractional upper bounds (exclusive) of L / num_layers otherwise.
_PHASE_TABLES = {
    64: (("A", 6), ("B", 9), ("C", 31), ("D", 46), ("E", 58)),
    36: (("A", 6), ("B", 9), ("C", 23), ("D", 33)),
}
_PHASE_FRACTIONS = (("A", 0.11), ("B", 0.15), ("C", 0.5), ("D", 0.75), ("E", 0.92))


def phase_of(L: int, num_layers: int) -> str:
    """Phase label ("A".."E" or "tail") of decoder layer ``L`` in a ``num_layers``-deep model.

    For 64 and 36 layers the seed's boundaries (entropy phases measured on
    Qwen3-32B / Qwen3-4B) are used verbatim: 64 layers -> A 0-6, B 7-9,
    C 10-31, D 32-46, E 47-58, tail 59+; 36 layers -> A 0-6, B 7-9, C 10-23,
    D 24-33, tail 34+ (no E). Any other depth uses the fraction
    ``f = L / num_layers``: A f<0.11, B f<0.15, C f<0.5, D f<0.75, E f<0.92,
    else tail.
    """
    table = _PHASE_TABLES.get(int(num_layers))
    if table is not None:
        for name, last in table:
            if L <= last:
                return name
        return "tail"
    frac = L / num_layers
    for name, upper in _PHASE_FRACTIONS:
        if frac < upper:
            return name
    return "tail"


def family_matrices(weights) -> dict[str, np.ndarray]:
    """The seven weight families of one layer as ``nn.Linear``-oriented float64 arrays.

    Parameters
    ----------
    weights : LayerWeights
        From :meth:`zhunt.models.ModelAdapter.layer_weights`.

    Returns
    -------
    dict
        ``q_proj`` (H d_head, d), ``k_proj``/``v_proj`` (H_kv d_head, d),
        ``o_proj`` (d, H d_head), ``gate_proj``/``up_proj`` (d_ff, d),
        ``down_proj`` (d, d_ff); identical to the modules' ``.weight``.
    """
    def arr(t):
        return t.detach().to("cpu").double().numpy() if hasattr(t, "detach") else np.asarray(t, np.float64)

    WQ, WK, WV, WO = arr(weights.W_Q), arr(weights.W_K), arr(weights.W_V), arr(weights.W_O)
    H, d, dh = WO.shape
    return {
        "q_proj": WQ.reshape(-1, WQ.shape[-1]),
        "k_proj": WK.reshape(-1, WK.shape[-1]),
        "v_proj": WV.reshape(-1, WV.shape[-1]),
        "o_proj": WO.transpose(1, 0, 2).reshape(d, H * dh),
        "gate_proj": arr(weights.gate),
        "up_proj": arr(weights.up),
        "down_proj": arr(weights.down),
    }


def _fro(A: np.ndarray) -> float:
    return float(np.sqrt(np.sum(A * A)))


def raw_cos(A: np.ndarray, B: np.ndarray) -> float:
    """Frobenius cosine ``<A, B>_F / (||A||_F ||B||_F)`` of two same-shape matrices (0 if either is 0)."""
    den = _fro(A) * _fro(B)
    return float(np.sum(A * B) / den) if den > 0 else 0.0


def aligned_cos(A: np.ndarray, B: np.ndarray, axis: int = 1, return_rotation: bool = False):
    """Cosine of ``A`` and ``B`` after the best orthogonal rotation of ``A`` along ``axis``.

    Parameters
    ----------
    A, B : ndarray of shape (n, m)
    axis : {0, 1}
        The index the rotation acts on: ``axis=1`` solves
        ``min_R ||A R - B||_F`` with ``R`` (m, m); ``axis=0`` solves
        ``min_R ||R A - B||_F`` with ``R`` (n, n) (Procrustes on the transposes).
    return_rotation : bool
        Also return ``R``.

    Returns
    -------
    cos : float
        ``<A R, B>_F / (||A||_F ||B||_F)`` (resp. ``<R A, B>_F``), in ``[raw_cos, 1]``.
    R : ndarray, only with ``return_rotation``.

    Notes
    -----
    The optimum of the inner product is the sum of the singular values of
    ``A^T B`` (the ``scale`` of :func:`scipy.linalg.orthogonal_procrustes`), so
    ``A R`` is never formed, and without ``return_rotation`` the singular
    vectors are not computed either (:func:`scipy.linalg.svdvals`: about 2x less
    CPU than the full Procrustes at the families' shapes, BENCHMARKS.md §12).
    """
    from scipy.linalg import orthogonal_procrustes, svdvals

    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    if A.shape != B.shape:
        raise ValueError(f"shape mismatch {A.shape} vs {B.shape}")
    M1, M2 = (A, B) if axis == 1 else (A.T, B.T)
    if return_rotation:
        R, scale = orthogonal_procrustes(M1, M2)
    else:
        scale = svdvals(M1.T @ M2).sum()
    den = _fro(A) * _fro(B)
    cos = float(scale / den) if den > 0 else 0.0
    if return_rotation:
        return cos, (R if axis == 1 else R.T)
    return cos


def _align_axis(family: str, side: str) -> int:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    ax = RESIDUAL_AXIS[family]
    return ax if side == "residual" else 1 - ax


def compare_pair(mats_L: dict, mats_next: dict, side: str = "residual",
                 families=FAMILIES) -> dict[str, tuple[float, float]]:
    """``{family: (raw_cos, aligned_cos)}`` for one layer pair (see :func:`family_matrices`)."""
    return {fam: (raw_cos(mats_L[fam], mats_next[fam]),
                  aligned_cos(mats_L[fam], mats_next[fam], axis=_align_axis(fam, side)))
            for fam in families}


def shuffled_delta(A: np.ndarray, B: np.ndarray, axis: int, rng: np.random.Generator, n_draws: int = 1) -> float:
    """``aligned - raw`` cosine of ``A`` and ``B`` with the non-aligned index of ``B`` randomly permuted.

    Parameters
    ----------
    A, B : ndarray of shape (n, m)
    axis : {0, 1}
        The aligned index (as in :func:`aligned_cos`); the other one is shuffled.
    rng : numpy.random.Generator
    n_draws : int
        Independent permutations, averaged.

    Returns
    -------
    float
        The mean delta of the pairs ``(A, P B)`` (``axis=1``, ``P`` an ``n x n``
        permutation) or ``(A, B P)`` (``axis=0``). ``P`` is orthogonal, so
        ``B``'s singular values are kept: the null of "same matrices, no
        correspondence between the layers".
    """
    vals = []
    for _ in range(int(n_draws)):
        Bs = B[rng.permutation(B.shape[0])] if axis == 1 else B[:, rng.permutation(B.shape[1])]
        vals.append(aligned_cos(A, Bs, axis=axis) - raw_cos(A, Bs))
    return float(np.mean(vals))


def compare_layers(layer_mats, num_layers: int | None = None, side: str = "residual", families=FAMILIES,
                   seed: int = 0):
    """Raw and aligned cosines of every family for every adjacent layer pair.

    Parameters
    ----------
    layer_mats : iterable of dict
        Per decoder layer, in order, ``{family: ndarray}`` (:func:`family_matrices`).
        Consumed lazily: only two layers are held at a time.
    num_layers : int, optional
        Depth used for the phase labels (default: the number of layers seen).
    side : {"residual", "inner"}
        Which index the rotation acts on (module docstring).
    seed : int
        The shuffle of pair ``(L, L+1)`` and family ``f`` uses the generator
        seeded ``(seed, L, index of f in FAMILIES)``.

    Returns
    -------
    pandas.DataFrame
        Columns ``L, L_next, phase, family, raw_cos, aligned_cos, delta,
        null_delta`` (:func:`shuffled_delta`, mean of :data:`SHUFFLE_DRAWS`
        shuffles); one row per (pair, family).
    """
    import pandas as pd

    rows, prev, n = [], None, 0
    for L, mats in enumerate(layer_mats):
        n = L + 1
        if prev is not None:
            for fam, (r, a) in compare_pair(prev, mats, side, families).items():
                rng = np.random.default_rng([int(seed), L - 1, FAMILIES.index(fam)])
                nd = shuffled_delta(prev[fam], mats[fam], _align_axis(fam, side), rng, SHUFFLE_DRAWS)
                rows.append({"L": L - 1, "L_next": L, "family": fam, "raw_cos": r, "aligned_cos": a,
                             "delta": a - r, "null_delta": nd})
        prev = mats
    depth = int(num_layers or n)
    df = pd.DataFrame(rows, columns=["L", "L_next", "family", "raw_cos", "aligned_cos", "delta", "null_delta"])
    df.insert(2, "phase", [phase_of(int(L), depth) for L in df["L"]])
    return df


def phase_means(df, families=FAMILIES):
    """Mean delta per phase (rows, in A..tail order) and family (columns), plus ``n_pairs``.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`compare_layers`.

    Returns
    -------
    pandas.DataFrame
        Columns ``phase, n_pairs, <family>...``; phases with no pair are omitted.
    """
    wide = df.pivot_table(index="phase", columns="family", values="delta", aggfunc="mean")
    counts = df.groupby("phase")["L"].nunique()
    order = [p for p in PHASES if p in wide.index]
    out = wide.reindex(index=order, columns=[f for f in families if f in wide.columns])
    out.insert(0, "n_pairs", counts.reindex(order).astype(int))
    return out.reset_index()


def gaussian_baseline(shapes: dict, side: str = "residual", seed: int = 0, n_draws: int = NULL_DRAWS,
                      quantity: str = "delta") -> dict[str, float]:
    """The Gaussian null per family shape: two independent i.i.d. Gaussian matrices, mean over draws.

    What rotation alone achieves with no shared structure at all: for an
    ``n x m`` pair aligned on ``m`` the aligned cosine is of order
    ``sqrt(m / n)``, far from 0 for square-ish families; the raw cosine is
    ~0 (of order ``1 / sqrt(n m)``).

    Parameters
    ----------
    shapes : dict
        ``{family: (n, m)}``.
    side : {"residual", "inner"}
    seed : int
        Draw ``r`` of family ``f`` uses the generator seeded ``(seed, index of f, r)``.
    n_draws : int
    quantity : {"delta", "aligned"}
        ``delta`` = aligned - raw (what the verdict compares), ``aligned`` = the aligned cosine.

    Returns
    -------
    dict
        ``{family: mean over draws}``.
    """
    if quantity not in ("delta", "aligned"):
        raise ValueError(f"quantity must be 'delta' or 'aligned', got {quantity!r}")
    out = {}
    for fam, shape in shapes.items():
        vals = []
        for r in range(int(n_draws)):
            rng = np.random.default_rng([int(seed), FAMILIES.index(fam) if fam in FAMILIES else 99, r])
            A, B = rng.standard_normal(shape), rng.standard_normal(shape)
            a = aligned_cos(A, B, axis=_align_axis(fam, side))
            vals.append(a - raw_cos(A, B) if quantity == "delta" else a)
        out[fam] = float(np.mean(vals))
    return out


def null_table(df, gaussian: dict, families=FAMILIES, margin: float = DELTA_ZERO):
    """Per family: mean delta against its two nulls (module docstring).

    Parameters
    ----------
    df : pandas.DataFrame
        :func:`compare_layers` output (needs ``null_delta``).
    gaussian : dict
        ``{family: mean Gaussian-null delta}`` (:func:`gaussian_baseline`).

    Returns
    -------
    pandas.DataFrame
        Columns ``family, n_pairs, mean_raw_cos, mean_aligned_cos, mean_delta,
        null_delta_gaussian, null_delta_shuffled, null_delta`` (= the shuffled
        one, module docstring), ``excess`` (= mean_delta - null_delta),
        ``excess_gaussian`` (= mean_delta - null_delta_gaussian), ``lifted`` (excess > margin).
    """
    import pandas as pd

    g = df.groupby("family")
    rows = []
    for f in families:
        if f not in g.groups:
            continue
        sub = g.get_group(f)
        shuf = float(sub["null_delta"].mean())
        gau = float(gaussian.get(f, np.nan))
        md = float(sub["delta"].mean())
        rows.append({"family": f, "n_pairs": int(len(sub)), "mean_raw_cos": float(sub["raw_cos"].mean()),
                     "mean_aligned_cos": float(sub["aligned_cos"].mean()), "mean_delta": md,
                     "null_delta_gaussian": gau, "null_delta_shuffled": shuf, "null_delta": shuf,
                     "excess": md - shuf, "excess_gaussian": md - gau, "lifted": bool(md - shuf > margin)})
    return pd.DataFrame(rows)


def verdict_criteria(zero: float = DELTA_ZERO, margin: float = E_OVER_C_MARGIN) -> str:
    """The verdict rule as one line (``criteria`` column and captions)."""
    return (f"excess = mean delta - mean delta of the shuffled pairs (same matrices, layer correspondence "
            f"destroyed); a family is lifted when "
            f"excess > {zero:g}; training-artifact: a strict majority of families lifted; real-specialization: "
            f"none lifted; neither: otherwise. Secondary: delta(E) - delta(C) > {margin:g} in a strict majority "
            f"of families (late > middle)")


def hypothesis_verdict(nulls, by_phase=None, families=FAMILIES, zero: float = DELTA_ZERO,
                       margin: float = E_OVER_C_MARGIN) -> dict:
    """Decide the seed's two hypotheses from the deltas read against their null.

    Parameters
    ----------
    nulls : pandas.DataFrame
        :func:`null_table` output (its ``excess`` column; ``lifted`` is recomputed with ``zero``).
    by_phase : pandas.DataFrame, optional
        :func:`phase_means` output, for the secondary late-over-middle reading.

    Returns
    -------
    dict
        ``label`` ("training-artifact", "real-specialization", "neither", or
        "untestable" without families), ``training_artifact`` and
        ``real_specialization`` (bool or None), ``n_lifted``, ``n_families``,
        ``excess`` {family: float}, ``max_excess``, ``late_over_middle`` (bool,
        None when phase C or E has no pair), ``e_minus_c`` {family: float},
        ``n_e_over_c``, the thresholds ``delta_zero``, ``e_over_c_margin`` and ``criteria``.
    """
    tab = nulls.set_index("family")
    fams = [f for f in families if f in tab.index]
    excess = {f: float(tab.loc[f, "excess"]) for f in fams}
    n_lifted = sum(v > zero for v in excess.values())
    if not fams:
        artifact = real = None
        label = "untestable"
    else:
        artifact, real = n_lifted > len(fams) / 2, n_lifted == 0
        label = "training-artifact" if artifact else "real-specialization" if real else "neither"
    e_minus_c, late, n_over = {}, None, 0
    if by_phase is not None:
        ph = by_phase.set_index("phase")
        pf = [f for f in fams if f in ph.columns]
        if "C" in ph.index and "E" in ph.index and pf:
            e_minus_c = {f: float(ph.loc["E", f] - ph.loc["C", f]) for f in pf}
            n_over = sum(v > margin for v in e_minus_c.values())
            late = n_over > len(pf) / 2
    return {"label": label, "training_artifact": artifact, "real_specialization": real,
            "n_lifted": int(n_lifted), "n_families": len(fams), "excess": excess,
            "max_excess": max(excess.values()) if excess else float("nan"),
            "late_over_middle": late, "e_minus_c": e_minus_c, "n_e_over_c": int(n_over),
            "delta_zero": zero, "e_over_c_margin": margin, "criteria": verdict_criteria(zero, margin)}


def seed_jsons(df, num_layers: int, model: str | None = None, side: str = "residual") -> tuple[dict, dict]:
    """The two inputs of the seed's analysis script, built from :func:`compare_layers` output.

    Returns
    -------
    null : dict
        ``{"num_layers": int, "pair_results": [{"L": int, "L_next": int,
        "families": {family: {"cos": raw_cos}}}, ...]}``.
    aligned : dict
        ``{"num_layers": int, "aligned_cos": {family: {"<L>": aligned_cos}}}``
        (layer keys are strings, as JSON object keys must be).

    ``model`` and ``side`` are added as extra top-level keys; readers of the
    seed format ignore them.
    """
    pairs = []
    for (L, Ln), grp in df.groupby(["L", "L_next"], sort=True):
        pairs.append({"L": int(L), "L_next": int(Ln),
                      "families": {r.family: {"cos": float(r.raw_cos)} for r in grp.itertuples()}})
    aligned = {fam: {} for fam in FAMILIES if fam in set(df["family"])}
    for r in df.sort_values(["family", "L"]).itertuples():
        aligned[r.family][str(int(r.L))] = float(r.aligned_cos)
    extra = {"model": model} if model is not None else {}
    null = {"num_layers": int(num_layers), "pair_results": pairs, **extra}
    ali = {"num_layers": int(num_layers), "aligned_cos": aligned, "side": side, **extra}
    return null, ali


def analyse_families(layer_mats, num_layers: int, side: str = "residual", seed: int = 0,
                     model: str | None = None) -> dict:
    """Every quantity of the family stage from the per-layer family matrices.

    Parameters
    ----------
    layer_mats : iterable of dict
        Per decoder layer, in order, ``{family: ndarray}`` (:func:`family_matrices`), consumed lazily.
    num_layers : int
    side : {"residual", "inner"}
    seed : int
        Seeds both nulls (:func:`compare_layers`, :func:`gaussian_baseline`).
    model : str, optional
        Recorded in the seed-format JSONs.

    Returns
    -------
    dict
        ``pairs`` (:func:`compare_layers`), ``by_phase`` (:func:`phase_means`), ``baseline``
        (:func:`gaussian_baseline` of the first layer's family shapes), ``nulls`` (:func:`null_table`),
        ``verdict`` (:func:`hypothesis_verdict`), ``null_json`` and ``aligned_json`` (:func:`seed_jsons`).
    """
    shapes = {}

    def remember_shapes():
        for mats in layer_mats:
            if not shapes:
                shapes.update({f: m.shape for f, m in mats.items()})
            yield mats

    df = compare_layers(remember_shapes(), num_layers=num_layers, side=side, seed=seed)
    by_phase = phase_means(df)
    baseline = gaussian_baseline(shapes, side=side, seed=seed)
    nulls = null_table(df, baseline)
    verdict = hypothesis_verdict(nulls, by_phase)
    null, ali = seed_jsons(df, num_layers, model=model, side=side)
    return {"pairs": df, "by_phase": by_phase, "baseline": baseline, "nulls": nulls, "verdict": verdict,
            "null_json": null, "aligned_json": ali}
