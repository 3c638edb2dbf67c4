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

Phases and hypotheses
---------------------
Layer pairs are labelled by the phase of ``L`` (:func:`phase_of`: the seed's
tables for 36 and 64 layers, fractional boundaries otherwise). Two readings:

* training artefact: ``mean delta(phase E) > mean delta(phase C)`` for the
  projection families (late layers hide more structure behind the gauge);
* real specialisation: ``delta ~ 0`` everywhere.

:func:`hypothesis_verdict` decides both from numbers with the thresholds
:data:`DELTA_ZERO` and :data:`E_OVER_C_MARGIN` (see there).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

__all__ = [
    "FAMILIES",
    "RESIDUAL_AXIS",
    "PHASES",
    "DELTA_ZERO",
    "E_OVER_C_MARGIN",
    "phase_of",
    "family_matrices",
    "raw_cos",
    "aligned_cos",
    "compare_pair",
    "compare_layers",
    "phase_means",
    "gaussian_baseline",
    "hypothesis_verdict",
    "excess_over_null",
    "seed_jsons",
    "run_families",
]

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Axis of the ``nn.Linear`` weight (out, in) that indexes the residual stream.
RESIDUAL_AXIS: dict[str, int] = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 0,
                                 "gate_proj": 1, "up_proj": 1, "down_proj": 0}
PHASES: tuple[str, ...] = ("A", "B", "C", "D", "E", "tail")
SIDES = ("residual", "inner")

#: A phase-mean delta with ``|delta| < DELTA_ZERO`` counts as "delta ~ 0".
DELTA_ZERO = 0.05
#: A family shows "delta(E) > delta(C)" when the difference exceeds this margin.
E_OVER_C_MARGIN = 0.02

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
    The optimum of the inner product is the ``scale`` returned by
    :func:`scipy.linalg.orthogonal_procrustes` (the sum of the singular values
    of ``A^T B``), so ``A R`` is never formed.
    """
    from scipy.linalg import orthogonal_procrustes

    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    if A.shape != B.shape:
        raise ValueError(f"shape mismatch {A.shape} vs {B.shape}")
    M1, M2 = (A, B) if axis == 1 else (A.T, B.T)
    R, scale = orthogonal_procrustes(M1, M2)
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


def compare_layers(layer_mats, num_layers: int | None = None, side: str = "residual", families=FAMILIES):
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

    Returns
    -------
    pandas.DataFrame
        Columns ``L, L_next, phase, family, raw_cos, aligned_cos, delta``;
        one row per (pair, family).
    """
    import pandas as pd

    rows, prev, n = [], None, 0
    for L, mats in enumerate(layer_mats):
        n = L + 1
        if prev is not None:
            for fam, (r, a) in compare_pair(prev, mats, side, families).items():
                rows.append({"L": L - 1, "L_next": L, "family": fam, "raw_cos": r, "aligned_cos": a,
                             "delta": a - r})
        prev = mats
    depth = int(num_layers or n)
    df = pd.DataFrame(rows, columns=["L", "L_next", "family", "raw_cos", "aligned_cos", "delta"])
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


def gaussian_baseline(shapes: dict, side: str = "residual", seed: int = 0) -> dict[str, float]:
    """Aligned cosine of two independent i.i.d. Gaussian matrices, per family shape.

    What rotation alone achieves with no shared structure at all: for an
    ``n x m`` pair aligned on ``m`` it is of order ``sqrt(m / n)``, far from 0
    for square-ish families. Raw cosine of such a pair is ~0, so this is also
    the delta of structureless weights. One draw per family (fixed ``seed``).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for fam, shape in shapes.items():
        A, B = rng.standard_normal(shape), rng.standard_normal(shape)
        out[fam] = aligned_cos(A, B, axis=_align_axis(fam, side))
    return out


def hypothesis_verdict(by_phase, families=FAMILIES, zero: float = DELTA_ZERO,
                       margin: float = E_OVER_C_MARGIN) -> dict:
    """Decide the seed's two hypotheses from the phase-mean deltas.

    * ``training_artifact``: True when, for a strict majority of the families
      present in both phases, ``delta_E - delta_C > margin``; None (not
      testable) when phase C or E has no pair (e.g. the 36-layer table has no E).
    * ``real_specialization``: True when every phase-mean delta of every
      family satisfies ``|delta| < zero``.

    Returns
    -------
    dict
        ``training_artifact``, ``real_specialization`` (bool or None),
        ``e_minus_c`` {family: float}, ``max_abs_delta``, ``n_e_over_c``,
        ``n_families``, ``label`` (one of "training-artifact",
        "real-specialization", "both", "neither", "untestable"), thresholds.
    """
    tab = by_phase.set_index("phase")
    fams = [f for f in families if f in tab.columns]
    vals = tab[fams].to_numpy(dtype=float)
    max_abs = float(np.nanmax(np.abs(vals))) if vals.size else float("nan")
    real = bool(np.all(np.abs(vals[np.isfinite(vals)]) < zero)) if vals.size else None
    e_minus_c, artifact, n_over = {}, None, 0
    if "C" in tab.index and "E" in tab.index:
        for f in fams:
            e_minus_c[f] = float(tab.loc["E", f] - tab.loc["C", f])
        n_over = sum(v > margin for v in e_minus_c.values())
        artifact = n_over > len(fams) / 2
    if artifact is None:
        label = "untestable" if real is None else ("real-specialization" if real else "untestable")
    elif artifact and real:
        label = "both"
    elif artifact:
        label = "training-artifact"
    elif real:
        label = "real-specialization"
    else:
        label = "neither"
    return {"training_artifact": artifact, "real_specialization": real, "e_minus_c": e_minus_c,
            "n_e_over_c": int(n_over), "n_families": len(fams), "max_abs_delta": max_abs, "label": label,
            "delta_zero": zero, "e_over_c_margin": margin}


def excess_over_null(df, baseline: dict) -> dict[str, float]:
    """Mean aligned cosine per family minus its Gaussian-null aligned cosine (:func:`gaussian_baseline`).

    Positive: the rotation finds more agreement between adjacent layers than
    it finds between two structureless matrices of the same shape.
    """
    means = df.groupby("family")["aligned_cos"].mean()
    return {f: float(means[f] - baseline[f]) for f in FAMILIES if f in means.index and f in baseline}


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


def _plot_by_phase(by_phase, stem: Path, model_name: str) -> None:
    from .figures import new_figure, save_figure

    fams = [f for f in FAMILIES if f in by_phase.columns]
    phases = list(by_phase["phase"])
    fig, ax = new_figure(width=7.5, height=3.8)
    width = 0.8 / max(len(fams), 1)
    x = np.arange(len(phases))
    for i, fam in enumerate(fams):
        ax.bar(x + (i - (len(fams) - 1) / 2) * width, by_phase[fam].to_numpy(float), width, label=fam)
    ax.axhline(DELTA_ZERO, color="k", lw=0.8, ls="--", label=f"|delta| = {DELTA_ZERO} (~0 threshold)")
    ax.set_xticks(x, [f"{p}\n(n={n})" for p, n in zip(phases, by_phase["n_pairs"])])
    ax.set_ylabel("mean delta = aligned cos - raw cos")
    ax.set_title(f"{model_name}: Procrustes-aligned minus raw cosine, adjacent layers, by phase",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, stem)


def _verdict_markdown(model_name: str, side: str, df, by_phase, verdict: dict, baseline: dict,
                      num_layers: int) -> str:
    excess = excess_over_null(df, baseline)
    n_beyond = sum(v > DELTA_ZERO for v in excess.values())
    fams = [f for f in FAMILIES if f in by_phase.columns]
    lines = [
        f"# Aligned vs raw weight-family cosine: {model_name}",
        "",
        f"{num_layers} decoder layers, {df[['L']].drop_duplicates().shape[0]} adjacent pairs; "
        f"rotation on the **{side}** side (scipy orthogonal_procrustes). delta = aligned cos − raw cos "
        "(≥ 0 by construction: R = I is a candidate).",
        "",
        "Thresholds: a phase-mean delta counts as ≈ 0 when |delta| < "
        f"{verdict['delta_zero']}; a family shows delta(E) > delta(C) when the difference exceeds "
        f"{verdict['e_over_c_margin']}; the training-artifact reading needs a strict majority of "
        "families with delta(E) > delta(C).",
        "",
        "| family | mean raw cos | mean aligned cos | mean delta | delta(E) − delta(C) | Gaussian-null aligned cos |",
        "|---|---|---|---|---|---|",
    ]
    means = df.groupby("family")[["raw_cos", "aligned_cos", "delta"]].mean()
    for f in fams:
        emc = verdict["e_minus_c"].get(f)
        emc_s = f"{emc:+.4f}" if emc is not None else "n/a"
        lines.append(f"| {f} | {means.loc[f, 'raw_cos']:+.4f} | {means.loc[f, 'aligned_cos']:+.4f} | "
                     f"{means.loc[f, 'delta']:+.4f} | {emc_s} | {baseline.get(f, float('nan')):.4f} |")
    ta, rs = verdict["training_artifact"], verdict["real_specialization"]
    lines += [
        "",
        "## Hypotheses",
        "",
        "- Training artifact (delta(E) > delta(C) for the projection families): "
        + ("not testable (no pair in phase C or E)" if ta is None else
           f"**{'supported' if ta else 'not supported'}** ({verdict['n_e_over_c']}/{verdict['n_families']} "
           "families)"),
        "- Real specialisation (delta ≈ 0 everywhere): "
        + f"**{'supported' if rs else 'not supported'}** (max |phase-mean delta| = {verdict['max_abs_delta']:.4f})",
        "- Rotation finds agreement beyond a structureless null (mean aligned cos exceeds the Gaussian-null "
        f"aligned cos by more than {DELTA_ZERO}): **{'yes' if n_beyond > len(excess) / 2 else 'no'}** "
        f"({n_beyond}/{len(excess)} families; mean aligned − null: "
        + ", ".join(f"{f} {v:+.3f}" for f, v in excess.items()) + ")",
        "",
        f"**Verdict: {verdict['label']}** (the seed's two criteria; read it together with the null check)",
        "",
        "The Gaussian-null column is the aligned cosine of two independent i.i.d. Gaussian matrices of "
        "the family's shape: what a rotation achieves with no shared structure at all (of order "
        "sqrt(d / n) for an n x d family aligned on d). A delta that does not lift the aligned cosine "
        "above it is what any two unrelated matrices would show.",
        "",
    ]
    return "\n".join(lines)


def run_families(model_dir, model_name: str, out_dir, figures_dir, side: str = "residual",
                 device: str = "cpu") -> dict:
    """Aligned-vs-raw family analysis of a prepared model folder; writes tables, JSONs and a figure.

    Parameters
    ----------
    model_dir : path
        A prepared zhunt model folder (:func:`zhunt.models.load_model`).
    model_name : str
        Used in the JSON file names and titles.
    out_dir, figures_dir : path
        Destinations (created if needed).
    side : {"residual", "inner"}
        Which index the rotation acts on (module docstring).

    Files written
    -------------
    ``out_dir/families.tsv`` + ``.md`` (L, L_next, phase, family, raw_cos,
    aligned_cos, delta), ``out_dir/families_by_phase.tsv`` + ``.md`` (phase x
    family mean delta), ``out_dir/families_verdict.md``,
    ``out_dir/{model_name}-null.json``, ``out_dir/{model_name}-aligned.json``
    (seed 002 formats, :func:`seed_jsons`),
    ``figures_dir/families_by_phase.pdf`` + ``.png``.

    Returns
    -------
    dict
        ``num_layers``, ``side``, ``by_phase`` {phase: {family: mean delta}},
        ``verdict`` (:func:`hypothesis_verdict`), ``gaussian_baseline``,
        ``excess_over_null`` (:func:`excess_over_null`), ``wall_s`` and ``files`` (paths written).
    """
    from .io import write_json, write_table, write_text
    from .models import get_adapter, load_model

    t0 = time.perf_counter()
    out_dir, figures_dir = Path(out_dir), Path(figures_dir)
    model, _ = load_model(model_dir, device=device)
    adapter = get_adapter(model)
    n = adapter.num_layers
    shapes = {}

    def layers():
        for L in range(n):
            mats = family_matrices(adapter.layer_weights(L))
            if not shapes:
                shapes.update({f: m.shape for f, m in mats.items()})
            yield mats

    df = compare_layers(layers(), num_layers=n, side=side)
    del model
    by_phase = phase_means(df)
    baseline = gaussian_baseline(shapes, side=side)
    verdict = hypothesis_verdict(by_phase)
    null, ali = seed_jsons(df, n, model=model_name, side=side)

    files = {
        "families": out_dir / "families.tsv",
        "families_md": out_dir / "families.md",
        "by_phase": out_dir / "families_by_phase.tsv",
        "by_phase_md": out_dir / "families_by_phase.md",
        "verdict": out_dir / "families_verdict.md",
        "null_json": out_dir / f"{model_name}-null.json",
        "aligned_json": out_dir / f"{model_name}-aligned.json",
        "figure_pdf": figures_dir / "families_by_phase.pdf",
        "figure_png": figures_dir / "families_by_phase.png",
    }
    write_table(df, files["families"], files["families_md"])
    write_table(by_phase, files["by_phase"])
    caption = (f"Mean delta = aligned − raw cosine per phase (rows) and family (columns), {model_name}, "
               f"rotation on the {side} side. |delta| < {DELTA_ZERO} counts as ≈ 0; delta(E) − delta(C) > "
               f"{E_OVER_C_MARGIN} counts as 'late > middle'.\n\n")
    write_text(files["by_phase_md"], caption + by_phase.to_markdown(index=False, floatfmt="+.4f") + "\n")
    write_text(files["verdict"], _verdict_markdown(model_name, side, df, by_phase, verdict, baseline, n))
    write_json(files["null_json"], null)
    write_json(files["aligned_json"], ali)
    _plot_by_phase(by_phase, figures_dir / "families_by_phase", model_name)
    wall = time.perf_counter() - t0
    log.info("families %s: %d pairs, verdict %s (%.1f s)", model_name, n - 1, verdict["label"], wall)
    fams = [f for f in FAMILIES if f in by_phase.columns]
    return {
        "num_layers": n,
        "side": side,
        "by_phase": {r["phase"]: {f: float(r[f]) for f in fams} for _, r in by_phase.iterrows()},
        "verdict": verdict,
        "gaussian_baseline": baseline,
        "excess_over_null": excess_over_null(df, baseline),
        "wall_s": wall,
        "files": {k: str(v) for k, v in files.items()},
    }
