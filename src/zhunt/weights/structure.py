"""Weight-structure analyses: effective ranks, subspace overlap, phases, predicted bottleneck.

Everything here reads weights only (no data). It checks, for any model, the
structural findings of the seeds on Qwen2.5-3B (seed 001, scripts "1.py" and
"2.py"): a bottleneck layer whose attention heads have the lowest and most
uniform effective rank, an FFN that avoids the attention subspace there, a
sharp drop of layer-to-layer subspace similarity right after it, and an
encode / compute / decode segmentation of depth.

Definitions (fixed once here; kernels as in :mod:`zhunt.weights.masks`)
----------------------------------------------------------------
Per layer ``l`` with ``H`` query heads of size ``d_head``, hidden size ``d``:

* **Attention kernel** of head ``h``: ``A_h = Q_h^T K_h`` (d, d) with
  ``Q_h, K_h`` (d_head, d) from :func:`zhunt.weights.masks.head_factors`, i.e. with
  the pre-attention RMSNorm weight (and QK-norm weights, where the
  architecture has them) folded in; RoPE, biases and the softmax scale are
  ignored. Its singular values come from small matrices only: with thin QR
  factorisations ``Q_h^T = U_q R_q`` and ``K_h^T = U_k R_k`` (U: d x d_head),
  ``A_h = U_q (R_q R_k^T) U_k^T``, so ``svd(A_h)`` is the svd of the
  d_head x d_head matrix ``R_q R_k^T`` and the right singular vectors of
  ``A_h`` are ``Y^T U_k^T`` (``Y`` the right singular vectors of ``R_q R_k^T``).
* **Effective rank** of a matrix: :func:`zhunt.subspace.effective_rank` of its
  singular values, ``exp(H(sigma / sum sigma))``. Per layer we report the
  mean, standard deviation (``ddof=0``) and coefficient of variation
  (std / mean) of the per-head attention-kernel effective ranks, and the
  effective ranks of the raw per-layer matrices ``W_Q`` (H d_head, d),
  ``W_K``/``W_V`` (H_kv d_head, d), ``W_O`` (d, H d_head) (heads stacked, no
  norm folded) and ``gate``/``up`` (d_ff, d), ``down`` (d, d_ff), plus the
  Frobenius norm of ``W_V``. Singular values of these (possibly 11008 x 2048)
  matrices are the square roots of the eigenvalues of the smaller Gram matrix
  in float64; directions with ``sigma < ~1e-8 sigma_max`` are inaccurate,
  which changes an effective rank by less than 1e-6 relative.
* **Attention subspace** of a layer: ``V_attn`` (k, d), the top-k right
  singular vectors of the stacked kernel ``[A_1; ...; A_H]``
  (:func:`zhunt.weights.masks.top_right_singular` of :func:`zhunt.weights.masks.kernel_gram`:
  the multi-head Z-mask). Per head: ``V_h`` (k, d), the top-k right singular
  vectors of ``A_h`` alone (needs ``k <= d_head``).
* **Grassmann similarity** between layers: :func:`zhunt.subspace.grassmann_similarity`
  (mean squared cosine of the principal angles), for every pair of layers,
  multi-head ``S[l, m]`` and per head ``S_h[l, m, h] = sim(V_h^l, V_h^m)``.
  Adjacent curve ``s_l = S[l, l+1]`` (l = 0..L-2). **Drop** at layer ``l``:
  ``drop_l = s_{l-1} - s_l = S[l-1, l] - S[l, l+1]`` (how much less similar
  layer l is to its successor than to its predecessor; undefined for l = 0).
  The seed's "L33 -> L34 drop 0.452" is ``drop_33``. **Rise** at layer
  ``l``: ``rise_l = s_{l+1} - s_l`` (the successor pair is more similar).
* **FFN alignment**: ``V_gate`` (k, d) = top-k right singular vectors of the
  gate projection with the FFN input-norm weight folded in
  (``gate diag(g_mlp)``, so that, like ``V_attn``, it lives in residual-stream
  coordinates; ``fold_mlp_norm=False`` uses the raw gate). Alignment
  ``a = ||P_attn V_gate^T||_F^2 / ||V_gate||_F^2`` with ``P_attn = V_attn^T V_attn``;
  chance (Haar-random ``V_gate``) is ``k / d``; ratio ``a / (k/d)`` (seed: 0.57
  at Qwen2.5-3B L33). The per-head alignments use ``P_h = V_h^T V_h`` and we
  report their standard deviation across heads.

Phases (rule)
-------------
On the multi-head adjacent curve ``s`` (L - 1 gaps, gap ``g`` between layers
``g`` and ``g + 1``) and ``n_edge = max(1, min(ceil(edge_fraction (L-1)), (L-1)//2))``:

* the **encode** phase ends at the gap among the first ``n_edge`` gaps with
  the largest rise ``s_{g+1} - s_g``: the first pair of layers that is much
  less similar than the pair after it (encode = layers ``0..g_e``);
* the **decode** phase starts after the gap among the last ``n_edge`` gaps
  with the largest drop ``s_{g-1} - s_g`` (decode = layers ``g_d+1..L-1``);
* **compute** is everything in between. Ties go to the earliest gap.

With the seed's Qwen2.5-3B curve this gives "1-33-2": encode L0, compute
L1-33, decode L34-35 (``g_e = 0``, ``g_d = 33``, drop 0.452).

Bottleneck prediction (score)
-----------------------------
Candidates are the compute-phase layers. The score is lexicographic:
(1) the lowest mean attention-kernel effective rank; every candidate whose
mean lies within one standard error (``std / sqrt(H)``) of that minimum
counts as tied; (2) among tied layers, the sharpest following drop
``drop_l`` wins. ``confirmed_by_drop`` says whether the predicted layer also
has the largest ``drop_l`` of all candidates.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from zhunt.weights.masks import _np, head_factors, head_kernel_spectra, kernel_gram, top_right_singular
from zhunt.progress import Progress
from zhunt.subspace import canonical_signs, effective_rank, grassmann_similarity, project

__all__ = [
    "MATRIX_NAMES",
    "SEED_QWEN25_3B",
    "LayerStructure",
    "StructureResult",
    "Phases",
    "singular_values",
    "energy_fraction",
    "layer_structure",
    "analyze_model",
    "across_layers",
    "grassmann_matrix",
    "grassmann_per_head",
    "adjacent_similarity",
    "depth_trend",
    "segment_phases",
    "predict_bottleneck",
    "effective_rank_tables",
    "ffn_alignment_table",
    "summary_table",
    "layer_score_table",
    "adjacent_table",
    "phases_table",
    "bottleneck_table",
    "StructureTables",
    "structure_tables",
    "check_structure_input",
]

log = logging.getLogger("zhunt.weights.structure")

#: Per-layer matrices whose effective rank is reported (column names of ``effective_rank.tsv``).
MATRIX_NAMES = ("W_Q", "W_K", "W_V", "W_O", "gate", "up", "down")
FFN_NAMES = ("gate", "up", "down")

def _reference_rows(text: str) -> dict:
    """``{statistic: (value, note)}`` from lines ``statistic | value | note`` (``nan``: no number quoted)."""
    rows = {}
    for line in text.strip().splitlines():
        name, value, note = (part.strip() for part in line.split("|"))
        rows[name] = (float(value), note)
    return rows


#: Seed reference values (Qwen2.5-3B, seed 001: 1.py / 2.py). Reference only: other models
#: are not expected to match, and our kernels fold the RMSNorm weights in (DESIGN.md).
#: One row per statistic of ``effective_rank_summary.tsv``: name | value | note; min_attn_rank_cv = 6.0 / 80.4.
SEED_QWEN25_3B = _reference_rows("""
min_attn_rank_layer                          | 33                  | bottleneck L33
min_attn_rank_mean                           | 80.4                | L33 head eff. rank mean
min_attn_rank_std                            | 6                   | L33 head eff. rank std
min_attn_rank_cv                             | 0.07462686567164178 | CV < 0.08 at L33
spearman_attn_vs_depth                       | nan                 | attention rank decreases monotonically (rho < 0)
spearman_ffn_vs_depth                        | nan                 | FFN rank increases monotonically (rho > 0)
wv_eff_rank_mean                             | 250                 | W_V eff. rank ~250 at every layer
wv_eff_rank_cv                               | 0.02                | W_V eff. rank CV across layers
predicted_bottleneck_layer                   | 33                  | L33
ffn_ratio_at_bottleneck                      | 0.57                | FFN alignment 0.57x chance at L33
ffn_alignment_std_across_heads_at_bottleneck | 0.0001              | std across heads at L33
sim_into_bottleneck                          | 0.482               | Grassmann sim L32<->L33
drop_after_bottleneck                        | 0.452               | L33 -> L34 drop
max_drop_layer                               | 33                  | sharpest phase boundary after L33
max_drop                                     | 0.452               | largest drop
encode_size                                  | 1                   | 1-33-2
compute_size                                 | 33                  | 1-33-2
decode_size                                  | 2                   | 1-33-2
""")


# ---------------------------------------------------------------------------------------------
# per-layer computations
# ---------------------------------------------------------------------------------------------

def singular_values(W) -> np.ndarray:
    """All singular values of a matrix, descending, via the Gram matrix of its smaller side.

    Parameters
    ----------
    W : ndarray or torch.Tensor of shape (m, n)

    Returns
    -------
    ndarray of shape (min(m, n),), float64
        ``sqrt(eigvalsh(W^T W))`` (or of ``W W^T``), clipped at 0. Accurate
        to about ``1e-8 * sigma_max`` absolute: enough for effective ranks
        and norms, not for tiny singular values.
    """
    from scipy.linalg import eigvalsh

    W = np.asarray(_np(W), dtype=np.float64)
    G = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
    ev = eigvalsh((G + G.T) / 2)
    return np.sqrt(np.clip(ev[::-1], 0.0, None))


def energy_fraction(X: np.ndarray, V: np.ndarray) -> float:
    """Fraction of the squared Frobenius norm of the rows of ``X`` (n, d) inside span(``V``) (k, d).

    ``||P_V X^T||_F^2 / ||X||_F^2`` with ``P_V = V^T V``; for ``X`` with
    orthonormal rows and a Haar-random ``V`` its expectation is ``k / d``.
    """
    X = np.asarray(X, dtype=np.float64)
    return float(np.sum(project(X, np.asarray(V, np.float64)) ** 2) / np.sum(X**2))


@dataclass
class LayerStructure:
    """Weight-structure numbers of one decoder layer (see the module docstring).

    Attributes
    ----------
    attn_eff_rank : ndarray (H,)         effective rank of each head's kernel ``A_h``
    attn_stacked_eff_rank : float        effective rank of the stacked kernel ``[A_1; ...; A_H]``
    matrix_eff_rank : dict               ``{name: float}`` for :data:`MATRIX_NAMES`
    wv_norm : float                      Frobenius norm of ``W_V`` (H_kv d_head, d)
    V_attn : ndarray (k, d)              multi-head attention subspace
    V_heads : ndarray (H, k, d)          per-head attention subspaces
    V_gate : ndarray (k, d)              top-k right singular vectors of the (norm-folded) gate
    ffn_alignment : float                ``||P_attn V_gate^T||^2 / k``
    ffn_alignment_heads : ndarray (H,)   the same with each head's subspace
    ffn_alignment_raw_gate : float       ``ffn_alignment`` with the raw gate (no FFN norm folded)
    """

    attn_eff_rank: np.ndarray
    attn_stacked_eff_rank: float
    matrix_eff_rank: dict
    wv_norm: float
    V_attn: np.ndarray
    V_heads: np.ndarray
    V_gate: np.ndarray
    ffn_alignment: float
    ffn_alignment_heads: np.ndarray
    ffn_alignment_raw_gate: float


def layer_structure(weights, k: int = 20, fold_mlp_norm: bool = True) -> LayerStructure:
    """All per-layer structural quantities of one decoder layer.

    Parameters
    ----------
    weights : LayerWeights
        From :meth:`zhunt.models.ModelAdapter.layer_weights` (any object with
        the same fields works: ``W_Q, W_K, W_V, W_O, kv_head, attn_norm,
        q_norm, k_norm, gate, up, down`` and optionally ``mlp_norm``).
    k : int
        Subspace dimension, ``0 < k <= d_head`` and ``k < d``.
    fold_mlp_norm : bool
        Fold the FFN input-norm weight into the gate before taking ``V_gate``.

    Returns
    -------
    LayerStructure
    """
    Q, K, kv = head_factors(weights)
    H, d_head, d = Q.shape
    if not 0 < k < d:
        raise ValueError(f"k must satisfy 0 < k < d={d}, got {k}")
    sig_heads, V_heads = head_kernel_spectra(Q, K, kv, k)
    V_attn, sig_stacked = top_right_singular(kernel_gram(Q, K), k)

    WQ, WK, WV, WO = (_np(getattr(weights, n)) for n in ("W_Q", "W_K", "W_V", "W_O"))
    mats = {
        "W_Q": WQ.reshape(-1, d),
        "W_K": WK.reshape(-1, d),
        "W_V": WV.reshape(-1, d),
        "W_O": WO.transpose(1, 0, 2).reshape(d, -1),  # (d, H d_head): column block h = W_O[h]
    }
    erank = {name: effective_rank(singular_values(M)) for name, M in mats.items()}
    gate = _np(weights.gate)
    G_gate = gate.T @ gate  # (d, d): gives V_gate, and all singular values when d_ff >= d
    V_gate_raw, sig_gate = top_right_singular(G_gate, k)
    erank["gate"] = effective_rank(sig_gate if gate.shape[0] >= d else singular_values(gate))
    erank["up"] = effective_rank(singular_values(weights.up))
    erank["down"] = effective_rank(singular_values(weights.down))
    g = _np(getattr(weights, "mlp_norm", None)) if fold_mlp_norm else None
    if g is None:
        V_gate = V_gate_raw
    else:  # Gram of gate @ diag(g)
        V_gate, _ = top_right_singular(g[:, None] * G_gate * g[None, :], k)

    return LayerStructure(
        attn_eff_rank=np.array([effective_rank(s) for s in sig_heads]),
        attn_stacked_eff_rank=effective_rank(sig_stacked),
        matrix_eff_rank=erank,
        wv_norm=float(np.linalg.norm(mats["W_V"])),
        V_attn=V_attn,
        V_heads=V_heads,
        V_gate=V_gate,
        ffn_alignment=energy_fraction(V_gate, V_attn),
        ffn_alignment_heads=np.array([energy_fraction(V_gate, V_heads[h]) for h in range(H)]),
        ffn_alignment_raw_gate=energy_fraction(V_gate_raw, V_attn),
    )


@dataclass
class StructureResult:
    """Per-layer structure of a whole model, stacked over layers.

    Attributes
    ----------
    attn_eff_rank : ndarray (L, H)
    attn_stacked_eff_rank : ndarray (L,)
    matrix_eff_rank : dict of ndarray (L,), keys :data:`MATRIX_NAMES`
    wv_norm : ndarray (L,)
    V_attn : ndarray (L, k, d)
    V_heads : ndarray (L, H, k, d)
    ffn_alignment : ndarray (L,)
    ffn_alignment_heads : ndarray (L, H)
    ffn_alignment_raw_gate : ndarray (L,)
    k, d : int
    meta : dict   model facts (model_type, num_heads, num_kv_heads, head_dim, ...)
    """

    attn_eff_rank: np.ndarray
    attn_stacked_eff_rank: np.ndarray
    matrix_eff_rank: dict
    wv_norm: np.ndarray
    V_attn: np.ndarray
    V_heads: np.ndarray
    ffn_alignment: np.ndarray
    ffn_alignment_heads: np.ndarray
    ffn_alignment_raw_gate: np.ndarray
    k: int
    d: int
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.attn_eff_rank.shape[0]

    @property
    def chance(self) -> float:
        """Alignment of a Haar-random k-dim subspace: ``k / d``."""
        return self.k / self.d


def analyze_model(model_or_adapter, k: int = 20, fold_mlp_norm: bool = True) -> StructureResult:
    """Run :func:`layer_structure` on every decoder layer, one layer's weights in memory at a time.

    Parameters
    ----------
    model_or_adapter : transformers model or ModelAdapter
    k : int
        Subspace dimension (default 20, the seed's value).
    fold_mlp_norm : bool
        See :func:`layer_structure`.
    """
    from zhunt.models import ModelAdapter, get_adapter

    ad = model_or_adapter if isinstance(model_or_adapter, ModelAdapter) else get_adapter(model_or_adapter)
    per = []
    progress = Progress(ad.num_layers, "structure layer")
    for layer in range(ad.num_layers):
        w = ad.layer_weights(layer)
        per.append(layer_structure(w, k=k, fold_mlp_norm=fold_mlp_norm))
        del w
        progress.update(layer + 1)
        log.info("layer %d/%d: attn eff. rank mean %.2f, FFN alignment ratio %.3f", layer, ad.num_layers - 1,
                 per[-1].attn_eff_rank.mean(), per[-1].ffn_alignment / (k / ad.hidden_size))
    return StructureResult(
        attn_eff_rank=np.stack([p.attn_eff_rank for p in per]),
        attn_stacked_eff_rank=np.array([p.attn_stacked_eff_rank for p in per]),
        matrix_eff_rank={n: np.array([p.matrix_eff_rank[n] for p in per]) for n in MATRIX_NAMES},
        wv_norm=np.array([p.wv_norm for p in per]),
        V_attn=np.stack([p.V_attn for p in per]),
        V_heads=np.stack([p.V_heads for p in per]),
        ffn_alignment=np.array([p.ffn_alignment for p in per]),
        ffn_alignment_heads=np.stack([p.ffn_alignment_heads for p in per]),
        ffn_alignment_raw_gate=np.array([p.ffn_alignment_raw_gate for p in per]),
        k=int(k),
        d=int(ad.hidden_size),
        meta={"model_type": ad.model_type, "num_layers": ad.num_layers, "hidden_size": ad.hidden_size,
              "num_heads": ad.num_heads, "num_kv_heads": ad.num_kv_heads, "head_dim": ad.head_dim,
              "fold_mlp_norm": bool(fold_mlp_norm)},
    )


# ---------------------------------------------------------------------------------------------
# across layers
# ---------------------------------------------------------------------------------------------

def grassmann_matrix(V: np.ndarray) -> np.ndarray:
    """Grassmann similarity of every pair of layer subspaces.

    Parameters
    ----------
    V : ndarray of shape (L, k, d)
        One orthonormal-row subspace per layer.

    Returns
    -------
    ndarray of shape (L, L)
        Symmetric, ``S[l, m] = grassmann_similarity(V[l], V[m])``; diagonal 1.
    """
    L = V.shape[0]
    S = np.eye(L)
    for a in range(L):
        for b in range(a + 1, L):
            S[a, b] = S[b, a] = grassmann_similarity(V[a], V[b])
    return S


def grassmann_per_head(V_heads: np.ndarray) -> np.ndarray:
    """Per-head layer-pair similarity ``S[l, m, h] = sim(V_heads[l, h], V_heads[m, h])``.

    Parameters
    ----------
    V_heads : ndarray of shape (L, H, k, d)

    Returns
    -------
    ndarray of shape (L, L, H)
    """
    return np.stack([grassmann_matrix(V_heads[:, h]) for h in range(V_heads.shape[1])], axis=-1)


def adjacent_similarity(S: np.ndarray) -> dict:
    """Adjacent-layer curve of a similarity matrix and its drops and rises.

    Parameters
    ----------
    S : ndarray of shape (L, L)

    Returns
    -------
    dict with ndarrays of shape (L - 1,) indexed by layer ``l = 0..L-2``:
        ``sim[l] = S[l, l+1]``; ``drop[l] = sim[l-1] - sim[l]`` (NaN at l = 0);
        ``rise[l] = sim[l+1] - sim[l]`` (NaN at l = L-2).
    """
    sim = np.array([S[l, l + 1] for l in range(S.shape[0] - 1)], dtype=np.float64)
    drop = np.full_like(sim, np.nan)
    rise = np.full_like(sim, np.nan)
    drop[1:] = sim[:-1] - sim[1:]
    rise[:-1] = sim[1:] - sim[:-1]
    return {"sim": sim, "drop": drop, "rise": rise}


def depth_trend(values) -> tuple[float, float]:
    """Monotonicity of a per-layer quantity: Spearman ``(rho, p)`` of ``values`` (L,) vs layer index."""
    from scipy.stats import spearmanr

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 3 or np.allclose(values, values[0]):
        return math.nan, math.nan
    res = spearmanr(np.arange(len(values)), values)
    return float(res.statistic), float(res.pvalue)


@dataclass
class Phases:
    """Encode / compute / decode segmentation of depth (rule in the module docstring).

    Attributes
    ----------
    labels : list of str, length L        ``"encode"``, ``"compute"`` or ``"decode"`` per layer
    encode_last : int                     last encode layer (the encode boundary is gap encode_last|encode_last+1)
    decode_first : int                    first decode layer
    encode_rise : float                   rise at the encode boundary
    decode_drop : float                   drop at the decode boundary
    """

    labels: list
    encode_last: int
    decode_first: int
    encode_rise: float
    decode_drop: float

    @property
    def sizes(self) -> tuple[int, int, int]:
        return (self.labels.count("encode"), self.labels.count("compute"), self.labels.count("decode"))

    @property
    def pattern(self) -> str:
        """Phase sizes as ``"a-b-c"`` (seed Qwen2.5-3B: ``"1-33-2"``)."""
        return "-".join(str(n) for n in self.sizes)

    def layers(self, phase: str) -> list[int]:
        return [l for l, p in enumerate(self.labels) if p == phase]


def segment_phases(adjacent_sim, edge_fraction: float = 0.25) -> Phases:
    """Segment depth into encode / compute / decode from the adjacent-similarity curve.

    Parameters
    ----------
    adjacent_sim : array of shape (L - 1,)
        ``S[l, l+1]`` for l = 0..L-2 (multi-head Grassmann similarity); L >= 3.
    edge_fraction : float
        Fraction of the gaps searched at each end (default 0.25), in (0, 0.5].

    Returns
    -------
    Phases
    """
    s = np.asarray(adjacent_sim, dtype=np.float64)
    n_gaps = len(s)
    if n_gaps < 2:
        raise ValueError(f"phase segmentation needs at least 3 layers, got {n_gaps + 1}")
    if not 0 < edge_fraction <= 0.5:
        raise ValueError(f"edge_fraction must be in (0, 0.5], got {edge_fraction}")
    n_edge = max(1, min(math.ceil(edge_fraction * n_gaps), n_gaps // 2))
    rise = s[1:] - s[:-1]  # rise[g] = s[g+1] - s[g], g = 0..n_gaps-2
    g_e = int(np.argmax(rise[:n_edge]))
    lo = max(1, n_gaps - n_edge)
    drops = s[lo - 1:-1] - s[lo:]  # drop[g] = s[g-1] - s[g], g = lo..n_gaps-1
    g_d = lo + int(np.argmax(drops))
    L = n_gaps + 1
    labels = ["encode" if l <= g_e else "decode" if l > g_d else "compute" for l in range(L)]
    return Phases(labels=labels, encode_last=g_e, decode_first=g_d + 1,
                  encode_rise=float(rise[g_e]), decode_drop=float(s[g_d - 1] - s[g_d]))


def predict_bottleneck(attn_eff_rank: np.ndarray, adjacent_sim, phases: Phases | None = None,
                       candidates=None) -> dict:
    """Predict the bottleneck layer from weights alone (score in the module docstring).

    Parameters
    ----------
    attn_eff_rank : ndarray of shape (L, H)
        Per-head attention-kernel effective ranks.
    adjacent_sim : array of shape (L - 1,)
        Multi-head adjacent Grassmann similarity ``S[l, l+1]``.
    phases : Phases, optional
        Candidates default to its compute layers (all layers when None).
    candidates : sequence of int, optional
        Explicit candidate layers (overrides ``phases``).

    Returns
    -------
    dict
        ``predicted_layer``, its ``attn_eff_rank_mean/std/sem``, ``tied_layers``
        (within one standard error of the lowest mean), ``following_drop``
        (``drop_l``), ``drop_rank`` (1 = sharpest drop among candidates),
        ``confirmed_by_drop``, ``sim_prev`` (``S[l-1, l]``), ``sim_next``
        (``S[l, l+1]``), ``runner_up_layer`` and ``margin`` (its mean minus the
        predicted one's), ``candidates``.
    """
    A = np.asarray(attn_eff_rank, dtype=np.float64)
    L, H = A.shape
    s = np.asarray(adjacent_sim, dtype=np.float64)
    if candidates is None:
        candidates = phases.layers("compute") if phases is not None else range(L)
    cand = [int(c) for c in candidates]
    if not cand:
        cand = list(range(L))
    mean, std = A.mean(axis=1), A.std(axis=1)
    sem = std / math.sqrt(H)
    drop = np.full(L, np.nan)
    for l in range(1, L - 1):
        drop[l] = s[l - 1] - s[l]
    best = min(cand, key=lambda l: (mean[l], l))
    tied = [l for l in cand if mean[l] <= mean[best] + sem[best]]
    key_drop = {l: (drop[l] if np.isfinite(drop[l]) else -np.inf) for l in cand}
    pred = max(tied, key=lambda l: (key_drop[l], -mean[l], -l))
    cand_drops = sorted((key_drop[l] for l in cand), reverse=True)
    others = [l for l in cand if l != pred]
    runner = min(others, key=lambda l: (mean[l], l)) if others else None
    return {
        "predicted_layer": int(pred),
        "attn_eff_rank_mean": float(mean[pred]),
        "attn_eff_rank_std": float(std[pred]),
        "attn_eff_rank_sem": float(sem[pred]),
        "tied_layers": tied,
        "following_drop": float(drop[pred]),
        "drop_rank": int(1 + sum(d > key_drop[pred] for d in cand_drops)),
        "confirmed_by_drop": bool(key_drop[pred] >= cand_drops[0]),
        "sim_prev": float(s[pred - 1]) if pred >= 1 else math.nan,
        "sim_next": float(s[pred]) if pred < L - 1 else math.nan,
        "runner_up_layer": runner,
        "margin": float(mean[runner] - mean[pred]) if runner is not None else math.nan,
        "candidates": cand,
    }


def across_layers(res: StructureResult, edge_fraction: float = 0.25) -> dict:
    """Layer-pair similarities, adjacent curve, phases and predicted bottleneck of a :class:`StructureResult`.

    Returns
    -------
    dict
        ``S`` (L, L) multi-head Grassmann matrix, ``S_heads`` (L, L, H),
        ``adjacent`` (:func:`adjacent_similarity` of ``S``), ``phases``
        (:class:`Phases`), ``bottleneck`` (:func:`predict_bottleneck`).
    """
    S = grassmann_matrix(res.V_attn)
    S_heads = grassmann_per_head(res.V_heads)
    adj = adjacent_similarity(S)
    phases = segment_phases(adj["sim"], edge_fraction=edge_fraction)
    bott = predict_bottleneck(res.attn_eff_rank, adj["sim"], phases)
    return {"S": S, "S_heads": S_heads, "adjacent": adj, "phases": phases, "bottleneck": bott}


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

def effective_rank_tables(res: StructureResult):
    """``(heads, per_layer)`` DataFrames of ``effective_rank_heads.tsv`` and ``effective_rank.tsv``.

    ``heads``: layer, head, attn_eff_rank. ``per_layer``: layer, attn_mean,
    attn_std (ddof=0), attn_cv, attn_min, attn_max, attn_stacked, the
    :data:`MATRIX_NAMES` effective ranks, ffn_mean (mean of gate/up/down), W_V_norm.
    """
    import pandas as pd

    A = res.attn_eff_rank
    L, H = A.shape
    heads = pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L),
                          "attn_eff_rank": A.ravel()})
    mean, std = A.mean(1), A.std(1)
    per = pd.DataFrame({"layer": np.arange(L), "attn_mean": mean, "attn_std": std, "attn_cv": std / mean,
                        "attn_min": A.min(1), "attn_max": A.max(1), "attn_stacked": res.attn_stacked_eff_rank})
    for n in MATRIX_NAMES:
        per[n] = res.matrix_eff_rank[n]
    per["ffn_mean"] = np.mean([res.matrix_eff_rank[n] for n in FFN_NAMES], axis=0)
    per["W_V_norm"] = res.wv_norm
    return heads, per


def ffn_alignment_table(res: StructureResult):
    """DataFrame of ``ffn_alignment.tsv``: layer, alignment, chance (k/d), ratio, std_across_heads,
    ratio_head_mean (mean per-head alignment / chance), ratio_raw_gate (ratio with the FFN norm not
    folded into the gate; the seed's 2.py convention as far as we know)."""
    import pandas as pd

    chance = res.chance
    return pd.DataFrame({"layer": np.arange(res.num_layers), "alignment": res.ffn_alignment,
                         "chance": chance, "ratio": res.ffn_alignment / chance,
                         "std_across_heads": res.ffn_alignment_heads.std(axis=1),
                         "ratio_head_mean": res.ffn_alignment_heads.mean(axis=1) / chance,
                         "ratio_raw_gate": res.ffn_alignment_raw_gate / chance})


def summary_table(per_layer, ffn, adj: dict, phases: Phases, bottleneck: dict):
    """DataFrame of ``effective_rank_summary.tsv``: statistic, value, p_value, seed_value, seed_note.

    ``seed_value`` is the Qwen2.5-3B number of seed 001 (reference only).
    """
    import pandas as pd

    rows = []

    def add(name, value, p=math.nan):
        seed, note = SEED_QWEN25_3B.get(name, (math.nan, ""))
        rows.append({"statistic": name, "value": float(value), "p_value": float(p), "seed_value": seed,
                     "seed_note": note})

    rho, p = depth_trend(per_layer["attn_mean"])
    add("spearman_attn_vs_depth", rho, p)
    rho, p = depth_trend(per_layer["ffn_mean"])
    add("spearman_ffn_vs_depth", rho, p)
    for n in FFN_NAMES:
        rho, p = depth_trend(per_layer[n])
        add(f"spearman_{n}_vs_depth", rho, p)
    rho, p = depth_trend(per_layer["attn_cv"])
    add("spearman_attn_cv_vs_depth", rho, p)
    lmin = int(per_layer["attn_mean"].idxmin())
    add("min_attn_rank_layer", lmin)
    add("min_attn_rank_mean", per_layer["attn_mean"][lmin])
    add("min_attn_rank_std", per_layer["attn_std"][lmin])
    add("min_attn_rank_cv", per_layer["attn_cv"][lmin])
    lcv = int(per_layer["attn_cv"].idxmin())
    add("min_attn_cv_layer", lcv)
    add("min_attn_cv", per_layer["attn_cv"][lcv])
    wv, nv = per_layer["W_V"], per_layer["W_V_norm"]
    add("wv_eff_rank_mean", wv.mean())
    add("wv_eff_rank_cv", wv.std(ddof=0) / wv.mean())
    add("wv_norm_mean", nv.mean())
    add("wv_norm_cv", nv.std(ddof=0) / nv.mean())
    b = bottleneck["predicted_layer"]
    add("predicted_bottleneck_layer", b)
    add("ffn_ratio_at_bottleneck", ffn["ratio"][b])
    add("ffn_alignment_std_across_heads_at_bottleneck", ffn["std_across_heads"][b])
    add("ffn_ratio_raw_gate_at_bottleneck", ffn["ratio_raw_gate"][b])
    add("sim_into_bottleneck", bottleneck["sim_prev"])
    add("drop_after_bottleneck", bottleneck["following_drop"])
    drop = adj["drop"]
    lmax = int(np.nanargmax(drop)) if np.isfinite(drop).any() else -1
    add("max_drop_layer", lmax)
    add("max_drop", drop[lmax] if lmax >= 0 else math.nan)
    add("ffn_ratio_min", ffn["ratio"].min())
    add("ffn_ratio_min_layer", int(ffn["ratio"].idxmin()))
    for name, size in zip(("encode_size", "compute_size", "decode_size"), phases.sizes):
        add(name, size)
    return pd.DataFrame(rows)


def layer_score_table(per_layer, ffn, adj: dict, phases: Phases, bottleneck: dict, num_heads: int,
                      model: str = ""):
    """DataFrame of ``layer_scores.tsv``: every per-layer weight-only quantity the prediction uses.

    One row per decoder layer, assembled from the numbers the structure stage already computed
    (nothing is computed a second way): the attention-kernel effective rank over heads (mean, std,
    CV = std / mean, standard error std / sqrt(H): the tie band of :func:`predict_bottleneck`) from
    ``per_layer`` (:func:`effective_rank_tables`); the FFN alignment, its chance ``k / d``, the
    ratio and the std across heads from ``ffn`` (:func:`ffn_alignment_table`); the adjacent-layer
    similarities ``sim_prev = S[l-1, l]``, ``sim_next = S[l, l+1]`` and the following drop
    ``drop_after = S[l-1, l] - S[l, l+1]`` from ``adj`` (:func:`adjacent_similarity`; NaN where a
    neighbour is missing); the phase label and ``boundary`` (``"encode|compute"`` on the last
    encode layer, ``"compute|decode"`` on the last compute layer); and the ``candidate``, ``tied``
    and ``predicted`` flags of ``bottleneck`` (:func:`predict_bottleneck`).

    Parameters
    ----------
    per_layer, ffn : DataFrame with L rows
    adj : dict of ndarray of shape (L - 1,)
    phases : Phases
    bottleneck : dict
    num_heads : int
        H, the number of query heads (for the standard error).
    model : str
        Recorded in a ``model`` column.

    Returns
    -------
    DataFrame with L rows
    """
    import pandas as pd

    L = len(per_layer)
    sim = np.asarray(adj["sim"], dtype=np.float64)
    nan = np.array([np.nan])
    boundary = [""] * L
    boundary[phases.encode_last] = "encode|compute"
    if 0 < phases.decode_first <= L - 1:
        boundary[phases.decode_first - 1] = "compute|decode"
    b = int(bottleneck["predicted_layer"])
    std = per_layer["attn_std"].to_numpy()
    return pd.DataFrame({
        "model": model, "layer": np.arange(L),
        "attn_eff_rank_mean": per_layer["attn_mean"].to_numpy(), "attn_eff_rank_std": std,
        "attn_eff_rank_cv": per_layer["attn_cv"].to_numpy(), "attn_eff_rank_sem": std / math.sqrt(num_heads),
        "ffn_alignment": ffn["alignment"].to_numpy(), "ffn_chance": ffn["chance"].to_numpy(),
        "ffn_ratio": ffn["ratio"].to_numpy(), "ffn_std_across_heads": ffn["std_across_heads"].to_numpy(),
        "sim_prev": np.concatenate([nan, sim]), "sim_next": np.concatenate([sim, nan]),
        "drop_after": np.concatenate([np.asarray(adj["drop"], dtype=np.float64), nan]),
        "phase": list(phases.labels), "boundary": boundary,
        "candidate": [l in bottleneck["candidates"] for l in range(L)],
        "tied": [l in bottleneck["tied_layers"] for l in range(L)],
        "predicted": [l == b for l in range(L)],
    })


def adjacent_table(adj: dict, S_heads: np.ndarray):
    """DataFrame of ``grassmann_adjacent.tsv``: layer, next, sim, drop, rise (:func:`adjacent_similarity`)
    and sim_head_mean, the mean over heads of ``S_h[l, l+1]`` (``S_heads`` of shape (L, L, H))."""
    import pandas as pd

    L = S_heads.shape[0]
    return pd.DataFrame({"layer": np.arange(L - 1), "next": np.arange(1, L), "sim": adj["sim"],
                         "drop": adj["drop"], "rise": adj["rise"],
                         "sim_head_mean": [S_heads[l, l + 1].mean() for l in range(L - 1)]})


def phases_table(phases: Phases, bottleneck: dict):
    """DataFrame of ``phases.tsv``: layer, phase, candidate (a compute-phase layer the prediction considers)."""
    import pandas as pd

    L = len(phases.labels)
    return pd.DataFrame({"layer": np.arange(L), "phase": phases.labels,
                         "candidate": [l in bottleneck["candidates"] for l in range(L)]})


def bottleneck_table(bott: dict, ffn, adj: dict, phases: Phases, res: StructureResult, model: str):
    """One-row DataFrame of ``bottleneck.tsv``: the prediction of :func:`predict_bottleneck`, the FFN
    alignment at the predicted layer (``ffn``: :func:`ffn_alignment_table`), the phase boundaries and the
    largest drop ``max_l drop_l`` of the adjacent curve ``adj`` (-1 / NaN when no drop is defined)."""
    import pandas as pd

    finite = np.isfinite(adj["drop"])
    lmax = int(np.nanargmax(adj["drop"])) if finite.any() else -1
    b = bott["predicted_layer"]
    return pd.DataFrame([{
        "model": model, "predicted_layer": b,
        "attn_eff_rank_mean": bott["attn_eff_rank_mean"], "attn_eff_rank_std": bott["attn_eff_rank_std"],
        "attn_eff_rank_sem": bott["attn_eff_rank_sem"],
        "tied_layers": ",".join(map(str, bott["tied_layers"])),
        "runner_up_layer": bott["runner_up_layer"], "margin": bott["margin"],
        "sim_prev": bott["sim_prev"], "sim_next": bott["sim_next"], "following_drop": bott["following_drop"],
        "drop_rank": bott["drop_rank"], "confirmed_by_drop": bott["confirmed_by_drop"],
        "ffn_ratio": ffn["ratio"][b], "ffn_std_across_heads": ffn["std_across_heads"][b],
        "ffn_ratio_raw_gate": ffn["ratio_raw_gate"][b],
        "encode_last_layer": phases.encode_last, "decode_first_layer": phases.decode_first,
        "encode_rise": phases.encode_rise, "decode_drop": phases.decode_drop,
        "max_drop_layer": lmax, "max_drop": adj["drop"][lmax] if lmax >= 0 else math.nan,
        "phases": phases.pattern, "candidates": f"{bott['candidates'][0]}-{bott['candidates'][-1]}",
        "k": res.k, "d": res.d, "num_layers": res.num_layers, "num_heads": res.attn_eff_rank.shape[1],
    }])


@dataclass
class StructureTables:
    """Everything the structure stage writes, computed from one :class:`StructureResult`.

    Attributes
    ----------
    heads, per_layer, summary, adjacent, ffn, phases_df, bottleneck_df, layer_scores : DataFrame
        The tables (:func:`effective_rank_tables`, :func:`summary_table`, :func:`adjacent_table`,
        :func:`ffn_alignment_table`, :func:`phases_table`, :func:`bottleneck_table`,
        :func:`layer_score_table`).
    S : ndarray (L, L)                  multi-head Grassmann matrix
    S_heads : ndarray (L, L, H)         per-head Grassmann matrices
    adj : dict                          :func:`adjacent_similarity` of ``S``
    phases : Phases
    bottleneck : dict                   :func:`predict_bottleneck`
    """

    heads: object
    per_layer: object
    summary: object
    adjacent: object
    ffn: object
    phases_df: object
    bottleneck_df: object
    layer_scores: object
    S: np.ndarray
    S_heads: np.ndarray
    adj: dict
    phases: Phases
    bottleneck: dict


def structure_tables(res: StructureResult, model: str, edge_fraction: float = 0.25) -> StructureTables:
    """Across-layer analyses (:func:`across_layers`) and every table of the structure stage.

    Parameters
    ----------
    res : StructureResult
        :func:`analyze_model` of the model.
    model : str
        Recorded in the ``model`` columns.
    edge_fraction : float
        Fraction of depth searched for the encode / decode boundaries (:func:`segment_phases`).
    """
    x = across_layers(res, edge_fraction=edge_fraction)
    adj, phases, bott = x["adjacent"], x["phases"], x["bottleneck"]
    heads_df, per_df = effective_rank_tables(res)
    ffn_df = ffn_alignment_table(res)
    return StructureTables(
        heads=heads_df, per_layer=per_df, summary=summary_table(per_df, ffn_df, adj, phases, bott),
        adjacent=adjacent_table(adj, x["S_heads"]), ffn=ffn_df, phases_df=phases_table(phases, bott),
        bottleneck_df=bottleneck_table(bott, ffn_df, adj, phases, res, model),
        layer_scores=layer_score_table(per_df, ffn_df, adj, phases, bott, res.attn_eff_rank.shape[1], model),
        S=x["S"], S_heads=x["S_heads"], adj=adj, phases=phases, bottleneck=bott)


def check_structure_input(num_layers: int, head_dim: int, hidden_size: int, k: int, where: str) -> None:
    """Raise :class:`ZhuntError` unless the model has >= 3 decoder layers (``where`` names the model folder)
    and ``0 < k <= head_dim``, ``k < hidden_size`` (config key ``structure.k``)."""
    from zhunt.errors import ZhuntError

    if num_layers < 3:
        raise ZhuntError(where, f"structure analysis needs at least 3 decoder layers, the model has {num_layers}")
    if not 0 < k <= min(head_dim, hidden_size - 1):
        raise ZhuntError("structure.k", f"k={k} must satisfy 0 < k <= head_dim={head_dim} "
                                        f"and k < hidden_size={hidden_size}")
