"""Weight-derived Z-masks: top right-singular subspaces of attention kernels.

Definitions (DESIGN.md, fixed once here)
----------------------------------------
For query head ``h`` of a decoder layer with pre-attention RMSNorm weight
``g`` (d,) and, where the architecture has them, per-head QK-norm weights
``q_norm`` / ``k_norm`` (d_head,), write

    Q_h = diag(q_norm) W_Q^h diag(g)             (d_head, d)
    K_h = diag(k_norm) W_K^{kv(h)} diag(g)       (d_head, d)

The attention kernel is the bilinear form on the (normalised) residual
stream ``A_h = Q_h^T K_h`` (d, d); RoPE, biases, the 1/sqrt(d_head) scale and
the data-dependent RMS factors are ignored. The stacked multi-head kernel is
``[A_1; ...; A_H]`` (H d, d) and ``V_Z`` holds its top-k right singular
vectors as rows (k, d). The head-0 mask uses ``A_0`` alone.

The stacked matrix is never formed: its right singular vectors are the
eigenvectors of the Gram matrix

    G = sum_h A_h^T A_h = sum_h K_h^T (Q_h Q_h^T) K_h,

which costs d^2 * d_head per head instead of H * d^3, and its singular values
are ``sqrt(eig(G))``. A single head's kernel (the head-0 mask, and every head of the
structure analysis, :func:`head_kernel_spectra`) has rank <= d_head and is taken apart from its
thin QR factors instead, without any d x d matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zhunt.subspace import canonical_signs

MASK_KINDS = ("multihead", "head0")
#: Root attributes ``format`` / ``format_version`` of a mask file (checked by readers in a rule).
MASK_FORMAT, MASK_FORMAT_VERSION = "zhunt-masks", 1


def _np(x) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def head_factors(weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-head factors ``Q_h`` and ``K_h`` of the attention kernels of one layer.

    Parameters
    ----------
    weights : LayerWeights
        From :meth:`zhunt.models.adapters.ModelAdapter.layer_weights`.

    Returns
    -------
    Q : ndarray of shape (H, d_head, d)
    K : ndarray of shape (H, d_head, d)
        ``K[h]`` is the key factor of the kv head that query head ``h`` reads.
    kv_head : ndarray of shape (H,)
    """
    WQ, WK, g = _np(weights.W_Q), _np(weights.W_K), _np(weights.attn_norm)
    kv = np.asarray(_np(weights.kv_head), dtype=np.int64)
    qn = _np(getattr(weights, "q_norm", None))
    kn = _np(getattr(weights, "k_norm", None))
    Q = WQ * g[None, None, :]
    K = WK[kv] * g[None, None, :]
    if qn is not None:
        Q = Q * qn[None, :, None]
    if kn is not None:
        K = K * kn[None, :, None]
    return Q, K, kv


def kernel_gram(Q: np.ndarray, K: np.ndarray, heads=None) -> np.ndarray:
    """Gram matrix ``G = sum_h A_h^T A_h`` of the stacked kernel, shape (d, d).

    Parameters
    ----------
    Q, K : ndarray of shape (H, d_head, d)
    heads : sequence of int, optional
        Heads to include (default: all).
    """
    heads = range(Q.shape[0]) if heads is None else heads
    d = Q.shape[2]
    G = np.zeros((d, d))
    for h in heads:
        S = Q[h] @ Q[h].T  # (d_head, d_head)
        G += K[h].T @ (S @ K[h])
    return (G + G.T) / 2


def head_kernel_spectra(Q: np.ndarray, K: np.ndarray, kv_head=None, k: int | None = None):
    """Singular values (and top-k right singular vectors) of every per-head kernel ``A_h = Q_h^T K_h``.

    Never forms a d x d matrix: with ``Q_h^T = U_q R_q`` and ``K_h^T = U_k R_k``
    (thin QR), ``A_h = U_q (R_q R_k^T) U_k^T``.

    Parameters
    ----------
    Q, K : ndarray of shape (H, d_head, d)
        Per-head factors from :func:`head_factors`.
    kv_head : array of shape (H,), optional
        Query head -> kv head map; heads of one kv group share the QR of ``K``.
    k : int, optional
        Also return the top-k right singular vectors; ``0 < k <= min(d_head, d)``.

    Returns
    -------
    sigma : ndarray of shape (H, r), r = min(d_head, d)
        Singular values of each ``A_h``, descending.
    V : ndarray of shape (H, k, d) or None
        Orthonormal rows, signs canonicalised (:func:`zhunt.subspace.canonical_signs`).
    """
    H, d_head, d = Q.shape
    r = min(d_head, d)
    if k is not None and not 0 < k <= r:
        raise ValueError(f"per-head subspaces need 0 < k <= min(d_head, d) = {r}, got k={k}")
    sigma = np.empty((H, r))
    V = np.empty((H, k, d)) if k else None
    cache: dict = {}
    for h in range(H):
        key = int(kv_head[h]) if kv_head is not None else ("head", h)
        if key not in cache:
            cache[key] = np.linalg.qr(K[h].T)  # U_k (d, r), R_k (r, d_head)
        U_k, R_k = cache[key]
        _, R_q = np.linalg.qr(Q[h].T)
        _, s, Yt = np.linalg.svd(R_q @ R_k.T)
        sigma[h] = s
        if k:
            V[h] = canonical_signs(Yt[:k] @ U_k.T)
    return sigma, V


def top_right_singular(G: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k right singular vectors and all singular values from a kernel Gram matrix.

    Parameters
    ----------
    G : ndarray of shape (d, d)
        Symmetric PSD Gram matrix ``M^T M`` of some matrix ``M``.
    k : int
        Number of leading directions, ``0 < k < d``.

    Returns
    -------
    V : ndarray of shape (k, d)
        Orthonormal rows, in order of decreasing singular value, signs
        canonicalised (:func:`zhunt.subspace.canonical_signs`).
    sigma : ndarray of shape (d,)
        Singular values of ``M`` in decreasing order.
    """
    from scipy.linalg import eigh

    d = G.shape[0]
    if not 0 < k < d:
        raise ValueError(f"k must satisfy 0 < k < d={d}, got {k}")
    evals, evecs = eigh(G)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    sigma = np.sqrt(np.clip(evals, 0.0, None))
    return canonical_signs(evecs[:, :k].T), sigma


def z_masks(weights, ks, kinds=MASK_KINDS) -> dict:
    """All Z-masks of one layer.

    Parameters
    ----------
    weights : LayerWeights
    ks : sequence of int
        Subspace dimensions; each must satisfy ``0 < k < d`` and, for the
        head-0 mask, ``k <= d_head`` (the rank of a single-head kernel).
    kinds : sequence of {"multihead", "head0"}

    Returns
    -------
    dict
        ``{kind: {"sigma": (d,), "V": {k: (k, d)}}}`` in float64.
    """
    Q, K, _ = head_factors(weights)
    H, d_head, d = Q.shape
    out = {}
    for kind in kinds:
        if kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {kind!r} (expected one of {MASK_KINDS})")
        kmax = max(ks)
        if kind == "multihead":
            V, sigma = top_right_singular(kernel_gram(Q, K), kmax)
        else:  # head 0 alone: the per-head kernels' SVD (the structure analysis's route for every head)
            if kmax > d_head:
                raise ValueError(f"head0 mask with k={kmax} exceeds head_dim={d_head}, the kernel's rank")
            s0, V0 = head_kernel_spectra(Q[:1], K[:1], None, kmax)
            sigma = np.zeros(d)
            sigma[:s0.shape[1]] = s0[0]  # A_0 has rank <= d_head: the other singular values are 0
            V = V0[0]
        out[kind] = {"sigma": sigma, "V": {int(k): V[:k] for k in ks}}
    return out


def write_masks(path, masks: dict, attrs: dict) -> None:
    """Write masks to HDF5 atomically: ``{kind}/k{k}`` (k, d), ``{kind}/singular_values`` (d,)."""
    import h5py

    from zhunt.io import atomic_path

    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = MASK_FORMAT
            f.attrs["format_version"] = MASK_FORMAT_VERSION
            for key, val in attrs.items():
                f.attrs[key] = val
            f.attrs["convention"] = (
                "V_Z rows = top-k right singular vectors of the stacked kernel [A_1;...;A_H], "
                "A_h = (diag(q_norm) W_Q^h diag(g))^T (diag(k_norm) W_K^kv(h) diag(g)); "
                "RoPE/bias ignored; layer = decoder layer index (0-based)"
            )
            for kind, m in masks.items():
                grp = f.create_group(kind)
                grp.create_dataset("singular_values", data=m["sigma"])
                for k, V in m["V"].items():
                    grp.create_dataset(f"k{k}", data=V)


def read_mask(path, kind: str = "multihead", k: int = 50, expect: dict | None = None) -> np.ndarray:
    """Read ``V_Z`` (k, d) from a mask file written by :func:`write_masks`.

    ``expect`` (default: what the running workflow rule expects, :func:`zhunt.io.expected_provenance`)
    lists attributes the file must have, e.g. ``{"model": "organism", "layer": 2}``; a mask
    copied from another layer or model stops with one line (:func:`zhunt.io.check_provenance`).
    Masks are weights-only: they carry no ``site`` (the site is where an analysis applies them).
    """
    import h5py

    from zhunt.errors import ZhuntError
    from zhunt.io import check_provenance, expected_provenance

    try:
        with h5py.File(path, "r") as f:
            check_provenance(path, f.attrs, expect if expect is not None else expected_provenance("mask", path))
            return f[kind][f"k{k}"][()]
    except KeyError as exc:
        raise ZhuntError(str(path), f"no mask {kind}/k{k} in this file ({exc})") from None
    except OSError as exc:  # missing, truncated or not HDF5
        raise ZhuntError(str(path), f"not a readable Z-mask file ({' '.join(str(exc).split())})") from None


def load_layer_masks(paths, layers, kinds, ks, d: int, where: str = "masks") -> dict:
    """``V_Z`` of every layer, kind and k of a sweep, from one mask file per layer.

    Parameters
    ----------
    paths : mapping
        ``{layer: path}`` of mask files (:func:`write_masks`).
    layers, kinds, ks : sequences
        Decoder layers, mask kinds and dimensions of the sweep.
    d : int
        Hidden size the masks must have (the activation store's).
    where : str
        Config key named when a layer has no file.

    Returns
    -------
    dict
        ``{(layer, kind, k): V_Z}``, each of shape (k, d), float64.

    Raises
    ------
    ZhuntError
        A layer without a file, a missing or unreadable file, a file written for another
        layer (its ``layer`` attribute), a missing ``kind/k`` or a mask of another width.
    """
    from zhunt.errors import ZhuntError

    paths = {int(l): Path(p) for l, p in dict(paths or {}).items()}
    out = {}
    for l in layers:
        if l not in paths:
            raise ZhuntError(where, f"no Z-mask file given for layer {l} (have layers {sorted(paths)})")
        path = paths[l]
        if not path.is_file():
            raise ZhuntError(str(path), f"Z-mask file for layer {l} not found")
        stored = mask_layer(path, required=False)
        if stored is not None and stored != l:
            raise ZhuntError(str(path), f"mask file is for layer {stored}, but was given for layer {l}")
        for kind in kinds:
            for k in ks:
                V = np.asarray(read_mask(path, kind, k), dtype=np.float64)
                if V.shape != (k, d):
                    raise ZhuntError(str(path), f"mask {kind}/k{k} has shape {V.shape}, expected {(k, d)} "
                                                f"(hidden size of the activation store)")
                out[(l, kind, k)] = V
    return out


def mask_layer(path, required: bool = True) -> int | None:
    """The decoder layer a mask file was built for (its ``layer`` attribute).

    ``required=False``: ``None`` for a file without the attribute (a hand-made mask).

    Raises
    ------
    ZhuntError
        The file is missing or not HDF5, or (``required``) has no ``layer`` attribute.
    """
    import h5py

    from zhunt.errors import ZhuntError

    try:
        with h5py.File(path, "r") as f:
            layer = f.attrs.get("layer")
    except OSError as exc:
        raise ZhuntError(str(path), f"not a readable Z-mask file ({' '.join(str(exc).split())})") from None
    if layer is None and required:
        raise ZhuntError(str(path), "mask file has no layer attribute (needed for the basis's hidden index)")
    return None if layer is None else int(layer)
