"""Null and planted inputs of the verdict functions: one seeded generator per input shape.

Each generator draws from its ``rng`` (:class:`numpy.random.Generator`) or ``seed`` only, so a
(generator, seed) pair is one reproducible input. The tests (``tests/test_*.py``) and the
calibration bench (``bench/calibration.py``, through :mod:`zhunt.calibration.cases`) import
these functions; neither keeps its own copy.

A *null* input has no effect of the kind the verdict looks for (its label should be the null
one); a *planted* input has a known effect (its label should be the positive one). Where the
same generator gives both, the effect size is an argument (0 = null).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["interchange_records", "grid_records", "donor_records", "unaligned_states", "converging_states",
           "rotated_pair", "adjusting_pair", "random_walks", "iid_series", "paired_updates", "zdominated_updates",
           "lengthscale_spectrum", "token_clouds", "CAL_SHAPES", "flat_matrix", "family_layers", "qk_random_layers",
           "qk_shared_layers", "dip", "weight_profiles", "paired_correct", "bridge_pair", "pooled_pairs"]


# ============================================================================ Exp. A
def interchange_records(rng, n, p_z, p_r, npe_z, npe_r, *, n_hits_z=None, n_hits_r=None) -> pd.DataFrame:
    """Records of the Exp. A interchange design's ``z`` and ``random_matched`` subspaces on ``n`` pairs.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        Pairs; every pair's clean runs diverge (``first_differs``).
    p_z, p_r : float
        Probability that the Z / matched-random patch hits the donor run's first answer token.
    npe_z, npe_r : float or ndarray of shape (n,)
        Mean NPE (per-pair values drawn N(mean, 0.3)), or the per-pair values themselves.
    n_hits_z, n_hits_r : int, optional
        Exact hit counts (the first ``n_hits`` pairs) instead of Bernoulli draws.

    Returns
    -------
    pandas.DataFrame
        ``2 n`` rows in the :data:`zhunt.experiments.patching_metrics.RECORD_COLUMNS` layout.
    """
    rows = []
    hz = rng.random(n) < p_z if n_hits_z is None else np.arange(n) < n_hits_z
    hr = rng.random(n) < p_r if n_hits_r is None else np.arange(n) < n_hits_r
    ez = rng.normal(npe_z, 0.3, n) if np.ndim(npe_z) == 0 else npe_z
    er = rng.normal(npe_r, 0.3, n) if np.ndim(npe_r) == 0 else npe_r
    for name, hits, e in (("z", hz, ez), ("random_matched", hr, er)):
        for i in range(n):
            rows.append({"pair": i, "subspace": name, "first_differs": True, "iia_hit": bool(hits[i]),
                         "value_differs": True, "value_hit": bool(hits[i]), "true_hit": False, "npe": e[i],
                         "ld_seq": 0.0, "lang_effect": 0.0, "answer_lang": "en", "base_answer_lang": "en",
                         "dh_norm": 1.0})
    return pd.DataFrame(rows)


def grid_records(rng, n=30, *, z_change=0.3, zp_change=0.3, rand_change=0.3, z_keep=0.8, zp_keep=0.8,
                 n_random=5) -> pd.DataFrame:
    """Records of one configuration of the seed's patching grid (same-problem source), drawn per problem.

    Each condition changes the answer (``extracted`` = key + 1 instead of the key) with its
    probability and keeps the target language with its probability, independently per problem;
    ``full`` copies the Z patch's answer and the Z⊥ patch's language. Equal probabilities for
    ``z``, ``zperp`` and ``random`` are the null.

    Returns
    -------
    pandas.DataFrame
        ``problem, condition, subspace, extracted (Int64), language_preserved, text, answer``
        (:func:`zhunt.experiments.patching.config_metrics`'s input).
    """
    rows = []
    for i in range(n):
        pid, key = f"p{i:02d}", 100 + i

        def rec(cond, changed, kept, r=-1):
            rows.append({"problem": pid, "condition": cond, "subspace": r, "extracted": key + 1 if changed else key,
                         "language_preserved": bool(kept), "text": f"out {cond} {i}", "answer": key})

        zc, zk = rng.random() < z_change, rng.random() < z_keep
        pc, pk = rng.random() < zp_change, rng.random() < zp_keep
        rec("none", False, True)
        rec("z", zc, zk)
        rec("zperp", pc, pk)
        rec("full", zc, pk)
        for r in range(n_random):
            rec("random", rng.random() < rand_change, rng.random() < z_keep, r)
    df = pd.DataFrame(rows)
    df["extracted"] = df["extracted"].astype("Int64")
    return df


def donor_rows(n: int, outcome, n_random: int = 5) -> pd.DataFrame:
    """Records of one donor-design configuration from a per-problem outcome rule.

    A transferred answer is the donor's (``200 + i``), otherwise the own key (``100 + i``).

    Parameters
    ----------
    n : int
        Problems.
    outcome : callable
        ``outcome(i) -> dict`` of ``(transferred, language kept)`` pairs for ``"z"``, ``"zperp"``,
        ``"full"`` and a list ``"random"`` of ``n_random`` pairs.
    n_random : int

    Returns
    -------
    pandas.DataFrame
        :func:`zhunt.experiments.patching.donor_metrics`'s input.
    """
    rows = []
    for i in range(n):
        pid, own, donor = f"p{i:02d}", 100 + i, 200 + i
        o = outcome(i)
        conds = [("none", (False, True), -1), ("z", o["z"], -1), ("zperp", o["zperp"], -1), ("full", o["full"], -1)]
        conds += [("random", o["random"][r], r) for r in range(n_random)]
        for cond, (transferred, kept), r in conds:
            rows.append({"problem": pid, "condition": cond, "subspace": r, "donor": f"p{(i + 1) % n:02d}",
                         "donor_answer": donor, "answer": own, "extracted": donor if transferred else own,
                         "language_preserved": bool(kept), "text": f"out {cond} {i}"})
    df = pd.DataFrame(rows)
    df["extracted"] = df["extracted"].astype("Int64")
    return df


def donor_records(rng, n=30, *, z_tr=0.2, zp_tr=0.2, rand_tr=0.2, z_keep=0.9, zp_keep=0.9,
                  n_random=5) -> pd.DataFrame:
    """Records of one donor-design configuration, drawn per problem (equal transfer rates = null):
    :func:`donor_rows` with independent draws (the full patch transfers when Z or Z⊥ does)."""
    def outcome(i):
        zt, pt, pk = rng.random() < z_tr, rng.random() < zp_tr, rng.random() < zp_keep
        return {"z": (zt, rng.random() < z_keep), "zperp": (pt, pk), "full": (zt or pt, pk),
                "random": [(rng.random() < rand_tr, rng.random() < z_keep) for _ in range(n_random)]}

    return donor_rows(n, outcome, n_random)


# ============================================================================ seed 003: depth
def unaligned_states(seed, L=6, N=16, D=24) -> np.ndarray:
    """Null of the depth verdicts: each (language, problem) an independent random walk through depth
    (no shared problem identity, no convergence). Shape (2, L + 1, N, D)."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((2, L + 1, N, D)), axis=1)


def converging_states(seed, L=6, N=16, D=24) -> np.ndarray:
    """Planted for the depth verdicts (Theorem 2's setting): unrelated language states at j = 0, then
    every layer adds a fresh per-problem update shared by both languages plus a small language-specific
    one (update differences tiny against the spread of the shared updates). Shape (2, L + 1, N, D)."""
    rng = np.random.default_rng(seed)
    H = np.empty((2, L + 1, N, D))
    H[:, 0] = rng.standard_normal((2, N, D))
    for j in range(L):
        H[:, j + 1] = H[:, j] + rng.standard_normal((N, D)) + 0.1 * rng.standard_normal((2, N, D))
    return H


def rotated_pair(rng, n=40, d=16, *, map="rotation", noise=0.3) -> tuple[np.ndarray, np.ndarray]:
    """States ``X`` (n, d) with a decaying spectrum and their image ``Y`` (n, d) under a map.

    ``map``: ``"rotation"`` (a Haar rotation plus noise of sd ``noise``), ``"scaling"``
    (a diagonal scaling from 0.3 to 3, no noise: only an affine map fits) or ``"unrelated"``
    (``Y`` independent standard normal).
    """
    X = rng.standard_normal((n, d)) * np.linspace(4, 0.5, d)
    if map == "rotation":
        Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return X, X @ Q + noise * rng.standard_normal((n, d))
    if map == "scaling":
        return X, X @ np.diag(np.linspace(0.3, 3, d))
    if map == "unrelated":
        return X, rng.standard_normal((n, d))
    raise ValueError(f"unknown map {map!r}")


# ============================================================================ seed 003: time series
def adjusting_pair(T=500, speed=0.4, seed=0) -> np.ndarray:
    """A cointegrated pair, shape (T, 2): ``x`` a random walk that never adjusts, ``y`` error-corrects
    towards it, ``dy_t = -speed (y - x)_{t-1} + e_t`` (only the second series adjusts)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((T, 2))
    x = np.cumsum(e[:, 0])
    y = np.zeros(T)
    for t in range(1, T):
        y[t] = y[t - 1] - speed * (y[t - 1] - x[t - 1]) + e[t, 1]
    return np.c_[x, y]


def random_walks(rng, T=200, m=2) -> np.ndarray:
    """``m`` independent Gaussian random walks of length ``T``, shape (T, m) (no cointegration)."""
    return np.cumsum(rng.standard_normal((T, m)), axis=0)


def iid_series(rng, n=100, kind="gaussian") -> np.ndarray:
    """An i.i.d. series of length ``n`` (no volatility clustering): standard normal, or chi-square(4)
    (``kind="chisq"``: positive and skewed like squared norms)."""
    return rng.standard_normal(n) if kind == "gaussian" else rng.chisquare(4, n)


# ============================================================================ Exp. B
def paired_updates(rng, n, layers, d, *, shift_layer=None, shift=0.0, V=None) -> list[np.ndarray]:
    """Per-layer pooled updates of ``n`` problems in zh then en, shape (2 n, d) per layer.

    Each problem has a shared update plus independent language noise of sd 0.5 (the languages are
    exchangeable within a problem: the zh − en null); at ``shift_layer`` the zh updates get
    ``shift`` times extra content inside ``span(V)`` (V of shape (k, d)).
    """
    out = []
    for l in range(layers):
        base = rng.standard_normal((n, d))
        zh = base + 0.5 * rng.standard_normal((n, d))
        en = base + 0.5 * rng.standard_normal((n, d))
        if l == shift_layer:
            zh = zh + shift * rng.standard_normal((n, V.shape[0])) @ V
        out.append(np.vstack([zh, en]))
    return out


def zdominated_updates(rng, n, d, V, *, strength=0.0) -> np.ndarray:
    """Isotropic updates (n, d) plus ``strength`` times standard-normal content inside ``span(V)``:
    0 is the null of the Z-dominated label (R at its random expectation)."""
    return rng.standard_normal((n, d)) + strength * rng.standard_normal((n, V.shape[0])) @ V


# ============================================================================ Exp. C
def lengthscale_spectrum(rng, d=40, *, n_short=None, level=0.0) -> np.ndarray:
    """Natural-log ARD lengthscales (d,).

    ``n_short=None``: one scale for every axis, log10 ell ~ N(level, 0.3) (no separated group:
    the |Z| rule's null). Otherwise ``n_short`` axes at log10 ell ~ N(-0.5, 0.15) and the rest at
    N(1.5, 0.15), in random order (a planted |Z| = ``n_short``).
    """
    if n_short is None:
        x = rng.normal(level, 0.3, d)
    else:
        x = np.r_[rng.normal(-0.5, 0.15, n_short), rng.normal(1.5, 0.15, d - n_short)][rng.permutation(d)]
    return x * np.log(10)


def token_clouds(rng, n_problems=8, d=8, *, problem_scale=0.0, lang_offset=0.0, n_tokens=(8, 14)):
    """Token clouds of ``n_problems`` problems in zh and en: lists of (T_i, d) arrays.

    Axes 0-2 carry a per-problem centre of sd ``problem_scale`` shared by both languages (problem
    identity); axes 3-5 a language offset of ``+-lang_offset``; every token has unit noise. Both
    zero: the held-out tests' full null.
    """
    zh, en = [], []
    for _ in range(n_problems):
        c = rng.normal(0, 1, 3) * problem_scale
        for out, off in ((zh, lang_offset), (en, -lang_offset)):
            X = rng.normal(0, 1, (int(rng.integers(*n_tokens)), d))
            X[:, :3] += c
            X[:, 3:6] += off
            out.append(X)
    return zh, en


# ============================================================================ seed 002: families
#: Family shapes of the calibration layers (Qwen2-like GQA at d = 32).
CAL_SHAPES = {"q_proj": (48, 32), "k_proj": (16, 32), "v_proj": (16, 32), "o_proj": (32, 48),
              "gate_proj": (96, 32), "up_proj": (96, 32), "down_proj": (32, 96)}


def flat_matrix(rng, shape) -> np.ndarray:
    """A matrix with all singular values 1 (orthonormal rows or columns), random singular vectors."""
    n, m = shape
    r = min(n, m)
    U, _ = np.linalg.qr(rng.standard_normal((n, r)))
    V, _ = np.linalg.qr(rng.standard_normal((m, r)))
    return U @ V.T


def family_layers(kind, seed, n_layers=8) -> list[dict]:
    """Per-layer weight families of :data:`CAL_SHAPES`.

    ``kind``: ``"gaussian"`` or ``"flat"`` (independent layers: the null), ``"planted"`` (one shared
    matrix per family; each layer is it under a fresh residual-side Haar rotation plus noise of sd 0.5).
    """
    from scipy.stats import ortho_group

    from zhunt.weights.families import RESIDUAL_AXIS

    rng = np.random.default_rng(1000 + seed)
    if kind == "gaussian":
        return [{f: rng.standard_normal(s) for f, s in CAL_SHAPES.items()} for _ in range(n_layers)]
    if kind == "flat":
        return [{f: flat_matrix(rng, s) for f, s in CAL_SHAPES.items()} for _ in range(n_layers)]
    base = {f: rng.standard_normal(s) for f, s in CAL_SHAPES.items()}
    layers = []
    for _ in range(n_layers):
        mats = {}
        for f, W in base.items():
            ax = RESIDUAL_AXIS[f]
            R = ortho_group.rvs(W.shape[ax], random_state=rng)
            X = W @ R if ax == 1 else R @ W
            mats[f] = X + 0.5 * rng.standard_normal(X.shape)
        layers.append(mats)
    return layers


# ============================================================================ seed 004: QK
def qk_random_layers(n_layers=4, H=4, H_kv=2, dh=5, d=16, seed=0) -> list[tuple]:
    """Independent random QK factors per layer: ``(Q (H, dh, d), K (H_kv, dh, d), kv_head (H,))``."""
    rng = np.random.default_rng(seed)
    kv = np.arange(H) // (H // H_kv)
    return [(rng.standard_normal((H, dh, d)), rng.standard_normal((H_kv, dh, d)), kv) for _ in range(n_layers)]


def qk_shared_layers(seed, noise, n_layers=6, H=4, H_kv=2, dh=8, d=32) -> list[tuple]:
    """Every layer a positive multiple (0.5-2) of one shared QK operator plus independent noise of
    relative size ``noise`` on Q and K (expected cosine to the anchor ~ 1 / (1 + noise^2)^2)."""
    rng = np.random.default_rng(200 + seed)
    Q0, K0 = rng.standard_normal((H, dh, d)), rng.standard_normal((H_kv, dh, d))
    kv = np.arange(H) // (H // H_kv)
    return [(s * (Q0 + noise * rng.standard_normal(Q0.shape)), K0 + noise * rng.standard_normal(K0.shape), kv)
            for s in rng.uniform(0.5, 2.0, size=n_layers)]


# ============================================================================ layer prediction
def dip(x, b) -> np.ndarray:
    """Distance from the bottleneck ``b``, three times steeper after it (seed: decode 'snaps' out)."""
    return np.where(x < b, b - x, 3.0 * (x - b))


def weight_profiles(L, rng, dip_at=None) -> pd.DataFrame:
    """A weight-score table (``structure/layer_scores.tsv`` columns) with a smooth effective-rank
    profile; ``dip_at``: an asymmetric dip at that bottleneck (slow approach, sharp break-out)."""
    x = np.arange(L)
    rank = 40 + 5 * np.sin(x / 3.0) + rng.normal(scale=0.5, size=L)
    if dip_at is not None:
        rank = 40 + 12 * (dip(x, dip_at) / L) + rng.normal(scale=0.3, size=L)
    sim = rng.uniform(0.2, 0.5, size=L)
    return pd.DataFrame({"layer": x, "attn_eff_rank_mean": rank, "attn_eff_rank_cv": rng.uniform(0.05, 0.2, L),
                         "ffn_ratio": rng.uniform(0.5, 1.5, L), "sim_prev": np.r_[np.nan, sim[1:]],
                         "drop_after": np.r_[np.nan, rng.normal(size=L - 2), np.nan]})


# ============================================================================ Phase 0
def paired_correct(rng, n=40, p_en=0.5, p_lang=0.5, agree=0.6) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem correctness (bool (n,), bool (n,)) in a language and in English.

    With probability ``agree`` a problem's outcome is shared (drawn once with the mean rate);
    otherwise each language draws its own with its own rate. ``p_lang == p_en`` is the null
    (discordant pairs symmetric).
    """
    shared = rng.random(n) < agree
    common = rng.random(n) < (p_en + p_lang) / 2
    a = np.where(shared, common, rng.random(n) < p_lang)
    b = np.where(shared, common, rng.random(n) < p_en)
    return a, b


# ============================================================================ Exp. D and Phase 2
def bridge_pair(rng, n=40, k=8, *, rotation=True, noise=0.2) -> tuple[np.ndarray, np.ndarray]:
    """Z-coordinates ``X``, ``Y`` (n, k) of n problems in two languages: ``Y = X Q + noise`` with a Haar
    rotation ``Q`` (planted), or ``Y`` independent of ``X`` (``rotation=False``: the null)."""
    X = rng.standard_normal((n, k))
    if not rotation:
        return X, rng.standard_normal((n, k))
    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    return X, X @ Q + noise * rng.standard_normal((n, k))


def pooled_pairs(rng, n=24, d=32, k=6, *, lang_scale=1.0, problem_scale=2.0):
    """Pooled vectors of ``n`` problems in two languages and the planted problem subspace.

    Problem identity lives in a random k-dim subspace ``V`` (coordinates of sd ``problem_scale``,
    shared by both languages); each language adds independent isotropic noise of sd ``lang_scale``.

    Returns
    -------
    X_a, X_b : ndarray of shape (n, d)
    V : ndarray of shape (k, d)
        Orthonormal rows spanning the problem subspace.
    """
    from zhunt.subspace import random_subspace

    V = random_subspace(k, d, rng)
    ident = problem_scale * rng.standard_normal((n, k)) @ V
    return (ident + lang_scale * rng.standard_normal((n, d)), ident + lang_scale * rng.standard_normal((n, d)), V)
