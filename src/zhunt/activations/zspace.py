"""Phase 2: does the weight-derived Z separate problem identity from language in activation space?

Two analyses on one activation store (:mod:`zhunt.data.store`) and the Z-masks of
:mod:`zhunt.weights.masks`:

1. **Phase 2 projection test** (seed 001): project pooled activations of
   paired prompts (same problem in language ``a`` and ``b``, zh/en by default)
   onto ``Z`` and ``Z⊥`` and ask whether the cross-lingual difference is small
   relative to the between-problem difference inside ``Z``, against Haar-random
   subspaces of the same dimension.
2. **Data-driven baseline** (arXiv 2505.15257, after LSAR, Xie et al. 2022):
   a language subspace ``M_s`` estimated from per-language mean activations,
   compared with the weight-derived ``Z`` on the same metrics.

Definitions (DESIGN.md, fixed once here)
----------------------------------------
Pooled vectors: ``x_ℓ^i`` (d,) is :meth:`ActivationStore.pooled` of problem
(prompt id) ``i`` in language ``ℓ`` at hidden index ``j = hidden_index(layer,
site)`` (:mod:`zhunt.models.site`: ``j = layer`` at the default site ``input``, the
stream layer ``layer`` reads and its Z is built for; ``j = layer + 1`` at the
variant ``output``), pooled as the mean over non-special tokens (``"mean"``)
or the last non-special token (``"last"``). Every table row names its
``site`` and ``hidden_index``; ``study.site_variants`` add rows.

Digit confound (issue 13). Paired prompts share their numeral tokens, so
pooled states of one problem in two languages are close for that reason
alone. Two controls, as extra rows of the same table: ``site = embedding``
(hidden index 0, the same layer's masks: shared numerals, no computation) and
``tokens = no_numerals`` (the mean leaves out numeral tokens,
:mod:`zhunt.data.numerals`; ``tokens = all`` is the normal pooling).
:func:`digit_confound_phase2` reads off the separation ``1 - ratio`` under
each and how much of it survives both (``frac_both``). A subspace ``S`` of
``R^d`` is held as ``V`` (k, d) with orthonormal rows; ``P_S = V^T V``,
``P_S⊥ = I - P_S`` (:func:`zhunt.subspace.project`, ``project_complement``).

* **Cross-lingual deltas** ``δ_i = x_a^i - x_b^i`` for the ``N`` problems
  present in both languages (a problem missing in either is an error).
* **Within-language deltas** ``ω_ij^ℓ = x_ℓ^i - x_ℓ^j`` for every unordered
  pair ``i < j`` of problems and both languages ``ℓ ∈ {a, b}``:
  ``N (N - 1)`` vectors in all (unordered pairs give the same norms as ordered).
* **Phase 2 ratio** of ``S`` (seed 003's SNR restricted to ``S``)::

      ratio_S = mean_i ||P_S δ_i||  /  mean_{ℓ, i<j} ||P_S ω_ij^ℓ||

  Small means: inside ``S`` the same problem in two languages is closer than two
  different problems in one language. ``ratio_full`` is the ratio with
  ``S = R^d``. The seed's ``ratio_Z < ratio_Zp`` test compares ``S = Z`` with
  ``S = Z⊥``.
* **Energy fractions**: ``E_lang(S) = Σ_i ||P_S δ_i||² / Σ_i ||δ_i||²`` and
  ``E_prob(S) = Σ ||P_S ω||² / Σ ||ω||²`` over all within-language pairs.
  Chance for a k-dimensional ``S`` is ``k / d`` (the expectation for a
  Haar-random ``S``, whatever the deltas). **Language specificity**
  ``E_lang(S) / E_prob(S)``: below 1 when ``S`` holds less of the
  cross-lingual than of the between-problem variation. It matters because a
  subspace that carries little pooled variance of any kind has both energies
  below ``k / d``; only a specificity below the random interval says the
  deficit is about language.
* **Random baseline**: ``n_random`` Haar-random k-dimensional subspaces
  (:func:`zhunt.subspace.random_subspace`), drawn from
  ``numpy.random.default_rng([seed, k])`` — the same draws for every layer,
  pooling and mask kind (common random numbers). Reported: mean and the
  2.5 / 97.5 percentiles (95 % interval) of each metric, and the percentile of
  the observed value among the draws, ``100 (#{r < x} + ½ #{r = x}) / n``
  (for ``ratio_Z`` small is good, so a percentile below 2.5 means better than
  95 % of random subspaces).
* **Effect vanishes** (per pooling, per layer and mask kind): the smallest k of
  the sweep at which ``E_lang(Z)`` lies inside the random 95 % interval. If it
  is the smallest k of the sweep there was no effect to vanish; ``NaN`` means
  ``E_lang(Z)`` is outside the interval at every k of the sweep. For the
  "all" rows, the smallest k at which every (layer, kind) is inside.
  ``vanish_k_spec`` is the same with the language specificity.

Data-driven language subspace
-----------------------------
At one hidden index and pooling, the per-language means ``μ_ℓ`` (d,) over all
prompts of language ``ℓ`` (every language in the store) are stacked as
``M`` (d, n_lang). With ``μ̄`` the mean over languages, the rank-r SVD of the
centred matrix ``M - μ̄ 1^T ≈ U_r Σ_r W_r^T`` gives ``M_s = U_r^T`` (r, d),
``r = n_lang - 1`` by default: the language-specific subspace.
**LSAR refinement** (Xie et al. 2022, used by 2505.15257): with the rank-r fit
``F = μ̄ 1^T + U_r Σ_r W_r^T``, the language-agnostic vector is re-estimated as
``m_a = c / ||c||²`` with ``c`` the minimum-norm solution of ``F^T c = 1``
(every language has the same component ``1/||c||`` along ``c``), and ``M_s``
becomes the top-r left singular subspace of ``F - m_a 1^T``. Its columns are
orthogonal to ``m_a``. For ``r = n_lang - 1`` the fit is exact and both
``span(μ_ℓ - μ̄)`` and the refined subspace equal the span of the pairwise
differences ``μ_ℓ - μ_m``: the refinement then changes ``m_a`` but not
``span(M_s)`` (reported as ``lsar_vs_svd_similarity``, ≈ 1). The data-driven
"reasoning" subspace is ``M_s⊥`` (dimension ``d - r``); 2505.15257 ablates
``M_s`` from the hidden states, i.e. keeps ``M_s⊥``.

Because ``M_s`` is estimated on the very prompts it is evaluated on (the zh−en
mean difference lies in ``span(M_s)`` by construction), a 2-fold cross-fitted
ratio is also reported: problems are split in two halves (fixed seed),
``M_s`` is estimated on one half (all languages) and the ratio evaluated on the
other; the two fold ratios are averaged (``*_cv`` columns). The weight-derived
``Z`` uses no activations and needs no such correction.

Comparison of ``Z`` (k) and ``M_s`` (r): principal-angle cosines
``svd(V_Z M_s^T)`` (min(k, r) values; mean and max reported) and the energy of
``M_s`` inside ``Z``, ``||V_Z M_s^T||_F² / r`` (chance ``k / d``), each against
the same ``n_random`` Haar-random k-dimensional subspaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.data.pairing import pair_by_problem
from zhunt.errors import ZhuntError
from zhunt.weights.masks import MASK_KINDS
from zhunt.data.numerals import TOKEN_SETS, digit_confound_fractions
from zhunt.models.site import DEFAULT_SITE, check_site, hidden_index
from zhunt.weights.structure import energy_fraction
from zhunt.subspace import canonical_signs, grassmann_similarity, project, project_complement, random_subspace

__all__ = [
    "safe_ratio",
    "POOLINGS",
    "PairDeltas",
    "paired_pooled",
    "pair_deltas",
    "phase2_ratio",
    "subspace_metrics",
    "random_baseline",
    "percentile_of",
    "RANDOM_BAND",
    "band_side",
    "language_means",
    "language_subspace",
    "phase2_summary",
    "EMBEDDING",
    "SEPARATION_CHANCE",
    "phase2_sites",
    "phase2_streams",
    "digit_confound_phase2",
    "check_sweep",
    "Phase2Result",
    "phase2",
    "datadriven",
]

POOLINGS = ("mean", "last")
#: Percentiles of the random-subspace band every Phase 2 and data-driven value is read against: a
#: value outside it (``below`` / ``above``, :func:`band_side`) differs from a Haar-random k-subspace.
RANDOM_BAND = (2.5, 97.5)
_CHUNK = 4096  # columns of (deltas x random directions) products computed at once


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------

def _where(where, key: str, default: str) -> str:
    """Config key (or file) to name in an error: ``where`` may be one string or ``{key: string}``."""
    if where is None:
        return default
    if isinstance(where, str):
        return where
    return str(where.get(key, default))


def _check_layers(store, layers, where) -> list[int]:
    w = _where(where, "layers", "layers")
    layers = [int(l) for l in layers]
    if not layers:
        raise ZhuntError(w, "no layers given")
    bad = [l for l in layers if not 0 <= l < store.num_layers]
    if bad:
        raise ZhuntError(w, f"layer {bad[0]} is outside 0..{store.num_layers - 1}: the activation store "
                            f"{store.path} holds {store.num_layers} decoder layers")
    return layers


def _check_ks(ks, d: int, where) -> list[int]:
    w = _where(where, "ks", "ks")
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ZhuntError(w, "no subspace dimensions k given")
    bad = [k for k in ks if not 0 < k < d]
    if bad:
        raise ZhuntError(w, f"k={bad[0]} must satisfy 0 < k < d={d} (the store's hidden size)")
    return ks


def _check_choice(values, allowed, key: str, where) -> list[str]:
    values = list(values)
    if not values:
        raise ZhuntError(_where(where, key, key), f"no {key} given (choose from {list(allowed)})")
    for v in values:
        if v not in allowed:
            raise ZhuntError(_where(where, key, key), f"unknown {key[:-1] if key.endswith('s') else key} "
                                                      f"{v!r} (expected one of {list(allowed)})")
    return values


def _check_masks(masks: Mapping, layers, kinds, ks, d: int, where) -> None:
    """Every ``masks[(layer, kind, k)]`` of the sweep is there and has shape ``(k, d)``."""
    w = _where(where, "masks", "masks")
    for l in layers:
        for kind in kinds:
            for k in ks:
                V = masks.get((l, kind, k))
                if V is None:
                    raise ZhuntError(w, f"no Z-mask {kind}/k{k} given for layer {l}")
                if np.shape(V) != (k, d):
                    raise ZhuntError(w, f"Z-mask {kind}/k{k} of layer {l} has shape {np.shape(V)}, expected "
                                        f"{(k, d)} (hidden size of the activation store)")


def _check_pairs(store, langs, where) -> tuple[list[str], dict]:
    """Problems of the pair ``langs`` and each language's rows (:func:`zhunt.data.pairing.pair_by_problem`:
    a problem missing in one language is an error; at least 2 problems)."""
    wl = _where(where, "langs", "langs")
    langs = list(langs)
    if len(langs) != 2 or langs[0] == langs[1]:
        raise ZhuntError(wl, f"need exactly two different languages, got {langs}")
    have = store.languages
    for lang in langs:
        if lang not in have:
            raise ZhuntError(wl, f"language {lang!r} has no prompts in {store.path} (have {have})")
    return pair_by_problem({lang: store.prompt_ids(lang) for lang in langs}, where=str(store.path), min_problems=2)


def check_sweep(store, layers, ks, kinds, poolings, n_random, where=None):
    """The checked settings of a Phase 2 / data-driven sweep on ``store``: ``(layers, ks, kinds, poolings)``.

    Layers must lie in the store, ``0 < k < d``, kinds and poolings be known and
    ``n_random >= 20`` (a 95 % interval); ``where`` names the config keys in errors
    (see :func:`phase2`). A stage calls it before it reads the masks of the sweep.
    """
    kinds, poolings = _check_sweep(kinds, poolings, n_random, where)
    layers = _check_layers(store, layers, where)
    ks = _check_ks(ks, store.hidden_size, where)
    return layers, ks, kinds, poolings


def _open_sweep(store, masks, layers, ks, kinds, poolings, langs, n_random, seed, where):
    """Checked sweep of one store: ``(layers, d, ks, kinds, poolings, ids, draws)``.

    ``ids``: the paired problems of ``langs`` (:func:`_check_pairs`); ``draws[k]``: the
    ``n_random`` Haar subspaces of :func:`_random_draws`; ``masks`` holds every
    ``(layer, kind, k)`` of the sweep.
    """
    layers, ks, kinds, poolings = check_sweep(store, layers, ks, kinds, poolings, n_random, where)
    d = store.hidden_size
    _check_masks(masks, layers, kinds, ks, d, where)
    ids, _ = _check_pairs(store, langs, where)
    draws = {k: _random_draws(k, d, int(n_random), seed) for k in ks}
    return layers, d, ks, kinds, poolings, ids, draws


# ---------------------------------------------------------------------------------------------
# deltas and metrics
# ---------------------------------------------------------------------------------------------

def paired_pooled(store, j: int, langs=("zh", "en"), pooling: str = "mean",
                  exclude_special: bool = True, exclude_ids=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pooled vectors of the problems present in both languages, rows aligned by problem.

    Parameters
    ----------
    store : ActivationStore
    j : int
        Hidden-state index (:func:`zhunt.models.site.hidden_index` of a layer and site).
    langs : (str, str)
        Languages ``a`` and ``b``.
    pooling : {"mean", "last"}
    exclude_special, exclude_ids
        Passed to :meth:`ActivationStore.pooled` (``exclude_ids``: the
        numeral-free pooling's token ids).

    Returns
    -------
    X_a, X_b : ndarray of shape (N, d), float64
        Row ``i`` of both is problem ``ids[i]`` (``X_a`` order = the store's
        prompt order of language ``a``).
    ids : list of str
        The ``N`` problem ids.

    Raises
    ------
    ZhuntError
        A language with no prompts, a problem present in only one of the two
        languages, or fewer than 2 problems.
    """
    ids, rows = _check_pairs(store, langs, None)
    out = [store.pooled(j, lang, pooling=pooling, exclude_special=exclude_special,
                        exclude_ids=exclude_ids).astype(np.float64)[rows[lang]] for lang in langs]
    return out[0], out[1], ids


class PairDeltas:
    """Cross-lingual and within-language deltas of paired pooled vectors.

    Parameters
    ----------
    X_a, X_b : ndarray of shape (N, d)
        Pooled vectors of the same ``N`` problems in languages ``a`` and ``b``
        (row ``i`` = problem ``i`` in both).

    Attributes
    ----------
    cross : ndarray of shape (N, d)
        ``δ_i = X_a[i] - X_b[i]``.
    within : ndarray of shape (N (N - 1), d)
        ``X_ℓ[i] - X_ℓ[j]`` for ``i < j``, language ``a`` first, then ``b``.
    basis : ndarray of shape (m, d)
        Orthonormal basis of the span of all deltas (``m <= 2N - 1``): the
        right singular vectors of the centred stacked rows ``[X_a; X_b]``
        with singular value above ``1e-12 σ_max``. Projections of the deltas
        onto any subspace are computed in these coordinates (exact up to
        rounding, and ``d / m`` times cheaper for many random subspaces).
    """

    def __init__(self, X_a: np.ndarray, X_b: np.ndarray):
        X_a = np.asarray(X_a, dtype=np.float64)
        X_b = np.asarray(X_b, dtype=np.float64)
        if X_a.ndim != 2 or X_a.shape != X_b.shape:
            raise ValueError(f"X_a and X_b must be (N, d) of equal shape, got {X_a.shape} and {X_b.shape}")
        if X_a.shape[0] < 2:
            raise ValueError("need at least 2 problems")
        self.n, self.d = X_a.shape
        self.cross = X_a - X_b
        iu, ju = np.triu_indices(self.n, k=1)
        self.within = np.concatenate([X_a[iu] - X_a[ju], X_b[iu] - X_b[ju]])
        allx = np.concatenate([X_a, X_b])
        _, s, Vt = np.linalg.svd(allx - allx.mean(axis=0), full_matrices=False)
        keep = s > 1e-12 * max(float(s[0]), 1e-300)
        self.basis = Vt[keep]
        self._cc = self.cross @ self.basis.T
        self._cw = self.within @ self.basis.T
        self.cross_sq = np.sum(self.cross**2, axis=1)
        self.within_sq = np.sum(self.within**2, axis=1)

    @property
    def ratio_full(self) -> float:
        """Phase 2 ratio in the whole space, ``mean ||δ_i|| / mean ||ω||``."""
        return safe_ratio(np.sqrt(self.cross_sq).mean(), np.sqrt(self.within_sq).mean())

    def sq_norms_in(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Squared norms of the deltas' projections onto the span of orthonormal rows ``W`` (k, d).

        Returns
        -------
        cross_sq, within_sq : ndarray of shape (N,) and (N (N - 1),)
        """
        Wb = np.asarray(W, dtype=np.float64) @ self.basis.T  # (k, m)
        return np.sum((self._cc @ Wb.T) ** 2, axis=1), np.sum((self._cw @ Wb.T) ** 2, axis=1)


def pair_deltas(X_a: np.ndarray, X_b: np.ndarray) -> PairDeltas:
    """:class:`PairDeltas` of paired pooled vectors ``X_a``, ``X_b`` (N, d)."""
    return PairDeltas(X_a, X_b)


def phase2_ratio(X_a: np.ndarray, X_b: np.ndarray, V: np.ndarray | None = None,
                 complement: bool = False) -> float:
    """Phase 2 ratio of one subspace (see the module docstring).

    ``mean_i ||P_S (x_a^i - x_b^i)|| / mean_{ℓ ∈ {a,b}, i<j} ||P_S (x_ℓ^i - x_ℓ^j)||``

    Parameters
    ----------
    X_a, X_b : ndarray of shape (N, d)
        Paired pooled vectors (row ``i`` = problem ``i``), ``N >= 2``.
    V : ndarray of shape (k, d), optional
        Orthonormal rows spanning ``S``; ``None`` means ``S = R^d``.
    complement : bool
        Use ``S⊥`` (the orthogonal complement of ``span(V)``) instead.

    Returns
    -------
    float
    """
    X_a = np.asarray(X_a, dtype=np.float64)
    X_b = np.asarray(X_b, dtype=np.float64)
    if V is not None:
        f = project_complement if complement else project
        V = np.asarray(V, dtype=np.float64)
        X_a, X_b = f(X_a, V), f(X_b, V)
    D = PairDeltas(X_a, X_b)
    return D.ratio_full


def subspace_metrics(deltas: PairDeltas, V: np.ndarray) -> dict:
    """Phase 2 metrics of one subspace ``S = span(V)`` and of its complement.

    Parameters
    ----------
    deltas : PairDeltas
    V : ndarray of shape (k, d)
        Orthonormal rows.

    Returns
    -------
    dict
        ``ratio_S``, ``ratio_perp`` (the Phase 2 ratios of ``S`` and ``S⊥``),
        ``E_lang`` (= ``E_lang(S)``), ``E_prob`` (= ``E_prob(S)``); the
        complement's energies are ``1 - E``. Projections are computed
        directly in ``R^d`` (:func:`zhunt.subspace.project`,
        ``project_complement``), not through the delta basis.
    """
    V = np.asarray(V, dtype=np.float64)
    c_in = np.linalg.norm(project(deltas.cross, V), axis=1)
    c_out = np.linalg.norm(project_complement(deltas.cross, V), axis=1)
    w_in = np.linalg.norm(project(deltas.within, V), axis=1)
    w_out = np.linalg.norm(project_complement(deltas.within, V), axis=1)
    return {
        "ratio_S": safe_ratio(c_in.mean(), w_in.mean()),
        "ratio_perp": safe_ratio(c_out.mean(), w_out.mean()),
        "E_lang": energy_fraction(deltas.cross, V),
        "E_prob": energy_fraction(deltas.within, V),
    }


def safe_ratio(a: float, b: float) -> float:
    """``a / b``; for ``b <= 0``: ``inf`` when ``a > 0``, else NaN."""
    return float(a / b) if b > 0 else (math.inf if a > 0 else math.nan)


def _random_draws(k: int, d: int, n_random: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng([int(seed), int(k)])
    return [random_subspace(k, d, rng) for _ in range(n_random)]


def random_baseline(deltas: PairDeltas, k: int, n_random: int = 100, seed: int = 0,
                    draws: Sequence[np.ndarray] | None = None) -> dict:
    """Phase 2 metrics of Haar-random k-dimensional subspaces.

    Parameters
    ----------
    deltas : PairDeltas
    k : int
        Subspace dimension, ``0 < k < d``.
    n_random : int
        Number of draws (ignored when ``draws`` is given).
    seed : int
        Draws come from ``numpy.random.default_rng([seed, k])``.
    draws : sequence of ndarray (k, d), optional
        Precomputed subspaces to use instead.

    Returns
    -------
    dict of ndarray of shape (n_random,)
        ``ratio`` (of the random subspace), ``ratio_perp`` (of its complement),
        ``E_lang``, ``E_prob``, ``E_lang_over_prob``.
    """
    if draws is None:
        draws = _random_draws(k, deltas.d, n_random, seed)
    n = len(draws)
    out = {key: np.empty(n) for key in ("ratio", "ratio_perp", "E_lang", "E_prob", "E_lang_over_prob")}
    tot_c, tot_w = deltas.cross_sq.sum(), deltas.within_sq.sum()
    for i, V in enumerate(draws):
        c2, w2 = deltas.sq_norms_in(V)
        out["ratio"][i] = safe_ratio(np.sqrt(c2).mean(), np.sqrt(w2).mean())
        out["ratio_perp"][i] = safe_ratio(np.sqrt(np.clip(deltas.cross_sq - c2, 0, None)).mean(),
                                         np.sqrt(np.clip(deltas.within_sq - w2, 0, None)).mean())
        out["E_lang"][i] = c2.sum() / tot_c if tot_c > 0 else math.nan
        out["E_prob"][i] = w2.sum() / tot_w if tot_w > 0 else math.nan
        out["E_lang_over_prob"][i] = safe_ratio(out["E_lang"][i], out["E_prob"][i])
    return out


def percentile_of(x: float, sample: np.ndarray) -> float:
    """Percentile of ``x`` among ``sample``: ``100 (#{s < x} + ½ #{s = x}) / n``."""
    sample = np.asarray(sample, dtype=np.float64)
    return float(100.0 * (np.sum(sample < x) + 0.5 * np.sum(sample == x)) / len(sample))


def _interval(sample: np.ndarray) -> tuple[float, float, float]:
    lo, hi = np.percentile(sample, RANDOM_BAND)
    return float(np.mean(sample)), float(lo), float(hi)


def band_side(x: float, lo: float, hi: float) -> str:
    """The Phase 2 label of a value against its random band ``[lo, hi]`` (:data:`RANDOM_BAND`):
    ``"below"``, ``"inside"`` or ``"above"`` (``ratio_Z`` below the band: Z separates problems from
    languages better than 97.5 % of random subspaces; ``E_lang_Z`` below it: Z holds less language)."""
    return "below" if x < lo else ("above" if x > hi else "inside")


# ---------------------------------------------------------------------------------------------
# Phase 2 stage
# ---------------------------------------------------------------------------------------------

def _vanish_k(g: pd.DataFrame, col: str, rand: str) -> float:
    """Smallest k at which ``col`` is inside ``[rand_lo, rand_hi]`` for every row of that k (NaN: never)."""
    inside = (g[col] >= g[f"{rand}_lo"]) & (g[col] <= g[f"{rand}_hi"])
    ok = [int(k) for k, v in inside.groupby(g["k"]).all().items() if v]
    return float(min(ok)) if ok else math.nan


def phase2_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Summarise a Phase 2 table per pooling (see the module docstring for "effect vanishes").

    Parameters
    ----------
    table : DataFrame
        From :func:`phase2` (one row per site, token set, layer, k, kind, pooling).

    Returns
    -------
    DataFrame
        Per (site, tokens, pooling), in the table's order (the primary site
        with every token first): one row with ``layer = kind = "all"``, one per kind
        (``layer = "all"``) and one per (layer, kind). Columns: ``n_configs``,
        ``n_Z_better`` (``ratio_Z < ratio_Zperp``), ``n_Z_better_than_random``
        (``ratio_Z`` below the random 95 % interval), ``n_lang_energy_below``
        (``E_lang_Z`` below the random interval), ``n_prob_energy_below``
        (``E_prob_Z`` below it), ``n_lang_specific`` (``E_lang_Z / E_prob_Z``
        below its random interval), ``best_layer``, ``best_k``,
        ``best_kind``, ``best_ratio_Z``, ``best_ratio_Zperp``,
        ``best_rel_ratio`` (lowest ``ratio_Z / ratio_Zperp``),
        ``best_ratio_Z_percentile``, ``vanish_k``, ``vanish_k_spec``, ``ks``;
        ``site``, ``tokens`` and ``hidden_index`` (``all`` when the group spans several).
    """
    rows = []
    t = table.copy()
    t["rel"] = t["ratio_Z"] / t["ratio_Zperp"]
    for col, default in (("site", DEFAULT_SITE), ("hidden_index", -1), ("tokens", "all")):
        if col not in t.columns:
            t[col] = default
    for (site, tokens, pooling), tp in t.groupby(["site", "tokens", "pooling"], sort=False):
        groups = [("all", "all", tp)]
        groups += [("all", kind, g) for kind, g in tp.groupby("kind", sort=False)]
        groups += [(int(l), kind, g) for (l, kind), g in tp.groupby(["layer", "kind"], sort=True)]
        for layer, kind, g in groups:
            # no finite ratio at all (e.g. numeral-free pooling at the embedding of a one-template prompt
            # set: every problem pools to the same vector): the first row stands in, its ratios NaN / inf
            best = g.loc[g["rel"].idxmin()] if g["rel"].notna().any() else g.iloc[0]
            vanish = _vanish_k(g, "E_lang_Z", "E_lang_rand")
            vanish_spec = _vanish_k(g, "E_lang_over_prob_Z", "E_lang_over_prob_rand")
            rows.append({
                "site": site, "tokens": tokens,
                "hidden_index": int(g["hidden_index"].iloc[0]) if g["hidden_index"].nunique() == 1 else "all",
                "pooling": pooling, "layer": layer, "kind": kind, "n_configs": len(g),
                "n_Z_better": int(g["Z_better"].sum()),
                "n_Z_better_than_random": int((g["ratio_Z"] < g["ratio_rand_lo"]).sum()),
                "n_lang_energy_below": int((g["E_lang_Z"] < g["E_lang_rand_lo"]).sum()),
                "n_prob_energy_below": int((g["E_prob_Z"] < g["E_prob_rand_lo"]).sum()),
                "n_lang_specific": int((g["E_lang_over_prob_Z"] < g["E_lang_over_prob_rand_lo"]).sum()),
                "best_layer": int(best["layer"]), "best_k": int(best["k"]), "best_kind": best["kind"],
                "best_ratio_Z": best["ratio_Z"], "best_ratio_Zperp": best["ratio_Zperp"],
                "best_rel_ratio": best["rel"], "best_ratio_Z_percentile": best["ratio_Z_percentile"],
                "vanish_k": vanish, "vanish_k_spec": vanish_spec,
                "ks": ",".join(str(k) for k in sorted(g["k"].unique())),
            })
    return pd.DataFrame(rows)


def _check_sweep(kinds, poolings, n_random, where):
    """Validated (kinds, poolings) of a Phase 2 / data-driven sweep; n_random must give a 95% interval."""
    kinds = _check_choice(kinds, MASK_KINDS, "kinds", where)
    poolings = _check_choice(poolings, POOLINGS, "poolings", where)
    if int(n_random) < 20:
        raise ZhuntError(_where(where, "n_random", "n_random"),
                         f"n_random={n_random}: need at least 20 random subspaces for a 95% interval")
    return kinds, poolings


#: Pseudo-site of the reference rows: the embedding output (hidden index 0), where paired
#: prompts share their numeral tokens and no layer has computed anything yet.
EMBEDDING = "embedding"
#: Chance level of the separation ``1 - ratio``: same-problem pairs no closer than two problems.
SEPARATION_CHANCE = 0.0


def phase2_sites(site: str = DEFAULT_SITE, site_variants=()) -> list[str]:
    """The sites a Phase 2 run covers: ``site`` first, then the variants (duplicates dropped)."""
    out = [check_site(site)]
    out += [check_site(v) for v in site_variants if v not in out]
    return list(dict.fromkeys(out))


def phase2_streams(layer: int, sites: Sequence[str]) -> list[tuple[str, int]]:
    """``(site, hidden index)`` of every stream read for ``layer``: each site, then the embedding reference.

    ``site`` is ``input`` (``j = layer``), ``output`` (``j = layer + 1``) or
    :data:`EMBEDDING` (``j = 0``: the same layer's masks applied to the
    embedding output, the digit-confound reference).
    """
    return [(s, hidden_index(layer, s)) for s in sites] + [(EMBEDDING, 0)]


def _sep(ratio) -> float:
    """Separation above chance, ``max(1 - ratio, 0)`` (a ratio above 1 is no same-problem closeness)."""
    r = float(ratio)
    return max(1.0 - r, SEPARATION_CHANCE) if np.isfinite(r) else (SEPARATION_CHANCE if r > 0 else math.nan)


#: The Phase 2 signals of the digit-confound table: measure -> the ratio whose ``max(1 - ratio, 0)`` it is.
_DIGIT_MEASURES = {
    "separation_full": lambda r: r["ratio_full"],
    "separation_Z": lambda r: r["ratio_Z"],
    "z_advantage": lambda r: safe_ratio(r["ratio_Z"], r["ratio_Zperp"]),
}


def digit_confound_phase2(table: pd.DataFrame, model: str = "") -> pd.DataFrame:
    """Digit-confound rows of a Phase 2 table (one per real site, layer, k, kind, pooling and measure).

    The signal is the separation ``max(1 - ratio, 0)`` (chance
    :data:`SEPARATION_CHANCE`: same-problem pairs across languages no closer
    than two problems within a language; a ratio above 1, or an infinite one
    where every problem pools to the same vector, is no signal), of the whole
    space (``measure = separation_full``) and of Z (``separation_Z``), and the
    seed's contrast, the advantage of Z over Z⊥ ``z_advantage = max(1 - ratio_Z
    / ratio_Zperp, 0)`` (0: Z separates no better than Z⊥). Each row gives the value at the site with every token
    (``value``), at hidden index 0 (``value_embedding``), both numeral-free
    (``value_no_numerals``, ``value_embedding_no_numerals``) and
    :func:`digit_confound_fractions`. Empty when the table has no
    ``no_numerals`` rows.
    """
    if "no_numerals" not in set(table["tokens"]):
        return pd.DataFrame()
    key = ["layer", "k", "kind", "pooling"]
    idx = table.set_index(["site", "tokens"] + key)
    rows = []
    for _, r in table[(table["site"] != EMBEDDING) & (table["tokens"] == "all")].iterrows():
        kk = tuple(r[c] for c in key)
        for measure, ratio in _DIGIT_MEASURES.items():
            vals = [_sep(ratio(idx.loc[(site, tok, *kk)])) for site, tok in
                    ((r["site"], "all"), (EMBEDDING, "all"), (r["site"], "no_numerals"),
                     (EMBEDDING, "no_numerals"))]
            rows.append({"model": model, "stage": "phase2", "site": r["site"],
                         "hidden_index": int(r["hidden_index"]), **{c: r[c] for c in key},
                         "measure": measure, "chance": SEPARATION_CHANCE, "value": vals[0],
                         "value_embedding": vals[1], "value_no_numerals": vals[2],
                         "value_embedding_no_numerals": vals[3], **digit_confound_fractions(*vals)})
    return pd.DataFrame(rows)


def _phase2_metrics(D: "PairDeltas", m: Mapping, rnd, chance: float) -> dict:
    """The metric columns of one Phase 2 row: ``m`` = :func:`subspace_metrics` of Z, ``rnd`` = the
    random baseline and its intervals of the stream (``(rb, ratio, E_lang, E_prob, E_lang_over_prob)``),
    ``chance`` = k/d."""
    rb, (r_mean, r_lo, r_hi), (el_mean, el_lo, el_hi), (ep_mean, ep_lo, ep_hi), (es_mean, es_lo, es_hi) = rnd
    spec = safe_ratio(m["E_lang"], m["E_prob"])
    return {
        "ratio_full": D.ratio_full, "ratio_Z": m["ratio_S"], "ratio_Zperp": m["ratio_perp"],
        "ratio_rand_mean": r_mean, "ratio_rand_lo": r_lo, "ratio_rand_hi": r_hi,
        "ratio_Z_percentile": percentile_of(m["ratio_S"], rb["ratio"]),
        "E_lang_Z": m["E_lang"], "E_lang_rand_mean": el_mean, "E_lang_rand_lo": el_lo, "E_lang_rand_hi": el_hi,
        "E_lang_chance": chance, "E_lang_Z_over_chance": m["E_lang"] / chance,
        "E_lang_Z_percentile": percentile_of(m["E_lang"], rb["E_lang"]),
        "E_lang_side": band_side(m["E_lang"], el_lo, el_hi),
        "E_prob_Z": m["E_prob"], "E_prob_rand_mean": ep_mean, "E_prob_rand_lo": ep_lo, "E_prob_rand_hi": ep_hi,
        "E_prob_chance": chance, "E_prob_Z_over_chance": m["E_prob"] / chance,
        "E_lang_over_prob_Z": spec, "E_lang_over_prob_rand_mean": es_mean,
        "E_lang_over_prob_rand_lo": es_lo, "E_lang_over_prob_rand_hi": es_hi,
        "E_lang_over_prob_side": band_side(spec, es_lo, es_hi),
        "Z_better": bool(m["ratio_S"] < m["ratio_perp"]),
    }


def _order_phase2(table: pd.DataFrame, sites, token_sets, poolings, kinds) -> pd.DataFrame:
    """Rows grouped by site (embedding last), token set, pooling and kind, then layer and k."""
    site_rank = {s: i for i, s in enumerate(list(sites) + [EMBEDDING])}
    rank = (((table["site"].map(site_rank) * len(token_sets)
              + table["tokens"].map({t: i for i, t in enumerate(token_sets)})) * len(poolings)
             + table["pooling"].map({p: i for i, p in enumerate(poolings)})) * len(kinds)
            + table["kind"].map({x: i for i, x in enumerate(kinds)}))
    table = table.assign(_o=rank).sort_values(["_o", "layer", "k"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


def _phase2_rows(store, layers, d, ks, ids, masks, draws, sites, token_sets, poolings, kinds, langs,
                 numeral_ids) -> list[dict]:
    """Rows of the Phase 2 table (before :func:`_order_phase2`); one stream (hidden index, pooling,
    token set) is read and its random baseline drawn once, however many layers and sites share it.

    Columns: ``site`` (input / output / embedding), ``hidden_index``, ``tokens`` (all /
    no_numerals), ``layer, k, kind, pooling, d, n_problems``, then :func:`_phase2_metrics`:
    ``ratio_full, ratio_Z, ratio_Zperp, ratio_rand_mean, ratio_rand_lo, ratio_rand_hi,
    ratio_Z_percentile, E_lang_Z, E_lang_rand_mean, E_lang_rand_lo, E_lang_rand_hi, E_lang_chance,
    E_lang_Z_over_chance, E_lang_Z_percentile, E_lang_side, E_prob_Z, E_prob_rand_mean,
    E_prob_rand_lo, E_prob_rand_hi, E_prob_chance, E_prob_Z_over_chance, E_lang_over_prob_Z,
    E_lang_over_prob_rand_mean, E_lang_over_prob_rand_lo, E_lang_over_prob_rand_hi,
    E_lang_over_prob_side, Z_better`` (``ratio_Z < ratio_Zperp``).
    """
    cache: dict = {}  # (j, pooling, tokens) -> (deltas, {k: random intervals})

    def stream(j, pooling, tokens):
        if (j, pooling, tokens) not in cache:
            excl = numeral_ids if tokens == "no_numerals" else None
            X_a, X_b, _ = paired_pooled(store, j, langs, pooling, exclude_ids=excl)
            D = PairDeltas(X_a, X_b)
            rnd = {}
            for k in ks:
                rb = random_baseline(D, k, draws=draws[k])
                rnd[k] = (rb, *(_interval(rb[m]) for m in ("ratio", "E_lang", "E_prob", "E_lang_over_prob")))
            cache[(j, pooling, tokens)] = (D, rnd)
        return cache[(j, pooling, tokens)]

    rows = []
    for l in layers:
        for st, j in phase2_streams(l, sites):
            for tokens in token_sets:
                for pooling in poolings:
                    D, rnd = stream(j, pooling, tokens)
                    for k in ks:
                        for kind in kinds:
                            m = subspace_metrics(D, masks[(l, kind, k)])
                            rows.append({"site": st, "hidden_index": j, "tokens": tokens, "layer": l, "k": k,
                                         "kind": kind, "pooling": pooling, "d": d, "n_problems": len(ids),
                                         **_phase2_metrics(D, m, rnd[k], k / d)})
    return rows


@dataclass
class Phase2Result:
    """What :func:`phase2` measures.

    Attributes
    ----------
    table : DataFrame
        One row per site, token set, layer, k, kind and pooling (columns in :func:`_phase2_rows`),
        ordered by :func:`_order_phase2`.
    summary : DataFrame
        :func:`phase2_summary` of ``table``.
    digit : DataFrame
        :func:`digit_confound_phase2` of ``table`` (empty without numeral ids).
    sites : list of str
        The real sites of the rows, the primary one first (:func:`phase2_sites`).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    digit: pd.DataFrame
    sites: list


def phase2(store, masks: Mapping, layers, ks, kinds=("multihead", "head0"), poolings=("mean", "last"),
           langs=("zh", "en"), n_random: int = 100, seed: int = 0, *, model_name: str = "",
           site: str = DEFAULT_SITE, site_variants=(), numeral_ids=None, where=None) -> Phase2Result:
    """Phase 2: Z-projection metrics for every site x layer x k x mask kind x pooling x token set.

    Parameters
    ----------
    store : ActivationStore
        The open activation store (:class:`zhunt.data.store.ActivationStore`).
    masks : mapping
        ``{(layer, kind, k): V_Z}``, ``V_Z`` of shape (k, d) with orthonormal rows
        (:func:`zhunt.weights.masks.load_layer_masks`), for every layer, kind and k of the sweep.
    layers : sequence of int
        Decoder layers (0-based); layer ``l`` is read at hidden index
        :func:`zhunt.models.site.hidden_index` ``(l, site)``.
    ks : sequence of int
        Subspace dimensions, ``0 < k < d``.
    kinds, poolings : sequences of {"multihead", "head0"}, {"mean", "last"}
    langs : (str, str)
        The language pair ``(a, b)``; cross-lingual deltas are ``x_a - x_b``.
    n_random : int
        Haar-random subspaces per k (at least 20; default 100).
    seed : int
        Seed of the random subspaces (see :func:`random_baseline`).
    model_name : str
        The ``model`` column of the digit-confound rows.
    site, site_variants : str, sequence of str
        The primary site (``study.site``) and extra sites (extra rows).
    numeral_ids : array-like of int, optional
        Numeral token ids (:func:`zhunt.data.numerals.store_numeral_ids`): adds the
        ``tokens = no_numerals`` rows (numeral-free pooling) and the digit-confound
        rows. Rows with ``site = embedding`` (hidden index 0, the same masks) are always added.
    where : str or mapping, optional
        Config keys to name in errors: one string for all, or ``{"layers": ..., "ks": ...,
        "kinds": ..., "poolings": ..., "langs": ..., "masks": ..., "n_random": ...}``.

    Returns
    -------
    Phase2Result

    Raises
    ------
    ZhuntError
        A layer beyond the store's depth, ``k >= d``, an unknown kind or
        pooling, a language without prompts, a problem missing in one
        language, fewer than 2 problems, a missing mask or one of the wrong shape.
    """
    sites = phase2_sites(site, site_variants)
    token_sets = list(TOKEN_SETS) if numeral_ids is not None else ["all"]
    layers, d, ks, kinds, poolings, ids, draws = _open_sweep(store, masks, layers, ks, kinds, poolings, langs,
                                                             n_random, seed, where)
    rows = _phase2_rows(store, layers, d, ks, ids, masks, draws, sites, token_sets, poolings, kinds, langs,
                        numeral_ids)
    table = _order_phase2(pd.DataFrame(rows), sites, token_sets, poolings, kinds)
    return Phase2Result(table=table, summary=phase2_summary(table), digit=digit_confound_phase2(table, model_name),
                        sites=sites)


# ---------------------------------------------------------------------------------------------
# data-driven language subspace (2505.15257 / LSAR)
# ---------------------------------------------------------------------------------------------

def language_means(store, j: int, pooling: str = "last", langs=None, ids=None,
                   exclude_special: bool = True) -> tuple[np.ndarray, list[str]]:
    """Per-language mean of pooled vectors at one hidden index.

    Parameters
    ----------
    store : ActivationStore
    j : int
        Hidden-state index.
    pooling : {"mean", "last"}
    langs : sequence of str, optional
        Default: every language of the store.
    ids : collection of str, optional
        Restrict to these problem ids (for cross-fitting).

    Returns
    -------
    means : ndarray of shape (n_lang, d), float64
    langs : list of str
    """
    langs = list(store.languages if langs is None else langs)
    out = []
    for lang in langs:
        X = store.pooled(j, lang, pooling=pooling, exclude_special=exclude_special).astype(np.float64)
        if ids is not None:
            keep = np.isin(np.array(store.prompt_ids(lang), dtype=object), list(ids))
            if not keep.any():
                raise ZhuntError(str(store.path), f"no prompts of language {lang!r} among the selected problems")
            X = X[keep]
        out.append(X.mean(axis=0))
    return np.stack(out), langs


def language_subspace(means: np.ndarray, rank: int | None = None, refine: bool = True) -> dict:
    """Language-specific subspace from per-language mean vectors (LSAR; see the module docstring).

    Parameters
    ----------
    means : ndarray of shape (n_lang, d)
        One mean vector per language, ``n_lang >= 2``.
    rank : int, optional
        ``r``, default ``n_lang - 1`` (the rank of the centred means);
        ``0 < r <= n_lang - 1``.
    refine : bool
        Apply the LSAR refinement of the language-agnostic vector.

    Returns
    -------
    dict
        ``M_s`` (r, d) orthonormal rows (signs canonicalised), ``M_s_svd``
        (r, d) the plain centred-SVD subspace, ``agnostic`` (d,) the
        language-agnostic vector (``μ̄``, or ``m_a`` when refined),
        ``sigma`` (n_lang,) singular values of the centred means.
    """
    means = np.asarray(means, dtype=np.float64)
    L = means.shape[0]
    if L < 2:
        raise ValueError("need at least 2 languages for a language subspace")
    r = L - 1 if rank is None else int(rank)
    if not 0 < r <= L - 1:
        raise ValueError(f"rank must satisfy 0 < r <= n_lang - 1 = {L - 1}, got {r}")
    M = means.T  # (d, L)
    mu = M.mean(axis=1)
    U, s, Wt = np.linalg.svd(M - mu[:, None], full_matrices=False)
    Ms_svd = U[:, :r]
    out = {"M_s_svd": canonical_signs(Ms_svd.T), "sigma": s, "agnostic": mu}
    Ms = Ms_svd
    if refine:
        F = mu[:, None] + Ms_svd @ (s[:r, None] * Wt[:r])  # rank-r fit of M, (d, L)
        c = np.linalg.pinv(F, rcond=1e-10).T @ np.ones(L)  # min-norm solution of F^T c = 1
        cc = float(c @ c)
        if cc > 0:
            m_a = c / cc
            U2, _, _ = np.linalg.svd(F - m_a[:, None], full_matrices=False)
            Ms = U2[:, :r]
            out["agnostic"] = m_a
    out["M_s"] = canonical_signs(Ms.T)
    return out


def _cv_folds(ids: Sequence[str], seed: int) -> list[list[str]]:
    rng = np.random.default_rng([int(seed), 2])
    perm = rng.permutation(len(ids))
    half = len(ids) // 2
    return [[ids[i] for i in sorted(perm[:half])], [ids[i] for i in sorted(perm[half:])]]


def _datadriven_stream(store, j: int, pooling: str, all_langs, r: int, refine: bool, langs, ids, folds):
    """``M_s`` at hidden index ``j`` and its metrics on the pair ``langs``: ``(D, M_s, columns)``.

    ``columns``: the stream's data-Z columns of :func:`_datadriven_rows`, the
    ``*_cv`` ones cross-fitted over the two ``folds`` (``M_s`` estimated on one
    half of the problems, evaluated on the other).
    """
    d = store.hidden_size
    means, _ = language_means(store, j, pooling, all_langs)
    sub = language_subspace(means, r, refine=refine)
    Ms = sub["M_s"]
    X_a, X_b, _ = paired_pooled(store, j, langs, pooling)
    D = PairDeltas(X_a, X_b)
    md = subspace_metrics(D, Ms)  # S = M_s; complement = M_s⊥
    cv = []
    pos = {p: i for i, p in enumerate(ids)}
    for f in range(2):
        train, test = folds[1 - f], folds[f]
        sub_f = language_subspace(language_means(store, j, pooling, all_langs, ids=train)[0], r, refine=refine)
        rows_f = [pos[p] for p in test]
        cv.append(subspace_metrics(PairDeltas(X_a[rows_f], X_b[rows_f]), sub_f["M_s"]))
    return D, Ms, {
        "pooling": pooling, "d": d, "r": r, "n_languages": len(all_langs),
        "n_problems": len(ids), "ratio_full": D.ratio_full,
        "ratio_Msperp": md["ratio_perp"], "ratio_Ms": md["ratio_S"],
        "ratio_Msperp_cv": float(np.mean([c["ratio_perp"] for c in cv])),
        "ratio_Ms_cv": float(np.mean([c["ratio_S"] for c in cv])),
        "E_lang_Msperp": 1.0 - md["E_lang"], "E_lang_Msperp_chance": (d - r) / d,
        "E_lang_Ms": md["E_lang"], "E_lang_Ms_chance": r / d,
        "E_lang_Ms_over_chance": md["E_lang"] / (r / d),
        "E_lang_Ms_cv": float(np.mean([c["E_lang"] for c in cv])),
        "E_prob_Msperp": 1.0 - md["E_prob"],
        "lsar_vs_svd_similarity": grassmann_similarity(Ms, sub["M_s_svd"]),
    }


def _datadriven_rows(D, Ms, base: Mapping, ks, kinds, masks: Mapping, draws: Mapping) -> list[dict]:
    """One row per (k, kind) of one stream: ``base`` plus weight-Z and the comparison columns.

    Table columns (one row per site, layer, k, kind, pooling)
    ----------------------------------------------------------
    ``site, hidden_index, layer, k, kind, pooling, d, r, n_languages, ratio_full``;
    weight-Z: ``ratio_Z, ratio_Zperp, E_lang_Z, E_lang_Z_chance (k/d),
    E_lang_Z_over_chance``;
    data-Z: ``ratio_Msperp, ratio_Ms, ratio_Msperp_cv, ratio_Ms_cv,
    E_lang_Msperp, E_lang_Msperp_chance ((d-r)/d), E_lang_Ms, E_lang_Ms_chance
    (r/d), E_lang_Ms_over_chance, E_lang_Ms_cv, E_prob_Msperp``;
    comparison: ``cos_mean, cos_max`` (principal angles between Z and M_s),
    ``cos_mean_rand_mean/lo/hi, cos_max_rand_mean/lo/hi`` (random k-dim
    subspace vs M_s), ``E_Ms_in_Z`` (``||V_Z M_s^T||_F² / r``),
    ``E_Ms_in_Z_chance`` (k/d), ``E_Ms_in_Z_over_chance``, ``E_Ms_in_Z_rand_lo/hi``,
    ``lsar_vs_svd_similarity`` (Grassmann similarity of refined and plain M_s).
    """
    d, r, l = base["d"], base["r"], base["layer"]
    rows = []
    for k in ks:
        rc = [np.linalg.svd(V @ Ms.T, compute_uv=False) for V in draws[k]]
        rc_mean = np.array([c.mean() for c in rc])
        rc_max = np.array([c.max() for c in rc])
        rc_energy = np.array([np.sum(c**2) / r for c in rc])
        cm, cm_lo, cm_hi = _interval(rc_mean)
        cx, cx_lo, cx_hi = _interval(rc_max)
        _, e_lo, e_hi = _interval(rc_energy)
        for kind in kinds:
            V = masks[(l, kind, k)]
            mz = subspace_metrics(D, V)
            cos = np.linalg.svd(V @ Ms.T, compute_uv=False)
            e_in = float(np.sum((V @ Ms.T) ** 2) / r)
            rows.append({
                "k": k, "kind": kind, **base,
                "ratio_Z": mz["ratio_S"], "ratio_Zperp": mz["ratio_perp"],
                "E_lang_Z": mz["E_lang"], "E_lang_Z_chance": k / d,
                "E_lang_Z_over_chance": mz["E_lang"] / (k / d),
                "cos_mean": float(cos.mean()), "cos_max": float(cos.max()),
                "cos_mean_rand_mean": cm, "cos_mean_rand_lo": cm_lo, "cos_mean_rand_hi": cm_hi,
                "cos_max_rand_mean": cx, "cos_max_rand_lo": cx_lo, "cos_max_rand_hi": cx_hi,
                "E_Ms_in_Z": e_in, "E_Ms_in_Z_chance": k / d, "E_Ms_in_Z_over_chance": e_in / (k / d),
                "E_Ms_in_Z_rand_lo": e_lo, "E_Ms_in_Z_rand_hi": e_hi,
            })
    return rows


def datadriven(store, masks: Mapping, layers, ks, kinds=("multihead",), poolings=("last", "mean"), seed: int = 0,
               *, langs=("zh", "en"), n_random: int = 100, rank: int | None = None, refine: bool = True,
               site: str = DEFAULT_SITE, site_variants=(), where=None) -> pd.DataFrame:
    """Data-driven language subspace ``M_s`` (2505.15257) next to the weight-derived ``Z``.

    Parameters
    ----------
    store, masks, layers, ks, kinds, poolings, seed, where
        As in :func:`phase2`. ``M_s`` is estimated from every language of
        the store; the Phase 2 metrics use the pair ``langs``.
    n_random : int
        Haar-random k-dimensional subspaces for the principal-angle baseline.
    rank : int, optional
        Rank of ``M_s``; default ``n_lang - 1``.
    refine : bool
        LSAR refinement (a no-op for ``span(M_s)`` at ``r = n_lang - 1``).
    site, site_variants
        As in :func:`phase2`: layer ``l`` is read at
        :func:`zhunt.models.site.hidden_index` ``(l, site)``, every site its own rows
        (``M_s`` is estimated at that same hidden index).

    Returns
    -------
    DataFrame
        One row per site, layer, k, kind and pooling (columns in :func:`_datadriven_rows`), the
        primary site first.
    """
    rows = []
    layers, d, ks, kinds, poolings, ids, draws = _open_sweep(store, masks, layers, ks, kinds, poolings, langs,
                                                             n_random, seed, where)
    all_langs = store.languages
    if len(all_langs) < 2:
        raise ZhuntError(str(store.path), "the data-driven language subspace needs at least 2 languages")
    r = len(all_langs) - 1 if rank is None else int(rank)
    if not 0 < r < len(all_langs):
        raise ZhuntError(_where(where, "rank", "rank"), f"rank {r} must satisfy 0 < r <= n_lang - 1 = "
                                                        f"{len(all_langs) - 1}")
    if len(ids) < 4:
        raise ZhuntError(str(store.path), f"cross-fitting needs at least 4 paired problems, found {len(ids)}")
    folds = _cv_folds(ids, seed)
    sites = phase2_sites(site, site_variants)
    for site_, l in ((st, l) for st in sites for l in layers):
        j = hidden_index(l, site_)
        for pooling in poolings:
            D, Ms, base = _datadriven_stream(store, j, pooling, all_langs, r, refine, langs, ids, folds)
            rows += _datadriven_rows(D, Ms, {"site": site_, "hidden_index": j, "layer": l, **base}, ks, kinds,
                                     {key: V for key, V in masks.items() if key[0] == l}, draws)
    table = pd.DataFrame(rows)
    order = ["site", "hidden_index", "layer", "k", "kind", "pooling"]
    table = table[order + [c for c in table.columns if c not in order]]
    table = table.assign(_s=table["site"].map({x: i for i, x in enumerate(sites)}))
    return table.sort_values(["_s", "layer", "k"], kind="stable").drop(columns="_s").reset_index(drop=True)
