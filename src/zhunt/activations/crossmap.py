"""Cross-lingual maps between languages' PCA coordinates: orthogonal Procrustes vs affine, held-out
``R^2`` over a K-fold split of problems, with :func:`crossmap_verdict` (:data:`CROSSMAP_RULE`).

Notation and definitions: :mod:`zhunt.activations.theory` (one list for every seed-003 quantity).
"""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pandas as pd

from zhunt.activations.paired import PairedStates
from zhunt.progress import Progress

__all__ = ["crossmap_heldout", "crossmap_table", "CROSSMAP_GAP", "CROSSMAP_MIN_R2", "CROSSMAP_RULE",
           "crossmap_verdict"]


def _pca_basis(X: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and top-``r`` principal axes (r, d) of the rows of ``X`` (n, d).

    With ``n < d`` the axes come from the eigenvectors ``U`` of the n x n Gram
    matrix ``Xc Xc^T`` (``V = U^T Xc / s``), far cheaper than an SVD of ``Xc``;
    only axes with non-negligible variance are accurate, which is all we use.
    """
    mu = X.mean(axis=0)
    Xc = X - mu
    if Xc.shape[0] >= Xc.shape[1]:
        _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
        return mu, Vt[:r]
    ev, U = np.linalg.eigh(Xc @ Xc.T)
    ev, U = ev[::-1][:r], U[:, ::-1][:, :r]
    s = np.sqrt(np.clip(ev, 0.0, None))
    V = (U.T @ Xc) / np.where(s > 0, s, 1.0)[:, None]
    return mu, V


def _affine(Xc: np.ndarray, Yc: np.ndarray, r: int) -> np.ndarray:
    G = Xc.T @ Xc
    lam = 0.0 if Xc.shape[0] > Xc.shape[1] + 1 else 1e-2 * np.trace(G) / max(r, 1)
    return np.linalg.solve(G + lam * np.eye(G.shape[0]), Xc.T @ Yc) if lam else np.linalg.lstsq(Xc, Yc, rcond=None)[0]


def _folds(n: int, n_folds: int, seed: int) -> list[np.ndarray]:
    k = max(2, min(n_folds, n))
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(f) for f in np.array_split(perm, k)]


def _fold_coords(X: np.ndarray, folds, r: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per fold: ``(Z_train, Z_test)``, the rows of ``X`` in the top-``r`` PCA basis of the training rows."""
    N = X.shape[0]
    out = []
    for te in folds:
        tr = np.setdiff1d(np.arange(N), te)
        mu, V = _pca_basis(X[tr], r)
        out.append(((X[tr] - mu) @ V.T, (X[te] - mu) @ V.T))
    return out


def _fit_eval(cx, cy, r: int) -> tuple[float, float]:
    """Pooled held-out R^2 of Procrustes and affine maps from per-fold coordinates."""
    from scipy.linalg import orthogonal_procrustes

    sse_p = sse_a = sst = 0.0
    for (Zx_tr, Zx_te), (Zy_tr, Zy_te) in zip(cx, cy):
        mx, my = Zx_tr.mean(0), Zy_tr.mean(0)
        Xc, Yc = Zx_tr - mx, Zy_tr - my
        R, _ = orthogonal_procrustes(Xc, Yc)
        W = _affine(Xc, Yc, r)
        sse_p += float(np.sum(((Zx_te - mx) @ R + my - Zy_te) ** 2))
        sse_a += float(np.sum(((Zx_te - mx) @ W + my - Zy_te) ** 2))
        sst += float(np.sum((Zy_te - my) ** 2))
    if not sst > 0:
        return math.nan, math.nan
    return 1.0 - sse_p / sst, 1.0 - sse_a / sst


def _kappa(Zx: np.ndarray, Zy: np.ndarray, r: int) -> float:
    W = _affine(Zx - Zx.mean(0), Zy - Zy.mean(0), r)
    sv = np.linalg.svd(W, compute_uv=False)
    return float(sv[0] / sv[-1]) if sv[-1] > 0 else math.inf


def _dims(N: int, d: int, folds, pca_dim: int) -> tuple[int, int]:
    n_train_min = N - max(len(f) for f in folds)
    return int(max(1, min(pca_dim, n_train_min - 2, d))), int(max(1, min(pca_dim, N - 2, d)))


def crossmap_heldout(X: np.ndarray, Y: np.ndarray, pca_dim: int = 32, n_folds: int = 10,
                     seed: int = 0) -> dict:
    """Held-out fit of a cross-lingual map ``X -> Y``: orthogonal Procrustes vs affine.

    Parameters
    ----------
    X, Y : ndarray of shape (N, d)
        The same ``N`` problems in the source and target language.
    pca_dim : int
        Requested reduced dimension ``r``; the effective one is
        ``min(pca_dim, n_train_min - 2, d)`` (``n_train_min``: the smallest
        training fold), and ``min(pca_dim, N - 2, d)`` for ``kappa``.
    n_folds : int
        K of the K-fold split over problems (``min(n_folds, N)``, at least 2).
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    dict
        ``procrustes_r2_heldout``, ``affine_r2_heldout`` (pooled over folds:
        ``1 - sum SSE / sum SST``), ``affine_kappa`` (condition number of the
        affine map fitted on all problems), ``r`` (dimension used).

    Notes
    -----
    In each fold, each language's PCA basis (top ``r`` right singular vectors
    of its centred training rows) and both maps are fitted on the training
    problems only; the test problems are mapped and compared with their
    target coordinates ``(y - mu_y) V_y^T``. Procrustes: ``Yhat = (x - mx) R + my``
    with ``R = argmin ||Xc R - Yc||_F`` over orthogonal ``R``; affine:
    ``Yhat = (x - mx) W + my`` with least-squares ``W`` (ridge only when
    ``n_train <= r + 1``).
    """
    X = np.asarray(X, np.float64)
    Y = np.asarray(Y, np.float64)
    N, d = X.shape
    folds = _folds(N, n_folds, seed)
    r, r_all = _dims(N, d, folds, pca_dim)
    rp, ra = _fit_eval(_fold_coords(X, folds, r), _fold_coords(Y, folds, r), r)
    (mx, Vx), (my, Vy) = _pca_basis(X, r_all), _pca_basis(Y, r_all)
    kappa = _kappa((X - mx) @ Vx.T, (Y - my) @ Vy.T, r_all)
    return {"procrustes_r2_heldout": rp, "affine_r2_heldout": ra, "affine_kappa": kappa, "r": r}


def crossmap_table(P: PairedStates, pca_dim: int = 32, n_folds: int = 10, seed: int = 0,
                   pairs=None) -> pd.DataFrame:
    """:func:`crossmap_heldout` for every hidden index and ordered language pair.

    Each language's per-fold PCA coordinates are computed once per ``j`` and
    shared by all pairs (same numbers as calling :func:`crossmap_heldout`).

    Parameters
    ----------
    pairs : sequence of (src, tgt), optional
        Default: every ordered pair of languages.

    Returns
    -------
    DataFrame
        ``j``, ``layer`` (``j - 1``), ``src``, ``tgt``, ``procrustes_r2_heldout``,
        ``affine_r2_heldout``, ``affine_kappa``, ``r``.
    """
    pairs = list(pairs) if pairs is not None else list(permutations(P.langs, 2))
    used = list(dict.fromkeys(l for pr in pairs for l in pr))
    K, J, N, d = P.H.shape
    folds = _folds(N, n_folds, seed)
    r, r_all = _dims(N, d, folds, pca_dim)
    rows = []
    progress = Progress(J, "cross-map hidden index")
    for j in range(J):
        progress.update(j)
        X = {l: P.states(l)[j] for l in used}
        coords = {l: _fold_coords(X[l], folds, r) for l in used}
        full = {}
        for l in used:
            mu, V = _pca_basis(X[l], r_all)
            full[l] = (X[l] - mu) @ V.T
        for a, b in pairs:
            rp, ra = _fit_eval(coords[a], coords[b], r)
            rows.append({"j": j, "layer": j - 1, "src": a, "tgt": b, "procrustes_r2_heldout": rp,
                         "affine_r2_heldout": ra, "affine_kappa": _kappa(full[a], full[b], r_all), "r": r})
    return pd.DataFrame(rows)


#: Cross-lingual maps: held-out affine R^2 minus Procrustes R^2 at or above this -> "affine needed".
CROSSMAP_GAP = 0.05
#: ... and neither map reaching this held-out R^2 -> "no shared geometry".
CROSSMAP_MIN_R2 = 0.5
CROSSMAP_RULE = (f"held-out R^2: max(affine, Procrustes) < {CROSSMAP_MIN_R2:g}: 'no shared geometry'; else affine - "
                 f"Procrustes >= {CROSSMAP_GAP:g}: 'affine needed', else 'Procrustes sufficient'")


def crossmap_verdict(procrustes_r2: float, affine_r2: float, gap: float = CROSSMAP_GAP,
                     min_r2: float = CROSSMAP_MIN_R2) -> str:
    """Which cross-lingual map the held-out fit asks for (seed 003: low kappa -> Procrustes suffices).

    Returns
    -------
    str
        ``"no shared geometry"`` when neither held-out ``R^2`` reaches
        ``min_r2`` (or both are NaN); ``"affine needed"`` when
        ``affine_r2 - procrustes_r2 >= gap``; ``"Procrustes sufficient"`` otherwise.
    """
    best = np.nanmax([procrustes_r2, affine_r2]) if np.isfinite([procrustes_r2, affine_r2]).any() else math.nan
    if not best >= min_r2:
        return "no shared geometry"
    if np.isfinite(affine_r2) and (not np.isfinite(procrustes_r2) or affine_r2 - procrustes_r2 >= gap):
        return "affine needed"
    return "Procrustes sufficient"
