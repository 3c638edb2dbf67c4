"""Exp. D: is the map between languages inside Z a simple linear transform (a rotation)?

Data (seed 000, Experiment D)
-----------------------------
For decoder layer ``l`` (read at hidden index ``j = hidden_index(l, site)``,
:mod:`zhunt.models.site`: ``j = l`` at the default site ``input``, ``l + 1`` at
``output``; every row names its ``site`` and ``hidden_index``), mask dimension ``k`` and the
``N`` problems present in both languages, the Z-coordinates of the
mean-pooled prompt vectors (special tokens excluded,
:meth:`zhunt.data.store.ActivationStore.pooled`) are

    Z_zh = H_zh V_Z^T,  Z_en = H_en V_Z^T   in R^{N x k}

(the k non-zero components of ``P_Z h``). A direction names the map:
``en->zh`` (the seed's) predicts ``Y = Z_zh`` from ``X = Z_en``: ``Z_zh ≈ Z_en W``;
``zh->en`` the reverse.

Estimators (all fitted from sufficient statistics, see below)
-------------------------------------------------------------
* ``lstsq`` — minimum-norm least squares ``W = X^+ Y`` (the seed's closed form
  ``(X^T X)^-1 X^T Y`` when ``X^T X`` is invertible; with ``N <= k`` it is
  singular and the data are interpolated: in-sample R² = 1).
* ``ridge`` — ``W = (X^T X + alpha I)^-1 X^T Y``, ``alpha`` from a log grid
  ``alpha = s 10^{-6..2}`` (``s`` = mean eigenvalue of ``X^T X``) minimising the
  leave-one-out error itself (so its LOO R² is optimistic by this selection;
  the permutation null repeats the selection, which keeps its p-value fair).
* ``procrustes`` — orthogonal ``W = U V^T`` from ``svd(X^T Y) = U S V^T``
  (:func:`scipy.linalg.orthogonal_procrustes`; the rotation hypothesis). When
  ``X^T Y`` is rank-deficient (``N <= k``) the rotation is not unique on its
  null space; the SVD's completion is used and only LOO R² is meaningful.
* ``affine`` — ``Y ≈ X W + 1 b^T``: minimum-norm least squares on centred data,
  ``b = ȳ - x̄ W``.

``lstsq``, ``ridge`` and ``procrustes`` have no intercept (the seed's model).

Metrics
-------
* in-sample ``R² = 1 - ||Y - X W - 1 b^T||_F^2 / ||Y - 1 ȳ^T||_F^2`` (seed);
* **leave-one-out R²** (the honest one): each problem predicted by the map
  fitted on the others, ``R²_loo = 1 - sum_i ||y_i - ŷ_i^(-i)||^2 / ||Y - 1 ȳ^T||_F^2``;
* orthogonality error ``||W^T W - I_k||_F / k``;
* singular values of ``W`` and ``kappa = sigma_max / sigma_min`` (inf when
  ``sigma_min < 1e-12 sigma_max``);
* permutation null: the problem pairing is shuffled (``X_i`` with
  ``Y_{π(i)}``) ``B`` times and everything is refitted; ``p = (1 + #{R²_b >=
  R²}) / (B + 1)`` for in-sample and LOO R².

Rows with ``N <= k`` carry a warning in the table (``n_le_k``, ``warning``).

Token level (OT-aligned pairs)
------------------------------
Per problem, ``pi = ot.emd(a, b, C)`` with uniform marginals ``a = 1/T_zh``,
``b = 1/T_en`` and ``C[s, t] = ||h_zh[s] - h_en[t]||^2`` (full hidden
states, special tokens excluded). Each English token ``t`` is paired with
its transport-weighted Chinese source ``sum_s (pi[s, t] / b_t) h_zh[s]``;
both are mapped to Z-coordinates (the map is linear, so the barycentre of
the Z-coordinates is taken). This gives sum_i T_en^i samples instead of
``N``. LOO leaves out one problem's tokens. The permutation null aligns
``en_i`` with ``zh_{π(i)}`` by the same OT procedure, so it also measures how
much R² the alignment step creates by itself (the cost includes the
Z-coordinates).

Sufficient statistics
---------------------
Every fit and every held-out error uses only per-group sums
``A_g = X_g^T X_g``, ``C_g = X_g^T Y_g``, ``c_g = ||Y_g||^2``, ``x_g = X_g^T 1``,
``y_g = Y_g^T 1``, ``n_g`` (a group = one problem; one row at the pooled
level): the training statistics of a fold are the totals minus the held-out
group, and

    ||Y_g - X_g W - 1 b^T||^2 = c_g - 2 tr(W^T C_g) + tr(W^T A_g W)
                                - 2 b^T y_g + 2 b^T W^T x_g + n_g ||b||^2,

so all folds of all permutations are batched linear algebra on k x k matrices.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


__all__ = [
    "ESTIMATORS",
    "DIRECTIONS",
    "GroupStats",
    "fit_from_stats",
    "loo_r2",
    "evaluate",
    "bridge_metrics",
    "permutation_null",
    "ot_bary_maps",
    "token_pairs",
    "TOKEN_NULL_SEED_OFFSET",
    "pooled_null_permutations",
    "token_null_permutations",
    "bridge_layer",
    "bridge_frames",
    "ORTH_TOL",
    "BRIDGE_R2_OK",
    "BRIDGE_RULE",
    "bridge_verdict",
]

log = logging.getLogger("zhunt.experiments.bridge")

ESTIMATORS = ("lstsq", "ridge", "procrustes", "affine")
DIRECTIONS = ("zh->en", "en->zh")
_RTOL = 1e-10
_ALPHA_GRID = 10.0 ** np.linspace(-6, 2, 33)


# =========================================================================== statistics
@dataclass
class GroupStats:
    """Per-group sufficient statistics of paired samples ``(X, Y)`` (module notes).

    Attributes
    ----------
    A : ndarray of shape (G, k, k)
        ``X_g^T X_g``.
    C : ndarray of shape (G, k, k2)
        ``X_g^T Y_g``.
    c : ndarray of shape (G,)
        ``||Y_g||_F^2``.
    sx : ndarray of shape (G, k)
    sy : ndarray of shape (G, k2)
    n : ndarray of shape (G,)
    """

    A: np.ndarray
    C: np.ndarray
    c: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    n: np.ndarray

    @classmethod
    def from_rows(cls, X, Y, groups=None) -> "GroupStats":
        """Statistics of rows ``X`` (n, k), ``Y`` (n, k2); ``groups`` (n,) ints 0..G-1 (default: one row each)."""
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if groups is None:
            return cls(A=X[:, :, None] * X[:, None, :], C=X[:, :, None] * Y[:, None, :], c=(Y ** 2).sum(1),
                       sx=X.copy(), sy=Y.copy(), n=np.ones(len(X)))
        groups = np.asarray(groups)
        G = int(groups.max()) + 1
        out = [cls.from_rows(X[groups == g], Y[groups == g]).total() for g in range(G)]
        return cls.stack(out)

    @classmethod
    def stack(cls, items) -> "GroupStats":
        """Stack single-group statistics (each with G = 1) into one object."""
        return cls(*(np.concatenate([getattr(s, f) for s in items]) for f in ("A", "C", "c", "sx", "sy", "n")))

    def total(self) -> "GroupStats":
        """Sum over groups (G = 1)."""
        return GroupStats(*(getattr(self, f).sum(0, keepdims=True) for f in ("A", "C", "c", "sx", "sy", "n")))

    def loo_train(self) -> "GroupStats":
        """Training statistics of every leave-one-group-out fold (G folds)."""
        t = self.total()
        return GroupStats(*(getattr(t, f) - getattr(self, f) for f in ("A", "C", "c", "sx", "sy", "n")))

    def sst(self) -> float:
        """``||Y - 1 ȳ^T||_F^2`` over all rows."""
        t = self.total()
        return float(t.c[0] - (t.sy[0] ** 2).sum() / t.n[0])


def _pinvh(A: np.ndarray, rtol: float = _RTOL) -> np.ndarray:
    """Batched pseudo-inverse of symmetric PSD matrices (..., k, k)."""
    vals, vecs = np.linalg.eigh(A)
    cut = rtol * np.maximum(vals.max(-1, keepdims=True), 1e-300)
    inv = np.where(vals > cut, 1.0 / np.where(vals > cut, vals, 1.0), 0.0)
    return (vecs * inv[..., None, :]) @ np.swapaxes(vecs, -1, -2)


def fit_from_stats(est: str, S: GroupStats, alpha=None) -> tuple[np.ndarray, np.ndarray]:
    """Fit one estimator on each "group" of ``S`` (typically training folds).

    Parameters
    ----------
    est : {"lstsq", "ridge", "procrustes", "affine"}
    S : GroupStats
        ``G`` sets of training statistics.
    alpha : float or ndarray of shape (G,)
        Ridge penalty (``ridge`` only).

    Returns
    -------
    W : ndarray of shape (G, k, k2)
    b : ndarray of shape (G, k2)
        Zero except for ``affine``.
    """
    G, k, k2 = S.C.shape
    b = np.zeros((G, k2))
    if est == "lstsq":
        W = _pinvh(S.A) @ S.C
    elif est == "ridge":
        al = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (G,))
        W = np.linalg.solve(S.A + al[:, None, None] * np.eye(k)[None], S.C)
    elif est == "procrustes":
        U, _, Vt = np.linalg.svd(S.C)
        W = U @ Vt if k == k2 else U[:, :, :min(k, k2)] @ Vt[:, :min(k, k2), :]
    elif est == "affine":
        n = np.maximum(S.n, 1e-300)[:, None]
        xm, ym = S.sx / n, S.sy / n
        Ac = S.A - n[:, :, None] * xm[:, :, None] * xm[:, None, :]
        Cc = S.C - n[:, :, None] * xm[:, :, None] * ym[:, None, :]
        W = _pinvh(Ac) @ Cc
        b = ym - np.einsum("gk,gkl->gl", xm, W)
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, not {est!r}")
    return W, b


def _sse(S: GroupStats, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared error of ``Y ≈ X W + b`` on each group of ``S`` (module equation), shape (G,)."""
    t1 = (W * S.C).sum((1, 2))
    t2 = (W * (S.A @ W)).sum((1, 2))
    t3 = (b * S.sy).sum(1)
    t4 = (b * (S.sx[:, None, :] @ W)[:, 0, :]).sum(1)
    return S.c - 2 * t1 + t2 - 2 * t3 + 2 * t4 + S.n * (b ** 2).sum(1)


def _ridge_loo_path(S: GroupStats, alphas: np.ndarray) -> np.ndarray:
    """LOO squared error summed over folds for every alpha, shape (len(alphas),).

    In the eigenbasis ``A_train = Q diag(lam) Q^T`` of each fold, ``W(alpha) = Q diag(f) M`` with
    ``f = 1/(lam + alpha)`` and ``M = Q^T C_train``; the held-out error is
    ``c - 2 sum_r f_r p_r + f^T P f`` with ``p_r = (M ∘ Q^T C_test)_r.`` and
    ``P = (Q^T A_test Q) ∘ (M M^T)``, so each alpha costs O(G k^2).
    """
    tr = S.loo_train()
    vals, Q = np.linalg.eigh(tr.A)                         # (G, k), (G, k, k)
    Qt = np.swapaxes(Q, -1, -2)
    M = Qt @ tr.C                                          # (G, k, k2)
    p = (M * (Qt @ S.C)).sum(-1)                           # (G, k)
    P = (Qt @ S.A @ Q) * (M @ np.swapaxes(M, -1, -2))      # (G, k, k)
    out = np.empty(len(alphas))
    for i, a in enumerate(alphas):
        f = 1.0 / (vals + a)
        out[i] = float((S.c - 2 * (f * p).sum(1) + np.einsum("gr,grs,gs->g", f, P, f, optimize=True)).sum())
    return out


def _alpha_grid(S: GroupStats) -> np.ndarray:
    t = S.total()
    s = float(np.trace(t.A[0])) / t.A.shape[1]
    return max(s, 1e-300) * _ALPHA_GRID


def loo_r2(est: str, S: GroupStats) -> tuple[float, float]:
    """Leave-one-group-out R² of an estimator; returns ``(r2_loo, alpha)`` (alpha NaN unless ridge)."""
    sst = S.sst()
    alpha = math.nan
    if est == "ridge":
        grid = _alpha_grid(S)
        path = _ridge_loo_path(S, grid)
        i = int(np.argmin(path))
        return 1.0 - path[i] / sst, float(grid[i])
    W, b = fit_from_stats(est, S.loo_train())
    return 1.0 - float(_sse(S, W, b).sum()) / sst, alpha


def evaluate(est: str, S: GroupStats) -> dict:
    """In-sample fit and LOO R² of one estimator.

    Returns
    -------
    dict
        ``W`` (k, k2), ``b`` (k2,), ``r2_in``, ``r2_loo``, ``alpha``.
    """
    r2_loo, alpha = loo_r2(est, S)
    W, b = fit_from_stats(est, S.total(), alpha if est == "ridge" else None)
    r2_in = 1.0 - float(_sse(S.total(), W, b)[0]) / S.sst()
    return dict(W=W[0], b=b[0], r2_in=r2_in, r2_loo=r2_loo, alpha=alpha)


def bridge_metrics(W: np.ndarray) -> dict:
    """Orthogonality error ``||W^T W - I||_F / k``, singular values and condition number of ``W`` (k, k)."""
    W = np.asarray(W, dtype=np.float64)
    k = W.shape[1]
    sv = np.linalg.svd(W, compute_uv=False)
    kappa = float(sv[0] / sv[-1]) if sv[-1] > 1e-12 * max(sv[0], 1e-300) else math.inf
    return dict(orth_err=float(np.linalg.norm(W.T @ W - np.eye(k)) / k), sv=sv, sv_max=float(sv[0]),
                sv_min=float(sv[-1]), kappa=kappa)


#: Seed 000, transformative: the bridge counts as "approximately orthogonal" when the
#: minimum-norm least-squares map W has ``||WᵀW − I||_F / k`` at most this ...
ORTH_TOL = 0.1
#: ... and its leave-one-out R² is at least this (an orthogonal map that predicts nothing
#: is not a rotation between languages).
BRIDGE_R2_OK = 0.5
BRIDGE_RULE = (f"'approximately orthogonal' = the lstsq map's orthogonality error ||W^T W - I||_F / k <= {ORTH_TOL:g} "
               f"and its leave-one-out R^2 >= {BRIDGE_R2_OK:g}; else 'not orthogonal'")


def bridge_verdict(orth_err: float, r2_loo: float) -> str:
    """Seed 000's "bridge approximately orthogonal" (:data:`BRIDGE_RULE`) from the lstsq map's
    orthogonality error (:func:`bridge_metrics`) and leave-one-out R² (:func:`loo_r2`).

    Returns
    -------
    str
        ``"approximately orthogonal"``, ``"not orthogonal"``, or ``"not measured"`` when either is NaN.
    """
    if not (np.isfinite(orth_err) and np.isfinite(r2_loo)):
        return "not measured"
    return "approximately orthogonal" if orth_err <= ORTH_TOL and r2_loo >= BRIDGE_R2_OK else "not orthogonal"


def permutation_null(est: str, stats_fn, n: int, n_permutations: int, seed: int) -> np.ndarray:
    """R² (in-sample, LOO) of ``est`` under shuffled pairings, shape (B, 2).

    Parameters
    ----------
    est : str
    stats_fn : callable
        ``stats_fn(perm) -> GroupStats`` for a pairing ``X_i <-> Y_{perm[i]}``.
    n : int
        Number of problems.
    n_permutations : int
    seed : int
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n_permutations, 2))
    for b in range(n_permutations):
        r = evaluate(est, stats_fn(rng.permutation(n)))
        out[b] = r["r2_in"], r["r2_loo"]
    return out


# =========================================================================== token level
def ot_bary_maps(zh_tokens, en_tokens, pairs) -> dict:
    """Barycentric OT maps for problem pairs: ``M[t, s] = pi[s, t] / b_t`` (T_en, T_zh).

    ``pi = ot.emd(1/T_zh, 1/T_en, C)``, ``C[s, t] = ||h_zh[s] - h_en[t]||^2``;
    ``M @ z_zh`` is the transport-weighted Chinese source of each English token.

    Parameters
    ----------
    zh_tokens, en_tokens : sequence of ndarray (T, d)
        Hidden states (special tokens excluded) per problem.
    pairs : iterable of (i, j)
        English prompt ``i`` aligned with Chinese prompt ``j``.

    Returns
    -------
    dict ``{(i, j): M}``.
    """
    import ot

    out = {}
    for i, j in pairs:
        if (i, j) in out:
            continue
        zh = np.asarray(zh_tokens[j], dtype=np.float64)
        en = np.asarray(en_tokens[i], dtype=np.float64)
        C = (zh ** 2).sum(1)[:, None] + (en ** 2).sum(1)[None, :] - 2 * zh @ en.T
        C = np.clip(C, 0, None)
        C /= max(C.max(), 1e-300)   # scale only: the optimal plan is unchanged, emd is better conditioned
        a = np.full(len(zh), 1.0 / len(zh))
        b = np.full(len(en), 1.0 / len(en))
        pi = ot.emd(a, b, C, numItermax=1_000_000)
        out[(i, j)] = (pi / b[None, :]).T
    return out


def token_pairs(z_zh, z_en, maps, perm=None, direction: str = "en->zh") -> GroupStats:
    """Token-level statistics: English tokens paired with their OT-barycentric Chinese source.

    Parameters
    ----------
    z_zh, z_en : sequence of ndarray (T, k)
        Z-coordinates of the tokens of each problem.
    maps : dict
        :func:`ot_bary_maps` output containing ``(i, perm[i])`` for every ``i``.
    perm : ndarray of shape (N,), optional
        Pair ``en_i`` with ``zh_{perm[i]}`` (default identity).
    direction : {"en->zh", "zh->en"}

    Returns
    -------
    GroupStats with one group per problem.
    """
    N = len(z_en)
    perm = np.arange(N) if perm is None else np.asarray(perm)
    items = []
    for i in range(N):
        xe = np.asarray(z_en[i], dtype=np.float64)
        xz = maps[(i, int(perm[i]))] @ np.asarray(z_zh[int(perm[i])], dtype=np.float64)
        X, Y = (xe, xz) if direction == "en->zh" else (xz, xe)
        items.append(GroupStats.from_rows(X, Y).total())
    return GroupStats.stack(items)


# =========================================================================== one layer
#: Offset of the token-level null's seed: its pairings come from ``default_rng(seed + 7919)``, one
#: stream per (site, layer), drawn apart from the pooled-level ones (seeded ``(seed, layer, k, direction)``).
TOKEN_NULL_SEED_OFFSET = 7919


def pooled_null_permutations(n: int, n_permutations: int, seed: int, layer: int, k: int,
                             direction: str) -> list[np.ndarray]:
    """The shuffled pairings of the pooled-level null of one (layer, k, direction): ``n_permutations``
    permutations of ``range(n)`` from ``default_rng([seed, layer, k, index of direction])``."""
    rng = np.random.default_rng([seed, int(layer), int(k), DIRECTIONS.index(direction)])
    return [rng.permutation(n) for _ in range(n_permutations)]


def token_null_permutations(n: int, n_permutations: int, seed: int) -> list[np.ndarray]:
    """The shuffled pairings of the token-level null (shared by every k and direction of a layer):
    ``default_rng(seed + TOKEN_NULL_SEED_OFFSET)``."""
    rng = np.random.default_rng(seed + TOKEN_NULL_SEED_OFFSET)
    return [rng.permutation(n) for _ in range(n_permutations)]


def bridge_layer(Hz: np.ndarray, He: np.ndarray, masks: dict, tokens=None, *, model: str, layer: int,
                 n_permutations: int = 200, n_permutations_token: int | None = None,
                 seed: int = 0) -> tuple[list, list, list]:
    """Every bridge fit of one layer: each k, direction, level (pooled, token) and estimator.

    Parameters
    ----------
    Hz, He : ndarray of shape (N, d)
        Mean-pooled Chinese and English prompt vectors, row ``i`` of both the same problem.
    masks : dict
        ``{k: V_Z}`` with ``V_Z`` of shape (k, d) (orthonormal rows).
    tokens : (list of ndarray (T_i, d), list of ndarray (T_i, d)), optional
        Chinese and English token states of each problem (special tokens excluded); ``None``
        skips the OT-aligned token level.
    model : str
    layer : int
        Decoder layer (recorded in the rows, and seeds the pooled null).
    n_permutations, n_permutations_token : int
        Shuffled pairings of the pooled and token-level nulls (token default: ``n_permutations``).
    seed : int

    Returns
    -------
    rows, spectra, nulls : list of dict
        Table rows (one per k, direction, level, estimator), singular values of every fitted ``W``
        and every permutation's R² (in-sample and LOO).
    """
    N = len(Hz)
    n_perm_tok = n_permutations if n_permutations_token is None else int(n_permutations_token)
    maps = tperms = None
    if tokens is not None:
        tz, te = tokens
        tperms = token_null_permutations(N, n_perm_tok, seed)
        need = {(i, i) for i in range(N)} | {(i, int(p[i])) for p in tperms for i in range(N)}
        maps = ot_bary_maps(tz, te, sorted(need))
    rows, spectra, nulls = [], [], []
    for k, V in masks.items():
        Zz, Ze = Hz @ V.T, He @ V.T
        for direction in DIRECTIONS:
            X, Y = (Zz, Ze) if direction == "zh->en" else (Ze, Zz)
            perms = pooled_null_permutations(N, n_permutations, seed, layer, k, direction)
            _emit(rows, spectra, nulls, model, layer, k, direction, "pooled", GroupStats.from_rows(X, Y),
                  lambda perm, X=X, Y=Y: GroupStats.from_rows(X, Y[perm]), perms, N, N)
            if maps is not None:
                zz = [t @ V.T for t in tokens[0]]
                ze = [t @ V.T for t in tokens[1]]
                St = token_pairs(zz, ze, maps, None, direction)
                _emit(rows, spectra, nulls, model, layer, k, direction, "token", St,
                      lambda perm, zz=zz, ze=ze, direction=direction: token_pairs(zz, ze, maps, perm, direction),
                      tperms, N, int(St.n.sum()))
    return rows, spectra, nulls


def bridge_frames(rows, spectra, nulls) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three bridge tables (main, spectra, null) from the row dicts of :func:`bridge_layer` (each
    carrying ``site`` and ``hidden_index``), with ``site`` and ``hidden_index`` as the leading columns."""
    def front(df):
        return df[["site", "hidden_index"] + [c for c in df.columns if c not in ("site", "hidden_index")]]

    return front(pd.DataFrame(rows)), front(pd.DataFrame(spectra)), front(pd.DataFrame(nulls))


def _emit(rows, spectra, nulls, model, layer, k, direction, level, S, stats_fn, perms, N, n_samples):
    """Evaluate all estimators on ``S`` and under the pairings ``perms``; append table rows."""
    B = len(perms)
    n_le_k = N <= k
    warning = (f"N={N} <= k={k}: normal equations singular, in-sample R2 = 1 by interpolation"
               if n_le_k and level == "pooled" else (f"N={N} <= k={k}" if n_le_k else ""))
    if n_le_k:
        log.warning("bridge L%d k=%d %s %s: %s", layer, k, direction, level, warning)
    perm_stats = [stats_fn(p) for p in perms]  # shared by all estimators
    for est in ESTIMATORS:
        r = evaluate(est, S)
        m = bridge_metrics(r["W"])
        null = np.array([[e["r2_in"], e["r2_loo"]] for e in (evaluate(est, Sp) for Sp in perm_stats)]) \
            if B else np.empty((0, 2))
        p_in = float((1 + (null[:, 0] >= r["r2_in"]).sum()) / (B + 1)) if B else math.nan
        p_loo = float((1 + (null[:, 1] >= r["r2_loo"]).sum()) / (B + 1)) if B else math.nan
        rows.append(dict(
            model=model, layer=int(layer), k=int(k), direction=direction, level=level, estimator=est,
            n_problems=N, n_samples=int(n_samples), n_le_k=n_le_k, warning=warning,
            r2_in=r["r2_in"], r2_loo=r["r2_loo"], orth_err=m["orth_err"], sv_max=m["sv_max"],
            sv_min=m["sv_min"], kappa=m["kappa"], alpha=r["alpha"],
            r2_in_null_mean=float(null[:, 0].mean()) if B else math.nan,
            r2_in_null_q95=float(np.quantile(null[:, 0], 0.95)) if B else math.nan, p_in=p_in,
            r2_loo_null_mean=float(null[:, 1].mean()) if B else math.nan,
            r2_loo_null_q95=float(np.quantile(null[:, 1], 0.95)) if B else math.nan, p_loo=p_loo,
            n_permutations=int(B)))
        key = dict(layer=int(layer), k=int(k), direction=direction, level=level, estimator=est)
        spectra.extend(dict(key, index=i, sigma=float(s)) for i, s in enumerate(m["sv"]))
        nulls.extend(dict(key, permutation=b, r2_in=float(v[0]), r2_loo=float(v[1])) for b, v in enumerate(null))
