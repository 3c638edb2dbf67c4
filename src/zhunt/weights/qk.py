"""QK operators across layers: one shared bilinear form up to scale? (seed 004).

Definitions (fixed here)
------------------------
For query head ``h`` of decoder layer ``L`` the QK operator is the bilinear
form on the residual stream

    g_L^h = Q_L^h^T K_L^{kv(h)}        (d, d),

with ``Q`` (d_head, d) and ``K`` (d_head, d) the head's factors. Default
``factors="raw"``: the plain projection weights ``W_Q[h]`` and
``W_K[kv(h)]`` as the seed uses them (no norm weights, no RoPE, no biases, no
1/sqrt(d_head)). ``factors="norm_folded"`` uses
:func:`zhunt.weights.masks.head_factors` instead (pre-attention RMSNorm and QK-norm
weights folded in, the kernel the Z-masks are built from).

Quantities
----------
* gram: ``gram[L, L', h] = <g_L^h, g_L'^h>_F``. Never formed from d x d
  matrices: ``<Q1^T K1, Q2^T K2>_F = tr(K1^T Q1 Q2^T K2)
  = sum((Q1 Q2^T) * (K1 K2^T))``, two d_head x d_head products per head and
  pair (the key products are shared by the query heads of a kv group).
* operator cosine: ``cos_h(L, L') = gram[L,L',h] / sqrt(gram[L,L,h] gram[L',L',h])``;
  the layer matrix is its mean over heads.
* against an anchor layer ``a`` (default the last): head-mean cosine, the
  optimal scalar ``T = mean_h gram[L,a,h] / gram[a,a,h]`` (``argmin_T
  ||g_L - T g_a||`` per head), and the scalar-rescale residual
  ``||g_L - T g_a|| / ||g_L|| = sqrt(1 - cos^2)`` (per head, then averaged;
  also ``sqrt(1 - mean cos^2)`` as in the seed's first table).
* symmetrised operator ``S = (g + g^T)/2 = B^T C B`` with ``B = [Q; K]``
  (2 d_head, d) and ``C = [[0, I], [I, 0]] / 2``: rank <= 2 d_head. With the
  thin QR ``B^T = U R`` (U has orthonormal columns),
  ``S = U (R C R^T) U^T``, so the non-zero eigenvalues of S are those of the
  small symmetric matrix ``R C R^T`` (which has the spectrum of ``C B B^T``)
  and its eigenvectors are ``U y``. ``sym_eigs`` keeps all 2 d_head of them,
  ordered by decreasing magnitude (zero-padded when d < 2 d_head);
  ``eig_dirs`` the unit eigenvectors of the top-``topk``. Note: C has
  d_head positive and d_head negative eigenvalues, so whenever B has full
  rank 2 d_head (<= d) Sylvester's law of inertia fixes the signs of S at
  exactly d_head positive / d_head negative: the fraction of positive
  eigenvalues is then 0.5 by construction, not a property of the weights.
* curvature-sign agreement at k: fraction of the top-k signed eigenvalues
  whose sign equals the anchor's at the same rank, per (layer, head).
* eigen-subspace alignment: principal angles between the top-``topk``
  eigenvector spans of layer L and of the anchor, per head; mean and min
  cosine, and the top-1 overlap ``<a_0, b_0>^2``; chance level is the same
  mean cosine for Haar-random subspaces (:func:`random_pa_baseline`).
* verdict: the seed's bands (:data:`VERDICT_BANDS`: STRONG > 0.9, MEDIUM >
  0.5, WEAK > 0.1, else REJECTED) applied to the mean, over the layers
  ``L != a``, of the head-mean operator cosine to the anchor,

      c_excl = (1 / (n_L - 1)) sum_{L != a} cos(L, a).

  The seed averages over *all* layers, the anchor's self-cosine of exactly 1
  included; that adds ``(1 - c_excl) / n_L`` to the mean, so six independent
  random layers (``c_excl ~ 0``) read 1/6 = 0.17, "WEAK", whatever the
  weights. The seed's number is kept as ``mean_cos_to_anchor`` (a secondary
  column), the verdict uses ``mean_cos_to_anchor_excl``. With a single layer
  there is nothing to compare: ``untestable``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np


__all__ = [
    "FACTORS",
    "SIGN_KS",
    "VERDICT_BANDS",
    "qk_factors",
    "operator_gram",
    "operator_cos",
    "sym_eig",
    "sign_agreement",
    "eigenspace_alignment",
    "random_pa_baseline",
    "qk_verdict",
    "verdict_criteria",
    "layer_groups",
    "analyse_qk",
    "verdict_table",
    "write_qk_exports",
    "load_qk_exports",
    "operator_cos_table",
    "anchor_table",
    "sign_table",
]

log = logging.getLogger(__name__)

FACTORS = ("raw", "norm_folded")
SIGN_KS = (2, 4, 8, 16, 32, 64, 128, 256)
#: Seed-004 bands ``(lower bound, label, meaning)`` of the mean operator cosine to the anchor
#: (anchor excluded); a value must exceed the bound.
VERDICT_BANDS = ((0.9, "STRONG", "same operator up to a scalar across all layers"),
                 (0.5, "MEDIUM", "substantial shared operator with layer-specific drift"),
                 (0.1, "WEAK", "some alignment, far from a single-operator picture"),
                 (-np.inf, "REJECTED", "operators are effectively orthogonal across layers"))
_TINY = 1e-300


def qk_factors(weights, factors: str = "raw") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query and key factors of one layer's QK operators.

    Parameters
    ----------
    weights : LayerWeights
    factors : {"raw", "norm_folded"}
        ``raw``: ``W_Q[h]`` and ``W_K`` as stored; ``norm_folded``:
        :func:`zhunt.weights.masks.head_factors`.

    Returns
    -------
    Q : ndarray (H, d_head, d), float64
    K : ndarray (H_kv, d_head, d), float64 -- one per kv head (not repeated)
    kv_head : ndarray (H,) int64
    """
    if factors == "raw":
        Q = weights.W_Q.detach().double().numpy()
        K = weights.W_K.detach().double().numpy()
        kv = np.asarray(weights.kv_head.detach().numpy(), dtype=np.int64)
        return Q, K, kv
    if factors == "norm_folded":
        from zhunt.weights.masks import head_factors

        Q, Kfull, kv = head_factors(weights)
        # head_factors repeats K per query head; keep one copy per kv head.
        n_kv = int(kv.max()) + 1
        first = [int(np.flatnonzero(kv == j)[0]) for j in range(n_kv)]
        return Q, Kfull[first], kv
    raise ValueError(f"factors must be one of {FACTORS}, got {factors!r}")


def operator_gram(Q: np.ndarray, K: np.ndarray, kv_head=None) -> np.ndarray:
    """Frobenius inner products of the per-head QK operators of every layer pair.

    Parameters
    ----------
    Q : ndarray (L, H, d_head, d)
    K : ndarray (L, H_kv, d_head, d)
    kv_head : ndarray (H,), optional
        Query head -> kv head (default identity; needs H_kv == H).

    Returns
    -------
    gram : ndarray (L, L, H), symmetric in the first two axes;
        ``gram[L, L', h] = <Q_L^T K_L, Q_L'^T K_L'>_F`` for head h.
    """
    nL, H = Q.shape[:2]
    kv = np.arange(H) if kv_head is None else np.asarray(kv_head, dtype=np.int64)
    gram = np.zeros((nL, nL, H))
    for L in range(nL):
        QQ = np.matmul(Q[L][None], np.swapaxes(Q[L:], -1, -2))  # (m, H, dh, dh): Q_L Q_L'^T
        KK = np.matmul(K[L][None], np.swapaxes(K[L:], -1, -2))  # (m, H_kv, dh, dh): K_L K_L'^T
        vals = np.einsum("mhij,mhij->mh", QQ, KK[:, kv])
        gram[L, L:] = vals
        gram[L:, L] = vals
    return gram


def operator_cos(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Operator cosines from a gram.

    Returns
    -------
    cos : ndarray (L, L) -- head-mean cosine
    cos_h : ndarray (L, L, H) -- per-head cosine
    """
    diag = np.sqrt(np.maximum(np.einsum("llh->lh", gram), _TINY))  # (L, H) = ||g_L^h||_F
    cos_h = gram / (diag[:, None, :] * diag[None, :, :])
    return cos_h.mean(axis=-1), cos_h


def sym_eig(Q: np.ndarray, K: np.ndarray, topk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Signed spectrum of the symmetrised operator ``S = (Q^T K + K^T Q) / 2`` of one head.

    Parameters
    ----------
    Q, K : ndarray (d_head, d)
    topk : int, optional
        Number of eigenvectors returned (default all ``min(2 d_head, d)``).

    Returns
    -------
    eigvals : ndarray (2 d_head,)
        All eigenvalues of the at most rank-2d_head matrix S that can be
        non-zero, by decreasing ``|lambda|`` (zeros appended when d < 2 d_head).
    eigvecs : ndarray (topk, d)
        Unit eigenvectors (rows) of the first ``topk`` eigenvalues, each with
        its largest-magnitude entry positive.

    Notes
    -----
    ``S = B^T C B`` with ``B = [Q; K]`` and ``C = [[0, I], [I, 0]] / 2``; from
    the thin QR ``B^T = U R``, ``S = U (R C R^T) U^T`` and the eigenproblem is
    ``2 d_head``-dimensional. Never forms a d x d matrix.
    """
    from zhunt.subspace import canonical_signs

    dh, d = Q.shape
    B = np.concatenate([Q, K], axis=0)  # (2dh, d)
    U, R = np.linalg.qr(B.T)  # U (d, m), R (m, 2dh), m = min(d, 2dh)
    RC = np.concatenate([R[:, dh:], R[:, :dh]], axis=1) / 2  # R C
    M = RC @ R.T
    w, Y = np.linalg.eigh((M + M.T) / 2)
    order = np.argsort(-np.abs(w), kind="stable")
    w, Y = w[order], Y[:, order]
    eigvals = np.zeros(2 * dh)
    eigvals[: w.size] = w
    k = w.size if topk is None else int(topk)
    if k > w.size:
        raise ValueError(f"topk={k} exceeds the {w.size} available eigenvectors")
    V = (U @ Y[:, :k]).T
    return eigvals, canonical_signs(V)


def layer_groups(num_layers: int) -> dict[str, np.ndarray]:
    """Early / mid / late thirds of the layers (``np.array_split``; the seed's 12/12/12 for 36)."""
    parts = np.array_split(np.arange(num_layers), 3)
    return dict(zip(("early", "mid", "late"), parts))


def sign_agreement(sym_eigs: np.ndarray, anchor: int, ks=SIGN_KS) -> dict[int, np.ndarray]:
    """Curvature-sign agreement with the anchor layer.

    Parameters
    ----------
    sym_eigs : ndarray (L, H, 2 d_head), ordered by magnitude
    anchor : int
    ks : iterable of int -- those above 2 d_head are skipped

    Returns
    -------
    dict
        ``{k: agree (L, H)}`` with ``agree[L, h]`` the fraction of the top-k
        ranks whose eigenvalue sign equals the anchor's.
    """
    out = {}
    for k in ks:
        if k > sym_eigs.shape[-1]:
            continue
        s = np.sign(sym_eigs[..., :k])
        out[int(k)] = (s == s[anchor][None]).mean(axis=-1)
    return out


def eigenspace_alignment(eig_dirs: np.ndarray, anchor: int) -> dict[str, np.ndarray]:
    """Principal-angle alignment of the top eigen-subspaces with the anchor's.

    Parameters
    ----------
    eig_dirs : ndarray (L, H, topk, d)
        Orthonormal rows per (layer, head).
    anchor : int

    Returns
    -------
    dict of ndarray (L, H)
        ``mean_cos`` and ``min_cos`` of the principal angles between
        span(eig_dirs[L, h]) and span(eig_dirs[anchor, h]); ``top1`` the
        squared overlap of the leading eigenvectors.
    """
    from zhunt.subspace import principal_angles

    nL, H = eig_dirs.shape[:2]
    mean_c, min_c, top1 = np.zeros((nL, H)), np.zeros((nL, H)), np.zeros((nL, H))
    for L in range(nL):
        for h in range(H):
            A, B = eig_dirs[L, h], eig_dirs[anchor, h]
            c = np.cos(principal_angles(A, B))
            mean_c[L, h], min_c[L, h] = c.mean(), c.min()
            top1[L, h] = float(A[0] @ B[0]) ** 2
    return {"mean_cos": mean_c, "min_cos": min_c, "top1": top1}


def random_pa_baseline(k: int, d: int, draws: int = 20, seed: int = 0) -> float:
    """Mean principal-angle cosine between two Haar-random k-dim subspaces of R^d (``draws`` pairs)."""
    from zhunt.subspace import principal_angles, random_subspace

    rng = np.random.default_rng(seed)
    vals = [np.cos(principal_angles(random_subspace(k, d, rng), random_subspace(k, d, rng))).mean()
            for _ in range(draws)]
    return float(np.mean(vals))


def verdict_criteria() -> str:
    """The bands of :data:`VERDICT_BANDS` as one line (the ``criteria`` column and the captions)."""
    parts = [f"{label} > {lo:g}" for lo, label, _ in VERDICT_BANDS if np.isfinite(lo)]
    return (", ".join(parts) + f", else {VERDICT_BANDS[-1][1]}; on the mean head-mean operator cosine "
            "to the anchor over the other layers (anchor's self-cosine excluded)")


def qk_verdict(mean_cos_to_anchor: float) -> tuple[str, str]:
    """Seed band of the mean operator cosine to the anchor: (label, sentence).

    ``NaN`` (no layer besides the anchor) gives ``("untestable", ...)``.
    """
    if not np.isfinite(mean_cos_to_anchor):
        return "untestable", "a single layer has no other layer to compare with"
    for lo, label, text in VERDICT_BANDS:
        if mean_cos_to_anchor > lo:
            return label, text
    return VERDICT_BANDS[-1][1:]  # NaN


def _resolve_anchor(anchor: int, num_layers: int) -> int:
    a = int(anchor)
    a = a + num_layers if a < 0 else a
    if not 0 <= a < num_layers:
        from zhunt.errors import ZhuntError

        raise ZhuntError("structure.qk_anchor", f"anchor layer {anchor} out of range for {num_layers} layers")
    return a


def analyse_qk(layer_factors, anchor: int = -1, topk: int | None = None) -> dict:
    """All seed-004 quantities from per-layer QK factors.

    Parameters
    ----------
    layer_factors : sequence of (Q, K, kv_head)
        Per layer ``Q`` (H, d_head, d), ``K`` (H_kv, d_head, d), ``kv_head`` (H,)
        (:func:`qk_factors`).
    anchor : int
        Anchor layer; negative counts from the end (default last).
    topk : int, optional
        Eigenvectors kept per head; default ``min(32, 2 d_head, d)``.

    Returns
    -------
    dict
        ``gram`` (L, L, H), ``cos`` (L, L), ``cos_h`` (L, L, H), ``anchor``,
        ``adjacent`` (L-1,), ``cos_to_anchor`` (L,), ``T_opt`` (L,),
        ``residual`` (L,) (per-head mean of sqrt(1 - cos_h^2)),
        ``residual_of_mean`` (L,), ``sym_eigs`` (L, H, 2 d_head),
        ``eig_dirs`` (L, H, topk, d), ``frac_positive`` (L,), ``sign`` {k: (L, H)},
        ``alignment`` (:func:`eigenspace_alignment`), ``mean_cos_to_anchor``
        (all layers, anchor included, as the seed writes it), ``mean_cos_to_anchor_excl``
        (anchor excluded: the verdict's statistic), ``adjacent_mean``, ``verdict``,
        ``verdict_text`` (:func:`qk_verdict` of the anchor-excluded mean), ``pa_mean_cos_excl``
        (mean principal-angle cosine to the anchor, anchor excluded) and
        ``pa_random_baseline`` (:func:`random_pa_baseline` for topk, d).
    """
    Q = np.stack([f[0] for f in layer_factors]).astype(np.float64, copy=False)
    K = np.stack([f[1] for f in layer_factors]).astype(np.float64, copy=False)
    kv = np.asarray(layer_factors[0][2], dtype=np.int64)
    nL, H, dh, d = Q.shape
    a = _resolve_anchor(anchor, nL)
    m = min(2 * dh, d)
    topk = min(32, m) if topk is None else int(topk)
    if not 0 < topk <= m:
        raise ValueError(f"topk must be in 1..{m}, got {topk}")

    gram = operator_gram(Q, K, kv)
    cos, cos_h = operator_cos(gram)
    diag_sq = np.einsum("llh->lh", gram)
    ch_a = cos_h[:, a, :]  # (L, H)
    T_opt = (gram[:, a, :] / np.maximum(diag_sq[a][None, :], _TINY)).mean(axis=-1)
    residual = np.sqrt(np.clip(1 - ch_a**2, 0, 1)).mean(axis=-1)
    to_anchor = cos[:, a]

    sym_eigs = np.zeros((nL, H, 2 * dh))
    eig_dirs = np.zeros((nL, H, topk, d))
    for L in range(nL):
        for h in range(H):
            sym_eigs[L, h], eig_dirs[L, h] = sym_eig(Q[L, h], K[L, kv[h]], topk)
    frac_pos = (sym_eigs > 0).mean(axis=(1, 2))
    sign = sign_agreement(sym_eigs, a)
    align = eigenspace_alignment(eig_dirs, a)
    mean_to_anchor = float(to_anchor.mean())
    others = np.delete(to_anchor, a)
    mean_excl = float(others.mean()) if others.size else float("nan")
    label, text = qk_verdict(mean_excl)
    adj = np.array([cos[L, L + 1] for L in range(nL - 1)])
    pa_excl = np.delete(align["mean_cos"].mean(axis=1), a)
    return {
        "num_layers": nL, "num_heads": H, "head_dim": dh, "hidden_size": d, "topk": topk, "anchor": a,
        "gram": gram, "cos": cos, "cos_h": cos_h, "adjacent": adj,
        "adjacent_mean": float(adj.mean()) if adj.size else float("nan"),
        "cos_to_anchor": to_anchor, "T_opt": T_opt, "residual": residual,
        "residual_of_mean": np.sqrt(np.clip(1 - to_anchor**2, 0, 1)),
        "sym_eigs": sym_eigs, "eig_dirs": eig_dirs, "frac_positive": frac_pos, "sign": sign,
        "alignment": align, "mean_cos_to_anchor": mean_to_anchor,
        "mean_cos_to_anchor_excl": mean_excl,
        "verdict": label, "verdict_text": text,
        "pa_mean_cos_excl": float(pa_excl.mean()) if pa_excl.size else float("nan"),
        "pa_random_baseline": random_pa_baseline(topk, d) if topk < d else 1.0,
    }


def write_qk_exports(res: dict, json_path, pt_path, model_name: str, factors: str = "raw") -> tuple[Path, Path]:
    """Write the seed-004 inputs: the grams JSON ``json_path`` and the tensors ``pt_path`` (.pt).

    The JSON holds ``num_layers, num_heads, head_dim, hidden_size``, ``gram``
    as nested lists ``[L][L'][H]``, ``eigdirs_path`` (``pt_path`` as given, i.e.
    relative to the caller's working directory when it is relative, which is how
    the seed opens it), plus extras
    ``g_fro_sq`` ``[L][H]`` (= the gram diagonal), ``factors``, ``model``,
    ``anchor``. The .pt is a plain dict of tensors (loadable with
    ``torch.load(weights_only=True)``): ``eig_dirs`` (L, H, topk, d) and
    ``sym_eigs`` (L, H, 2 d_head), float32.
    """
    import torch

    from zhunt.io import atomic_path, write_json

    json_path, pt_path = Path(json_path), Path(pt_path)
    with atomic_path(pt_path, suffix=".pt") as tmp:
        torch.save({"eig_dirs": torch.from_numpy(res["eig_dirs"]).float().contiguous(),
                    "sym_eigs": torch.from_numpy(res["sym_eigs"]).float().contiguous()}, tmp)
    write_json(json_path, {
        "num_layers": res["num_layers"], "num_heads": res["num_heads"], "head_dim": res["head_dim"],
        "hidden_size": res["hidden_size"], "gram": res["gram"].tolist(), "eigdirs_path": str(pt_path),
        "g_fro_sq": np.einsum("llh->lh", res["gram"]).tolist(), "factors": factors, "model": model_name,
        "anchor": res["anchor"],
    })
    return json_path, pt_path


def load_qk_exports(json_path) -> tuple[dict, dict]:
    """Read the exports back: ``(json dict with gram as ndarray, {"eig_dirs", "sym_eigs"} as ndarrays)``.

    ``eigdirs_path`` is tried as written, then next to the JSON.
    """
    import torch

    json_path = Path(json_path)
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    meta["gram"] = np.asarray(meta["gram"], dtype=np.float64)
    pt = Path(meta.get("eigdirs_path") or json_path.with_name(json_path.stem + "-eigdirs.pt"))
    if not pt.is_file():
        pt = json_path.parent / pt.name
    tensors = torch.load(pt, weights_only=True)
    return meta, {k: v.double().numpy() for k, v in tensors.items()}


def operator_cos_table(res: dict):
    """DataFrame of ``qk_operator_cos.tsv``: every layer pair (L, L2) and its head-mean operator cosine (long)."""
    import pandas as pd

    nL = res["num_layers"]
    Ls = np.arange(nL)
    return pd.DataFrame({"L": np.repeat(Ls, nL), "L2": np.tile(Ls, nL), "cos": res["cos"].ravel()})


def anchor_table(res: dict):
    """DataFrame of ``qk_anchor.tsv``: per layer, the operator against the anchor (:func:`analyse_qk`):
    cos_to_anchor, T_opt, residual, residual_of_mean, frac_positive and the head means of the
    eigen-subspace alignment (pa_mean_cos, pa_min_cos, top1_overlap)."""
    import pandas as pd

    al = res["alignment"]
    return pd.DataFrame({
        "L": np.arange(res["num_layers"]), "cos_to_anchor": res["cos_to_anchor"], "T_opt": res["T_opt"],
        "residual": res["residual"], "residual_of_mean": res["residual_of_mean"],
        "frac_positive": res["frac_positive"], "pa_mean_cos": al["mean_cos"].mean(axis=1),
        "pa_min_cos": al["min_cos"].mean(axis=1), "top1_overlap": al["top1"].mean(axis=1),
    })


def sign_table(res: dict):
    """DataFrame of ``qk_sign_agreement.tsv``: per k, the curvature-sign agreement with the anchor averaged
    over heads and layers (mean_agree) and over each depth group of :func:`layer_groups`."""
    import pandas as pd

    groups = layer_groups(res["num_layers"])
    return pd.DataFrame([{"k": k, "mean_agree": float(ag.mean()),
                          **{g: float(ag[idx].mean()) for g, idx in groups.items()}}
                         for k, ag in res["sign"].items()])


def verdict_table(res: dict, model_name: str, factors: str):
    """One-row verdict table: the statistic, the seed's anchor-included number, label and criteria."""
    import pandas as pd

    return pd.DataFrame([{
        "model": model_name, "factors": factors, "num_layers": res["num_layers"], "anchor": res["anchor"],
        "mean_cos_to_anchor_excl": res["mean_cos_to_anchor_excl"],
        "mean_cos_to_anchor_incl": res["mean_cos_to_anchor"],
        "band_if_anchor_included": qk_verdict(res["mean_cos_to_anchor"])[0],
        "adjacent_mean": res["adjacent_mean"], "verdict": res["verdict"], "criteria": verdict_criteria(),
    }])
