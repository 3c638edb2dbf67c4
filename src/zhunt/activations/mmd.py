"""ARD-RBF kernels and the unbiased MMD² estimator, batched over many token clouds (Exp. C).

Definitions (seed 000, Experiment C; fixed once here)
-----------------------------------------------------
ARD-RBF kernel on R^d with lengthscales ``ell`` (d,), parameterised by
``log_ell`` so that every ``ell_j > 0``:

    k_ell(x, y) = exp(-1/2 * sum_j (x_j - y_j)^2 / ell_j^2).

Unbiased MMD² between samples ``X = {x_s}`` (n points) and ``Y = {y_t}``
(m points), ``n, m >= 2``, ``n != m`` allowed (Gretton et al. 2012, eq. 3):

    MMD²_u = 1/(n(n-1)) sum_{s != s'} k(x_s, x_s')
           + 1/(m(m-1)) sum_{t != t'} k(y_t, y_t')
           - 2/(n m)    sum_{s, t}     k(x_s, y_t).

Its expectation is the population MMD², so it is zero in expectation (and can
be negative) when both samples come from one distribution.

Numerics: every sum is taken over ``k - 1 = expm1(-D/2)`` instead of ``k``.
The three weights sum to zero (1 + 1 - 2), so the result is unchanged, but
when all lengthscales are large (every ``k`` close to 1, the regime the
seed's objective drives to) the difference is no longer a cancellation of
numbers near 1. Squared distances use ``|a|^2 + |b|^2 - 2 a.b`` on the
ARD weights ``w = ell^-2`` (one matrix product per block, the FLOP floor)
and are clipped at 0.

Batching
--------
:func:`mmd2_batched` takes clouds padded to a common length with boolean
masks: ``B`` problems in one call. :class:`CloudSet` is the fast path used
by the ARD optimiser: all tokens of all clouds live in one flat ``(R, d)``
tensor; a :class:`PairPlan` groups the requested cloud pairs into a few
length-sorted buckets, each padded only to its own longest cloud, so that a
whole objective (self-similarity of every cloud, every language pair, every
contrast pair) is a handful of batched matrix products — no Python loop over
problems, tokens or dimensions. Everything runs on the device of the input
tensors (CUDA when present, see :func:`resolve_device`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "resolve_device",
    "ard_sqdist",
    "ard_kernel",
    "mmd2_unbiased",
    "pad_clouds",
    "mmd2_batched",
    "PairPlan",
    "CloudSet",
    "permutation_mmd2",
]

#: Default budget of gathered elements (points x d) per bucket: 2^23 floats = 32 MiB in float32.
DEFAULT_BLOCK_ELEMS = 2 ** 23


def resolve_device(device=None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _sqdist(Xs: torch.Tensor, Ys: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows, batched: (..., n, d), (..., m, d) -> (..., n, m)."""
    xx = (Xs * Xs).sum(-1)
    yy = (Ys * Ys).sum(-1)
    G = Xs @ Ys.transpose(-1, -2)
    return (xx[..., :, None] + yy[..., None, :] - 2.0 * G).clamp_min(0.0)


def ard_sqdist(X: torch.Tensor, Y: torch.Tensor, log_ell: torch.Tensor) -> torch.Tensor:
    """ARD-weighted squared distances ``D[s, t] = sum_j (x_sj - y_tj)^2 / ell_j^2``.

    Parameters
    ----------
    X : tensor of shape (..., n, d)
    Y : tensor of shape (..., m, d)
    log_ell : tensor of shape (d,)
        Log lengthscales.

    Returns
    -------
    tensor of shape (..., n, m), non-negative.
    """
    inv = torch.exp(-log_ell)
    return _sqdist(X * inv, Y * inv)


def ard_kernel(X: torch.Tensor, Y: torch.Tensor, log_ell: torch.Tensor) -> torch.Tensor:
    """ARD-RBF kernel matrix ``K[s, t] = exp(-D[s, t] / 2)``, shape (..., n, m); see :func:`ard_sqdist`."""
    return torch.exp(-0.5 * ard_sqdist(X, Y, log_ell))


def mmd2_unbiased(X: torch.Tensor, Y: torch.Tensor, log_ell: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² between two point clouds under the ARD-RBF kernel (module equation).

    Parameters
    ----------
    X : tensor of shape (n, d), n >= 2
    Y : tensor of shape (m, d), m >= 2
    log_ell : tensor of shape (d,)

    Returns
    -------
    0-d tensor (differentiable in all inputs).
    """
    n, m = X.shape[0], Y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"unbiased MMD² needs at least 2 points per sample (got {n} and {m})")
    inv = torch.exp(-log_ell)
    Xs, Ys = X * inv, Y * inv
    Exx = torch.expm1(-0.5 * _sqdist(Xs, Xs))
    Eyy = torch.expm1(-0.5 * _sqdist(Ys, Ys))
    Exy = torch.expm1(-0.5 * _sqdist(Xs, Ys))
    sxx = (Exx.sum() - Exx.diagonal().sum()) / (n * (n - 1))
    syy = (Eyy.sum() - Eyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2.0 * Exy.sum() / (n * m)


def pad_clouds(clouds, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length clouds into one zero-padded tensor with a mask.

    Parameters
    ----------
    clouds : sequence of array-like of shape (T_b, d)
    device, dtype
        Of the result.

    Returns
    -------
    X : tensor of shape (B, T_max, d)
        ``X[b, :T_b] = clouds[b]``, zeros after.
    mask : bool tensor of shape (B, T_max)
        True on real points.
    """
    lens = [len(c) for c in clouds]
    d = int(np.shape(clouds[0])[1])
    X = torch.zeros(len(clouds), max(lens), d, dtype=dtype)
    mask = torch.zeros(len(clouds), max(lens), dtype=torch.bool)
    for b, c in enumerate(clouds):
        X[b, :lens[b]] = torch.as_tensor(np.asarray(c), dtype=dtype)
        mask[b, :lens[b]] = True
    dev = resolve_device(device)
    return X.to(dev), mask.to(dev)


def _masked_block_sums(Xa, ma, Xb, mb, exclude_diag: bool) -> torch.Tensor:
    """``sum_{s,t} ma_s mb_t (k(a_s, b_t) - 1)`` per batch entry; inputs already scaled by 1/ell."""
    E = torch.expm1(-0.5 * _sqdist(Xa, Xb)) * (ma[:, :, None] * mb[:, None, :])
    s = E.sum((1, 2))
    if exclude_diag:
        s = s - torch.diagonal(E, dim1=1, dim2=2).sum(-1)
    return s


def mmd2_batched(X: torch.Tensor, mask_x: torch.Tensor, Y: torch.Tensor, mask_y: torch.Tensor,
                 log_ell: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² of ``B`` cloud pairs in one call (padded inputs from :func:`pad_clouds`).

    Parameters
    ----------
    X : tensor of shape (B, Tx, d)
    mask_x : bool tensor of shape (B, Tx)
        At least 2 True entries per row.
    Y : tensor of shape (B, Ty, d)
    mask_y : bool tensor of shape (B, Ty)
    log_ell : tensor of shape (d,)

    Returns
    -------
    tensor of shape (B,)
        ``MMD²_u(X[b][mask_x[b]], Y[b][mask_y[b]])`` for every ``b``.
    """
    inv = torch.exp(-log_ell)
    Xs, Ys = X * inv, Y * inv
    mx, my = mask_x.to(Xs.dtype), mask_y.to(Ys.dtype)
    n, m = mx.sum(1), my.sum(1)
    if bool((n < 2).any()) or bool((m < 2).any()):
        raise ValueError("unbiased MMD² needs at least 2 points per cloud")
    sxx = _masked_block_sums(Xs, mx, Xs, mx, True)
    syy = _masked_block_sums(Ys, my, Ys, my, True)
    sxy = _masked_block_sums(Xs, mx, Ys, my, False)
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


# =========================================================================== packed fast path
@dataclass
class _Bucket:
    a_idx: torch.Tensor   # (G_c, Ta) long rows of the groups' first clouds in the flat point tensor (padding -> 0)
    a_mask: torch.Tensor  # (G_c, Ta) float, 1 on real points
    b_idx: torch.Tensor   # (G_c, Tb) rows of the groups' partner clouds, stacked one after the other
    b_mask: torch.Tensor  # (G_c, Tb)
    b_slot: torch.Tensor  # (G_c, Tb) long: which partner of the group a stacked row belongs to (padding -> 0)
    pos: torch.Tensor     # (S,) long: caller position of every (group, slot) in use, row-major
    used: torch.Tensor    # (G_c * K_c,) bool: the (group, slot) entries in use
    n_slots: int          # K_c: the most partners of a group in this bucket
    Xa: torch.Tensor      # (G_c, Ta, d) the unscaled points (static: no gather in the hot path)
    Xb: torch.Tensor      # (G_c, Tb, d) (the same tensor as Xa for self blocks)


@dataclass
class PairPlan:
    """Length-bucketed plan for kernel block sums over a list of cloud pairs.

    Pairs that share their first cloud ``a`` form one *group*: ``a``'s points
    meet its partners' points stacked into one matrix, so ``a`` is scaled by
    ``w`` once per group instead of once per pair (the contrast plan of the
    well-posed objective has 16 partners per cloud), and one Gram product
    covers the group.

    Attributes
    ----------
    pairs : ndarray of shape (P, 2)
        Cloud indices ``(a, b)`` of each pair, in the caller's order.
    same : bool
        Self blocks (``a == b``): the diagonal ``s = s'`` is excluded.
    buckets : list
        Padded point tensors, indices and masks per bucket (groups sorted by length).
    flops_forward : float
        ``sum_p 2 n_a n_b d``: the Gram products without padding.
    padded_flops_forward : float
        The same with bucket padding (what the matrix products actually do).
    """

    pairs: np.ndarray
    same: bool
    buckets: list = field(default_factory=list)
    flops_forward: float = 0.0
    padded_flops_forward: float = 0.0


class CloudSet:
    """Many point clouds in one flat tensor, with batched kernel block sums and MMD².

    The kernel enters only through ``w = ell^-2`` (d,):
    ``D[s, t] = |a_s|_w^2 + |b_t|_w^2 - 2 (a_s * w) . b_t`` with ``|x|_w^2 = x^2 . w``.
    Each plan keeps its padded, *unscaled* point tensors, so a step costs one
    elementwise product per group of pairs sharing a first cloud, one batched
    Gram product and one ``expm1`` per bucket, and its backward pass one more
    batched product (the points need no gradient) — two Gram products per
    block in all, the FLOP floor of an exact kernel evaluation with gradient.

    Parameters
    ----------
    clouds : sequence of array-like of shape (T_c, d)
        ``C`` clouds, each with at least 2 points.
    device : str or torch.device, optional
        Default: CUDA when available (:func:`resolve_device`).
    dtype : torch.dtype
        Computation dtype (float32 default; float64 for reference checks).
    block_elems : int
        Elements per bucket (padded points x d plus kernel entries); bounds the
        size of one batched product.
    max_pad : float
        A bucket takes groups whose first cloud, and whose stacked partners,
        are at most ``1 + max_pad`` times as long as those of its first
        (shortest) group.

    Attributes
    ----------
    X : tensor of shape (R, d)
        All points, cloud after cloud.
    offsets, lengths : ndarray of shape (C,)
        Rows of cloud ``c`` are ``offsets[c] : offsets[c] + lengths[c]``.
    self_plan : PairPlan
        The self blocks of every cloud (used by :meth:`mmd2`).
    """

    def __init__(self, clouds, device=None, dtype=torch.float32, block_elems: int = DEFAULT_BLOCK_ELEMS,
                 max_pad: float = 0.15):
        self.device = resolve_device(device)
        self.dtype = dtype
        self.max_pad = float(max_pad)
        arrs = [np.asarray(c, dtype=np.float64 if dtype == torch.float64 else np.float32) for c in clouds]
        if len(arrs) == 0:
            raise ValueError("CloudSet needs at least one cloud")
        self.lengths = np.array([len(a) for a in arrs], dtype=np.int64)
        if (self.lengths < 2).any():
            raise ValueError(f"every cloud needs at least 2 points (cloud {int(np.argmin(self.lengths))} "
                             f"has {int(self.lengths.min())})")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.d = int(arrs[0].shape[1])
        self.X = torch.as_tensor(np.concatenate(arrs, axis=0), dtype=dtype).to(self.device)
        self.X2 = self.X * self.X
        self.block_elems = int(block_elems)
        self.self_plan = self.plan(np.stack([np.arange(len(arrs))] * 2, axis=1), same=True)

    @property
    def n_clouds(self) -> int:
        """``C``."""
        return len(self.lengths)

    def _stack(self, groups, T: int):
        """Rows, mask, partner slot and points of each group's clouds stacked and padded to ``T``."""
        idx = np.zeros((len(groups), int(T)), dtype=np.int64)
        slot = np.zeros((len(groups), int(T)), dtype=np.int64)
        valid = np.zeros((len(groups), int(T)), dtype=bool)
        for g, clouds in enumerate(groups):
            rows = [np.arange(self.offsets[c], self.offsets[c] + self.lengths[c]) for c in clouds]
            n = sum(len(r) for r in rows)
            idx[g, :n] = np.concatenate(rows)
            slot[g, :n] = np.repeat(np.arange(len(clouds)), [len(r) for r in rows])
            valid[g, :n] = True
        idx, slot = torch.as_tensor(idx).to(self.device), torch.as_tensor(slot).to(self.device)
        mask = torch.as_tensor(valid).to(self.dtype).to(self.device)
        return idx, mask, slot, self.X[idx] * mask[:, :, None]

    def plan(self, pairs, same: bool = False) -> PairPlan:
        """Build the plan for cloud pairs ``pairs`` (P, 2); ``same`` for self blocks (``a == b``)."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if same and (pairs[:, 0] != pairs[:, 1]).any():
            raise ValueError("a self plan needs pairs (a, a)")
        la, lb = self.lengths[pairs[:, 0]], self.lengths[pairs[:, 1]]
        flops = float((2.0 * la * lb * self.d).sum())
        # groups: the pairs of each first cloud (one pair per group in a self plan)
        if same:
            firsts, members = pairs[:, 0], [[p] for p in range(len(pairs))]
        else:
            firsts, inverse = np.unique(pairs[:, 0], return_inverse=True)
            members = [[] for _ in firsts]
            for p, g in enumerate(inverse.ravel()):
                members[g].append(p)
        ta_g = self.lengths[firsts]
        tb_g = np.array([lb[m].sum() for m in members], dtype=np.int64)
        # Buckets keep padding low: one partner per group -> sort by the longer side and bound it;
        # several partners (stacks many times longer than the first cloud) -> sort by the first
        # cloud's length and bound both sides.
        single = all(len(m) == 1 for m in members)
        srt = (np.lexsort((np.minimum(ta_g, tb_g), np.maximum(ta_g, tb_g))) if single
               else np.lexsort((tb_g, ta_g)))
        buckets, padded, start = [], 0.0, 0
        while start < len(srt):
            stop = start + 1
            ta, tb, k = ta_g[srt[start]], tb_g[srt[start]], len(members[srt[start]])
            lim_a, lim_b = ta * (1.0 + self.max_pad), tb * (1.0 + self.max_pad)
            lim = max(ta, tb) * (1.0 + self.max_pad)
            while stop < len(srt):
                ta2, tb2 = max(ta, ta_g[srt[stop]]), max(tb, tb_g[srt[stop]])
                if (stop + 1 - start) * ((ta2 + tb2) * self.d + ta2 * tb2) > self.block_elems:
                    break
                if (max(ta2, tb2) > lim) if single else (ta2 > lim_a or tb2 > lim_b):
                    break
                ta, tb, k, stop = ta2, tb2, max(k, len(members[srt[stop]])), stop + 1
            sel = srt[start:stop]
            ai, am, _, Xa = self._stack([[firsts[g]] for g in sel], ta)
            if same:
                bi, bm, bs, Xb = ai, am, torch.zeros_like(ai), Xa
            else:
                bi, bm, bs, Xb = self._stack([pairs[members[g], 1] for g in sel], tb)
            used = np.zeros((len(sel), k), dtype=bool)
            pos = np.zeros((len(sel), k), dtype=np.int64)
            for r, g in enumerate(sel):
                used[r, :len(members[g])] = True
                pos[r, :len(members[g])] = members[g]
            buckets.append(_Bucket(ai, am, bi, bm, bs, torch.as_tensor(pos[used]).to(self.device),
                                   torch.as_tensor(used.ravel()).to(self.device), int(k), Xa, Xb))
            padded += 2.0 * len(sel) * ta * tb * self.d
            start = stop
        return PairPlan(pairs=pairs, same=bool(same), buckets=buckets, flops_forward=flops,
                        padded_flops_forward=padded)

    def prepare(self, log_ell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step quantities ``(w, norms)``: ``w = exp(-2 log_ell)`` (d,), ``norms = X^2 w`` (R,)."""
        w = torch.exp(-2.0 * log_ell)
        return w, self.X2 @ w

    def block_sums(self, state, plan: PairPlan) -> torch.Tensor:
        """``sum_{s,t} (k(a_s, b_t) - 1)`` per pair of ``plan`` (diagonal excluded when ``plan.same``).

        Parameters
        ----------
        state : tuple
            :meth:`prepare` output.
        plan : PairPlan

        Returns
        -------
        tensor of shape (P,) in the order of ``plan.pairs``.
        """
        w, nrm = state
        vals, where = [], []
        for b in plan.buckets:
            G = torch.bmm(b.Xa * w, b.Xb.transpose(1, 2))
            D = (nrm[b.a_idx][:, :, None] + nrm[b.b_idx][:, None, :] - 2.0 * G).clamp_min(0.0)
            E = torch.expm1(-0.5 * D) * (b.a_mask[:, :, None] * b.b_mask[:, None, :])
            if b.n_slots == 1:
                s = E.sum((1, 2))
                if plan.same:
                    s = s - torch.diagonal(E, dim1=1, dim2=2).sum(-1)
            else:                                                             # per partner of the group
                cols = E.sum(1)                                               # (G_c, Tb)
                s = cols.new_zeros(cols.shape[0], b.n_slots).scatter_add(1, b.b_slot, cols).reshape(-1)[b.used]
            vals.append(s)
            where.append(b.pos)
        out = torch.cat(vals)
        return out.new_zeros(len(plan.pairs)).index_copy(0, torch.cat(where), out)

    def mmd2(self, log_ell: torch.Tensor, plan: PairPlan, self_sums: torch.Tensor | None = None,
             state=None) -> torch.Tensor:
        """Unbiased MMD² of every pair of ``plan`` (a cross plan).

        Parameters
        ----------
        log_ell : tensor of shape (d,)
        plan : PairPlan
        self_sums : tensor of shape (C,), optional
            ``block_sums(state, self.self_plan)``, to share between several plans in one step.
        state : tuple, optional
            ``prepare(log_ell)``, likewise.

        Returns
        -------
        tensor of shape (P,)
        """
        if state is None:
            state = self.prepare(log_ell)
        if self_sums is None:
            self_sums = self.block_sums(state, self.self_plan)
        cross = self.block_sums(state, plan)
        a = torch.as_tensor(plan.pairs[:, 0], device=self.device)
        b = torch.as_tensor(plan.pairs[:, 1], device=self.device)
        n = torch.as_tensor(self.lengths, dtype=self.dtype, device=self.device)
        na, nb = n[a], n[b]
        return self_sums[a] / (na * (na - 1)) + self_sums[b] / (nb * (nb - 1)) - 2.0 * cross / (na * nb)


# =========================================================================== permutation test
def permutation_mmd2(clouds_a, clouds_b, log_ell, n_permutations: int = 200, seed: int = 0,
                     device=None, dtype=torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """Unbiased MMD² of ``P`` cloud pairs and its permutation null, batched.

    For pair ``p`` the union ``U_p = a_p ∪ b_p`` (``n_a + n_b`` points) is
    relabelled uniformly at random (``n_a`` points drawn as "a") ``n_permutations``
    times; the kernel matrix of ``U_p`` is computed once and every relabelling
    costs two quadratic forms:

        S_aa = 1_aᵀ E 1_a,  S_bb = 1_bᵀ E 1_b,  S_ab = 1_aᵀ E 1_b,
        MMD²_u = S_aa/(n_a(n_a-1)) + S_bb/(n_b(n_b-1)) - 2 S_ab/(n_a n_b),

    with ``E = K - 1`` and a zero diagonal (see the module notes).

    Parameters
    ----------
    clouds_a, clouds_b : sequence of array-like of shape (n_p, d) and (m_p, d)
        The ``P`` pairs; every cloud has at least 2 points.
    log_ell : array-like of shape (d,)
    n_permutations : int
        ``B``.
    seed : int
        Seeds the relabellings (numpy ``default_rng``).
    device, dtype
        Where the kernel matrices are computed.

    Returns
    -------
    observed : ndarray of shape (P,)
        MMD²_u with the true labels.
    null : ndarray of shape (B, P)
        MMD²_u under the relabellings.
    """
    dev = resolve_device(device)
    union = [np.concatenate([np.asarray(a), np.asarray(b)]) for a, b in zip(clouds_a, clouds_b)]
    na = np.array([len(a) for a in clouds_a], dtype=np.int64)
    nb = np.array([len(b) for b in clouds_b], dtype=np.int64)
    if (na < 2).any() or (nb < 2).any():
        raise ValueError("unbiased MMD² needs at least 2 points per cloud")
    U, mask = pad_clouds(union, device=dev, dtype=dtype)
    le = torch.as_tensor(np.asarray(log_ell), dtype=dtype, device=dev)
    with torch.no_grad():
        Us = U * torch.exp(-le)
        E = torch.expm1(-0.5 * _sqdist(Us, Us))
        m = mask.to(dtype)
        E = E * (m[:, :, None] * m[:, None, :])
        E = E - torch.diag_embed(torch.diagonal(E, dim1=1, dim2=2))
    P, T = mask.shape
    rng = np.random.default_rng(seed)
    valid = mask.cpu().numpy()
    keys = rng.random((n_permutations, P, T))
    keys[:, ~valid] = np.inf
    ranks = np.argsort(np.argsort(keys, axis=2), axis=2)
    A = np.concatenate([(np.arange(T)[None, :] < na[:, None])[None], ranks < na[None, :, None]])  # (1+B, P, T)
    Bm = valid[None] & ~A
    At = torch.as_tensor(A, dtype=dtype, device=dev)
    Bt = torch.as_tensor(Bm, dtype=dtype, device=dev)
    with torch.no_grad():
        EA = torch.einsum("puv,bpv->bpu", E, At)
        saa = (At * EA).sum(-1)
        sab = (Bt * EA).sum(-1)
        sbb = (Bt * torch.einsum("puv,bpv->bpu", E, Bt)).sum(-1)
    fa = torch.as_tensor(na, dtype=dtype, device=dev)
    fb = torch.as_tensor(nb, dtype=dtype, device=dev)
    stat = (saa / (fa * (fa - 1)) + sbb / (fb * (fb - 1)) - 2.0 * sab / (fa * fb)).cpu().numpy().astype(np.float64)
    return stat[0], stat[1:]
