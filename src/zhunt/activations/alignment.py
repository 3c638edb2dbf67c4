"""Cross-lingual nearest-neighbour retrieval and the alignment depth ``L*`` (per language, per problem),
related to category and length, with :func:`alignment_verdict` (:data:`ALIGNMENT_RULE`).

Notation and definitions: :mod:`zhunt.activations.theory` (one list for every seed-003 quantity).
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pandas as pd

from zhunt.activations.paired import PairedStates, reference_language

__all__ = ["nn_correct", "nn_accuracy", "nn_retrieval_table", "alignment_depth_languages",
           "alignment_depth_problems", "problem_depths", "depth_vs_category", "depth_vs_length", "ALIGNMENT_RULE",
           "alignment_verdict"]


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float64)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def nn_correct(X_src: np.ndarray, X_tgt: np.ndarray) -> np.ndarray:
    """Whether each source row's cosine nearest neighbour among the target rows is its own index.

    Parameters
    ----------
    X_src, X_tgt : ndarray of shape (N, d)
        Row ``i`` of both is problem ``i``.

    Returns
    -------
    ndarray of shape (N,), bool
        ``argmax_k cos(X_src[i], X_tgt[k]) == i`` (ties go to the lowest index).
    """
    S = _unit(X_src) @ _unit(X_tgt).T
    return np.argmax(S, axis=1) == np.arange(S.shape[0])


def nn_accuracy(X_src: np.ndarray, X_tgt: np.ndarray) -> float:
    """Fraction of problems retrieved correctly (:func:`nn_correct`)."""
    return float(nn_correct(X_src, X_tgt).mean())


def _space(P: PairedStates, lang: str, space: str, j: int) -> np.ndarray:
    S = P.states(lang)
    if space == "h":
        return S[j]
    return S[j] - S[j - 1]


def nn_retrieval_table(P: PairedStates) -> pd.DataFrame:
    """Retrieval accuracy for every ordered language pair, depth and space.

    Returns
    -------
    DataFrame
        ``j`` (hidden index), ``layer`` (``j - 1``: the decoder layer whose
        output / update it is; -1 = embeddings; :func:`zhunt.activations.theory.theory`
        relabels it by the site, :func:`~zhunt.activations.theory.site_layer`), ``src_lang``, ``tgt_lang``,
        ``space`` (``h`` for ``j = 0..L``; ``update`` for ``j = 1..L``),
        ``accuracy``.
    """
    rows = []
    for space in ("h", "update"):
        for j in range(0 if space == "h" else 1, P.num_layers + 1):
            U = {l: _unit(_space(P, l, space, j)) for l in P.langs}
            for a, b in permutations(P.langs, 2):
                hit = np.argmax(U[a] @ U[b].T, axis=1) == np.arange(U[a].shape[0])
                rows.append({"j": j, "layer": j - 1, "src_lang": a, "tgt_lang": b, "space": space,
                             "accuracy": float(hit.mean())})
    return pd.DataFrame(rows)


def alignment_depth_languages(nn: pd.DataFrame, langs, threshold: float = 0.9) -> pd.DataFrame:
    """``L*(l)``: first hidden index where retrieval from ``l`` to its reference reaches ``threshold``.

    Parameters
    ----------
    nn : DataFrame
        :func:`nn_retrieval_table`.
    langs : sequence of str
    threshold : float

    Returns
    -------
    DataFrame
        ``lang``, ``ref``, ``space``, ``L_star`` (hidden index ``j``; NaN if never),
        ``max_accuracy``, ``j_max``.
    """
    rows = []
    for space in ("h", "update"):
        for l in langs:
            ref = reference_language(l, langs)
            s = nn[(nn["src_lang"] == l) & (nn["tgt_lang"] == ref) & (nn["space"] == space)].sort_values("j")
            hit = s[s["accuracy"] >= threshold]
            rows.append({"lang": l, "ref": ref, "space": space,
                         "L_star": float(hit["j"].iloc[0]) if len(hit) else math.nan,
                         "max_accuracy": float(s["accuracy"].max()),
                         "j_max": int(s["j"].iloc[int(np.argmax(s["accuracy"].to_numpy()))])})
    return pd.DataFrame(rows)


def alignment_depth_problems(correct: np.ndarray) -> np.ndarray:
    """Per-problem alignment depth from a (depth x problem) correctness matrix.

    Parameters
    ----------
    correct : ndarray of shape (J, N), bool
        ``correct[j, i]``: problem ``i`` retrieved correctly at index ``j``.

    Returns
    -------
    ndarray of shape (N,), int
        The smallest ``j`` with ``correct[j:, i]`` all True; ``J`` if the
        problem is wrong at the last index (never aligned).
    """
    c = np.asarray(correct, bool)
    J = c.shape[0]
    # suffix-AND: ok[j, i] = all(c[j:, i])
    ok = np.flip(np.logical_and.accumulate(np.flip(c, 0), axis=0), 0)
    first = np.where(ok.any(axis=0), np.argmax(ok, axis=0), J)
    return first.astype(int)


def problem_depths(P: PairedStates, space: str = "h") -> pd.DataFrame:
    J = P.num_layers + 1
    out = {}
    for l in P.langs:
        ref = reference_language(l, P.langs)
        corr = np.stack([nn_correct(P.states(l)[j], P.states(ref)[j]) for j in range(J)])
        out[l] = alignment_depth_problems(corr)
    df = pd.DataFrame(out)
    df.insert(0, "problem", P.problems)
    df.insert(1, "category", P.category)
    df["max"] = df[list(P.langs)].max(axis=1)
    df["mean"] = df[list(P.langs)].mean(axis=1)
    return df


def depth_vs_category(depth, category) -> tuple[pd.DataFrame, float, float]:
    """Mean ``L*(x)`` per category and a Kruskal–Wallis test across categories.

    Returns
    -------
    table : DataFrame
        ``category``, ``n``, ``mean_L_star``, ``median_L_star``.
    H, p : float
        Kruskal–Wallis statistic and p-value (NaN with fewer than 2 categories
        or when every value is equal).
    """
    from scipy.stats import kruskal

    df = pd.DataFrame({"d": np.asarray(depth, np.float64), "c": np.asarray(category, object)})
    tab = (df.groupby("c", sort=True)["d"].agg(["size", "mean", "median"]).reset_index()
           .rename(columns={"c": "category", "size": "n", "mean": "mean_L_star", "median": "median_L_star"}))
    groups = [g.to_numpy() for _, g in df.groupby("c")["d"]]
    H = p = math.nan
    if len(groups) >= 2 and np.ptp(df["d"].to_numpy()) > 0:
        H, p = (float(x) for x in kruskal(*groups))
    return tab, H, p


def depth_vs_length(depth, length) -> tuple[float, float, int]:
    """Spearman correlation of ``L*(x)`` with a per-problem length; NaN-aware.

    Returns
    -------
    rho, p : float
    n : int
        Problems with both values.
    """
    from scipy.stats import spearmanr

    d = np.asarray(depth, np.float64)
    x = np.asarray(length, np.float64)
    ok = np.isfinite(d) & np.isfinite(x)
    if ok.sum() < 3 or np.ptp(d[ok]) == 0 or np.ptp(x[ok]) == 0:
        return math.nan, math.nan, int(ok.sum())
    rho, p = spearmanr(d[ok], x[ok])
    return float(rho), float(p), int(ok.sum())


#: Alignment depth: the NN-retrieval accuracy that defines L*(l) is the config's theory.nn_threshold.
ALIGNMENT_RULE = "L*(l) = first hidden index with NN accuracy >= theory.nn_threshold: 'aligned at j', else 'never aligned'"


def alignment_verdict(L_star) -> str:
    """``"aligned at j=..."`` for a finite ``L*(l)`` (:func:`alignment_depth_languages`), ``"never aligned"`` for NaN."""
    return f"aligned at j={int(L_star)}" if L_star is not None and np.isfinite(L_star) else "never aligned"
