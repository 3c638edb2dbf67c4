"""Experiment B: what does each layer write — Z-content, Z⊥-content, or both? (seed 000)

Definitions
-----------
For decoder layer ``l`` (the transition between hidden-state indices ``l`` and
``l + 1``, :mod:`zhunt.data.store`) and prompt ``i`` the mean-pooled update is

``Δh̄_l^i = (1/T_i) Σ_t (h_{l+1}^i[t] - h_l^i[t])``   (d,)

over the prompt's non-special tokens
(:meth:`zhunt.data.store.ActivationStore.pooled_update`). With the PRIMARY
layer's mask ``V_Z`` (k, d) held fixed for every ``l`` (the seed's "Rosetta
Stone"), ``P_Z = V_Z^T V_Z``:

``n_Z = ||P_Z Δh̄|| = ||V_Z Δh̄||``,  ``n_⊥ = ||P_Z⊥ Δh̄|| = sqrt(||Δh̄||² - n_Z²)``

and, over a set of prompts ``I`` (one language, or the pooled row ``all``),

* ``R = mean_{i∈I} n_Z^i / n_⊥^i`` — the **average of per-prompt ratios** (the
  headline column ``R``; the seed averages over prompts);
* ``R_of_means = mean_i n_Z^i / mean_i n_⊥^i`` — the ratio of averaged norms
  (a second, outlier-robust reading).

Random baseline: for isotropic updates ``n_Z² / n_⊥²`` concentrates at
``k / (d - k)``, so ``iso_expected = sqrt(k / (d - k))``. The empirical
baseline applies the *same* statistic ``R`` to the *same* updates with
``n_random`` Haar-random k-dim subspaces instead of Z
(:func:`zhunt.subspace.random_subspace`; one set of subspaces, seeded, for
every layer): ``rand_mean``, ``rand_q025``, ``rand_q975`` (2.5/97.5 %
quantiles).

Labels (per layer and language set):

* ``Z-dominated``: ``R > rand_q975`` and ``R >= Z_DOMINATED_ENRICHMENT x rand_mean``
  (above the random band *and* by a margin: at least 1.5 times the random mean);
* ``Z⊥-dominated``: ``R < rand_q025``;
* ``mixed`` otherwise.

Phases (seed 000's transformative check, :func:`has_phases`): some ``Z-dominated`` layer of the
pooled row has a layer with another label before it and another after it.

``enrichment = R / rand_mean``; ``R_gt_1`` records the seed's literal reading
(``R > 1``: the update is larger in Z than in Z⊥, which for ``k << d`` needs
strong concentration).

Rows: every language of the store on its own, and ``all`` = the zh and en
prompts pooled, as the seed averages "all prompts and both languages" (the
``pooled`` column names them; a store without zh and en pools every language).
Other languages (es, fr, de, ...) are never pooled into ``all``.

Language difference (rows ``lang = "zh-en"``): over the ``n`` problems present
in both languages, with ``r^i = n_Z^i / n_⊥^i``,

``D = (1/n) Σ_i (r_zh^i - r_en^i)``.

Null: within a problem the two language labels are exchangeable, so each
problem's pair may be swapped (``r_zh^i <-> r_en^i``, a sign flip of its
difference); ``p_perm`` is the two-sided permutation p-value
(:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``; exact
enumeration of the ``2^n`` swaps when ``2^n <= n_permutations``, otherwise
``n_permutations`` seeded random swaps). ``p_holm`` = Holm across the layers
of one ``k`` (:func:`zhunt.stats.holm`). Label: ``zh higher`` / ``en higher``
(the sign of ``D``) when ``p_holm < ALPHA``, else ``no difference``. The
random-subspace band of the same difference (``rand_q025``, ``rand_q975``: D
under each random subspace instead of Z) stays as context: it says whether Z
separates the languages more than a random subspace does, not whether the
difference is larger than the prompts' own variation, so it does not decide
the label.

Site (:mod:`zhunt.models.site`): the update of layer ``l`` is ``h_{l+1} - h_l``
whatever the site, and the basis is the PRIMARY layer's Z, so the numbers do
not depend on ``study.site`` and no site-variant rows are written (they would
repeat these). The table still names the site and, in ``hidden_index``, the
stream the basis belongs to: ``hidden_index(primary layer, site)``, the stream
the primary layer's attention reads (at ``site = input``) from which its Z is
built; ``basis_layer`` is that layer.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.data.pairing import pair_by_problem
from zhunt.errors import ZhuntError
from zhunt.stats import holm
from zhunt.subspace import random_subspace

__all__ = ["Z_DOMINATED_ENRICHMENT", "ALPHA", "N_PERMUTATIONS", "POOLED_LANGS", "iso_expected",
           "norms_in_subspace", "ratio_stats", "random_ratio_stats", "label_layer", "has_phases", "paired_permutation_p",
           "criteria", "decompose", "decomposition"]

#: ``Z-dominated`` needs ``R >= Z_DOMINATED_ENRICHMENT * rand_mean`` besides ``R > rand_q975``.
Z_DOMINATED_ENRICHMENT = 1.5
#: Family-wise level of the zh - en test (Holm-adjusted p across the layers of one k).
ALPHA = 0.05
#: Random label swaps of the zh - en permutation test when exact enumeration (2^n) is larger.
N_PERMUTATIONS = 9999
#: Languages pooled into the ``all`` row (the seed's "both languages").
POOLED_LANGS = ("zh", "en")


def criteria() -> str:
    """The labels' rules as one line (the ``criteria`` column and the caption)."""
    return (f"Z-dominated: R > random 97.5% quantile and R >= {Z_DOMINATED_ENRICHMENT:g} x random mean; "
            "Z-perp-dominated: R < random 2.5% quantile; zh-en: within-problem label-swap permutation test, "
            f"Holm across layers, zh/en higher when p_holm < {ALPHA:g}")


def paired_permutation_p(a: np.ndarray, b: np.ndarray, n_permutations: int = N_PERMUTATIONS,
                         seed=0) -> float:
    """Two-sided p-value of ``mean(a - b)`` under within-pair swaps of ``a_i`` and ``b_i``.

    Parameters
    ----------
    a, b : ndarray of shape (n,)
        Paired values (problem ``i`` in the two languages).
    n_permutations : int
        Random swaps when ``2^n`` exceeds it (exact enumeration otherwise).
    seed : int or sequence of int
        Seeds :func:`numpy.random.default_rng` for the random swaps.

    Returns
    -------
    float
        :func:`scipy.stats.permutation_test` (``permutation_type="samples"``)
        p-value; NaN for ``n < 2``.
    """
    from scipy.stats import permutation_test

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    res = permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), permutation_type="samples",
                           vectorized=True, n_resamples=int(n_permutations), alternative="two-sided",
                           random_state=np.random.default_rng(seed))
    return float(res.pvalue)


def iso_expected(k: int, d: int) -> float:
    """``sqrt(k / (d - k))``: the ratio ``||P_Z x|| / ||P_Z⊥ x||`` of an isotropic ``x`` (large-d limit)."""
    return float(np.sqrt(k / (d - k)))


def norms_in_subspace(U: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Norms of the rows of ``U`` inside and outside span(V).

    Parameters
    ----------
    U : ndarray of shape (N, d)
        Pooled updates ``Δh̄``.
    V : ndarray of shape (k, d) or (r, k, d)
        Orthonormal rows (or ``r`` such bases).

    Returns
    -------
    n_z, n_perp : ndarray of shape (N,) or (r, N), float64
        ``||V u||`` and ``sqrt(max(||u||² - ||V u||², 0))``.
    """
    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    tot = (U ** 2).sum(axis=-1)
    C = U @ V.T if V.ndim == 2 else np.einsum("nd,rkd->rnk", U, V, optimize=True)
    nz2 = (C ** 2).sum(axis=-1)
    return np.sqrt(nz2), np.sqrt(np.clip(tot - nz2, 0.0, None))


def _safe_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def ratio_stats(n_z: np.ndarray, n_perp: np.ndarray) -> dict:
    """``R`` (mean of per-prompt ratios) and ``R_of_means`` of a set of prompts (NaN-safe)."""
    r = _safe_ratio(n_z, n_perp)
    return {"R": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
            "R_sem": float(np.nanstd(r, ddof=1) / np.sqrt(np.isfinite(r).sum())) if np.isfinite(r).sum() > 1
            else float("nan"),
            "R_of_means": float(n_z.mean() / n_perp.mean()) if n_perp.mean() > 0 else float("nan"),
            "mean_norm_z": float(n_z.mean()), "mean_norm_perp": float(n_perp.mean())}


def random_ratio_stats(n_z: np.ndarray, n_perp: np.ndarray) -> np.ndarray:
    """``R`` under each random subspace: ``(r, N)`` norms -> ``(r,)`` means of per-prompt ratios."""
    return np.nanmean(_safe_ratio(n_z, n_perp), axis=1)


def label_layer(R: float, rand: np.ndarray) -> tuple[str, dict]:
    """Label ``R`` against its random distribution (rule in the module docstring)."""
    mean, lo, hi = float(np.mean(rand)), float(np.quantile(rand, 0.025)), float(np.quantile(rand, 0.975))
    info = {"rand_mean": mean, "rand_q025": lo, "rand_q975": hi,
            "enrichment": R / mean if mean > 0 else float("nan")}
    if R > hi and R >= Z_DOMINATED_ENRICHMENT * mean:
        return "Z-dominated", info
    if R < lo:
        return "Z⊥-dominated", info
    return "mixed", info


def has_phases(labels: Sequence[str]) -> bool:
    """Seed 000's "R(k) reveals encode / reason / decode phases", from the pooled row's labels by layer:
    a ``Z-dominated`` layer with a layer of another label somewhere before it and somewhere after it."""
    labels = list(labels)
    zd = [i for i, lab in enumerate(labels) if lab == "Z-dominated"]
    other = [i for i, lab in enumerate(labels) if lab != "Z-dominated"]
    return any(any(o < i for o in other) and any(o > i for o in other) for i in zd)


def _zh_en_rows(langs: np.ndarray, problem_ids) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(zh_rows, en_rows)`` of every problem, in zh order (:func:`zhunt.data.pairing.pair_by_problem`:
    a problem missing in one of the two languages is an error); no ``problem_ids``: the j-th zh row and
    the j-th en row are problem j."""
    zh, en = np.flatnonzero(langs == "zh"), np.flatnonzero(langs == "en")
    if problem_ids is None:
        ids = {"zh": range(len(zh)), "en": range(len(en))}
    else:
        pid = np.asarray(list(problem_ids)).astype(str)
        ids = {"zh": pid[zh], "en": pid[en]}
    _, rows = pair_by_problem(ids, where="decomposition problem_ids")
    return zh[rows["zh"]], en[rows["en"]]


def decompose(updates: Sequence[np.ndarray], langs: Sequence[str], V_Z: np.ndarray, *, n_random: int = 100,
              seed: int = 0, problem_ids: Sequence[str] | None = None,
              n_permutations: int = N_PERMUTATIONS) -> pd.DataFrame:
    """R per layer for each language, the zh + en pool, and the zh - en permutation test.

    Parameters
    ----------
    updates : sequence of ndarray of shape (N, d)
        ``updates[l]`` = pooled update of decoder layer ``l`` for all ``N`` prompts.
    langs : sequence of str
        Language of each of the ``N`` rows.
    V_Z : ndarray of shape (k, d)
        The fixed Z-basis.
    n_random : int
        Random subspaces of the baseline (>= 2).
    seed : int
        Subspace ``r`` is drawn with the generator seeded ``(seed, k, r)``; the
        permutation test of layer ``l`` with ``(seed, k, l)``.
    problem_ids : sequence of str, optional
        Problem of each row (zh and en rows of one problem share it); default:
        the j-th zh row and the j-th en row are problem j. Every problem needs
        a zh and an en row (:func:`zhunt.data.pairing.pair_by_problem`).
    n_permutations : int
        See :func:`paired_permutation_p`.

    Returns
    -------
    pandas.DataFrame
        One row per (layer, lang) with ``lang`` in the store's languages, ``all``
        (``pooled`` names its languages) and, when both are present, ``zh-en``
        (``R`` = D, ``n_pairs``, ``p_perm``, ``p_holm``); columns in the module
        docstring, ``criteria`` on every row.
    """
    V_Z = np.asarray(V_Z, dtype=np.float64)
    k = int(V_Z.shape[0])
    d = int(V_Z.shape[1])
    if n_random < 2:
        raise ValueError("n_random must be >= 2")
    rand_V = np.stack([random_subspace(k, d, np.random.default_rng([int(seed), k, r])) for r in range(n_random)])
    langs = np.asarray(list(langs))
    groups = {lg: langs == lg for lg in dict.fromkeys(langs)}
    pooled = [lg for lg in POOLED_LANGS if lg in groups] or list(groups)
    groups["all"] = np.isin(langs, pooled)
    pooled_name = "+".join(pooled)
    has_pair = "zh" in groups and "en" in groups
    zi, ei = _zh_en_rows(langs, problem_ids) if has_pair else (np.array([], int), np.array([], int))
    iso = iso_expected(k, d)
    crit = criteria()
    rows, diff_rows = [], []
    for l, U in enumerate(updates):
        nz, npp = norms_in_subspace(U, V_Z)
        rz, rp = norms_in_subspace(U, rand_V)
        for g, sel in groups.items():
            st = ratio_stats(nz[sel], npp[sel])
            rand = random_ratio_stats(rz[:, sel], rp[:, sel])
            label, info = label_layer(st["R"], rand)
            rows.append({"k": k, "layer": l, "transition": f"{l}->{l + 1}", "lang": g, "n_prompts": int(sel.sum()),
                         "pooled": pooled_name if g == "all" else g, **st, "iso_expected": iso, **info,
                         "label": label, "R_gt_1": bool(st["R"] > 1), "criteria": crit})
        if has_pair:
            r = _safe_ratio(nz, npp)
            rr = _safe_ratio(rz, rp)  # (n_random, N)
            ok = np.isfinite(r[zi]) & np.isfinite(r[ei])
            a, b = r[zi][ok], r[ei][ok]
            D = float(np.mean(a - b)) if ok.any() else float("nan")
            rand = np.nanmean(rr[:, zi[ok]] - rr[:, ei[ok]], axis=1) if ok.any() else np.full(n_random, np.nan)
            p = paired_permutation_p(a, b, n_permutations, seed=[int(seed), k, l])
            diff_rows.append(len(rows))
            rows.append({"k": k, "layer": l, "transition": f"{l}->{l + 1}", "lang": "zh-en",
                         "n_prompts": int(2 * ok.sum()), "pooled": "zh-en", "R": D, "n_pairs": int(ok.sum()),
                         "iso_expected": 0.0, "rand_mean": float(np.nanmean(rand)),
                         "rand_q025": float(np.nanquantile(rand, 0.025)),
                         "rand_q975": float(np.nanquantile(rand, 0.975)), "p_perm": p, "criteria": crit})
    if diff_rows:
        adj = holm([rows[i]["p_perm"] for i in diff_rows])
        for i, pa in zip(diff_rows, adj):
            D = rows[i]["R"]
            rows[i]["p_holm"] = float(pa)
            rows[i]["label"] = ("no difference" if not (pa < ALPHA) else "zh higher" if D > 0 else "en higher")
    return pd.DataFrame(rows)


def decomposition(store, masks: Mapping[int, np.ndarray], basis_layer: int, n_random: int = 100, seed: int = 0,
                  site: str = "input") -> pd.DataFrame:
    """Experiment B: R(l) for every decoder layer, each language and pooled, every k.

    Parameters
    ----------
    store : ActivationStore
        The open activation store (every hidden state of every prompt).
    masks : mapping
        ``{k: V_Z}``, ``V_Z`` of shape (k, d): the PRIMARY layer's Z (the fixed basis), one per k.
    basis_layer : int
        The decoder layer the masks were built for.
    n_random : int
        Random subspaces of the baseline (>= 100 recommended).
    seed : int
    site : {"input", "output"}
        Recorded with the basis's hidden index (see the module docstring: R does not depend on it).

    Returns
    -------
    DataFrame
        ``site``, ``hidden_index``, ``basis_layer``, then :func:`decompose`'s columns, for every k
        in the order of ``masks``.
    """
    from zhunt.models.site import hidden_index

    langs = store.prompts["lang"].tolist()
    problem_ids = store.prompts["prompt_id"].astype(str).tolist()
    updates = [store.pooled_update(l) for l in store.layers]
    d = store.hidden_size
    frames = []
    for k, V in masks.items():
        if V.shape != (k, d):
            raise ValueError(f"mask k={k} has shape {V.shape}, expected {(k, d)} (the store's hidden size)")
        frames.append(decompose(updates, langs, V, n_random=int(n_random), seed=seed, problem_ids=problem_ids))
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "basis_layer", int(basis_layer))
    df.insert(0, "hidden_index", hidden_index(int(basis_layer), site))
    df.insert(0, "site", site)
    return df
