"""Exp. C: a data-driven Z from ARD-MMD lengthscales (seed 000), the seed's objective and a well-posed one.

Data
----
For decoder layer ``l`` (hidden index ``j = hidden_index(l, site)``, :mod:`zhunt.models.site`:
``j = l`` at the default site ``input``, the stream layer ``l`` reads; ``l + 1`` at ``output``)
and each of the ``N`` problems present in both languages, the token cloud of a
prompt is its hidden states with special tokens (BOS, ...) removed:
``X_i^zh`` (T_zh^i, d) and ``X_i^en`` (T_en^i, d), ``T_zh^i != T_en^i`` allowed.

Coordinates. ``basis="coord"``: the residual-stream axes, ``c = h``.
``basis="rotated"``: ``c = B h`` with ``B = [V_Z; V_Z⊥]`` (d, d) orthonormal,
``V_Z`` (k, d) the SVD mask and ``V_Z⊥`` an orthonormal basis of its
complement (``scipy.linalg.null_space``), so the first ``k`` coordinates span
Z exactly. ARD can only switch coordinate axes on or off; Z is a rotated
subspace, so only the rotated basis lets ARD recover Z exactly.

Scale. Residual streams have a few huge-variance axes, and with ``d`` in the
hundreds an RBF kernel with ``ell = 1`` on raw (or z-scored) coordinates is 0
for every pair (``exp(-d)``) and has no gradient. Every coordinate is
therefore z-scored (mean and std over all fitted tokens of both languages)
and divided by a global ``sigma_0``, the square root of the median squared
distance between z-scored tokens (a seeded subsample): ``u = (c - m) / (s
sigma_0)``. Lengthscales are reported in these units: ``log ell = 0`` is the
median heuristic (the median token pair has ``k = e^{-1/2}``).

Kernel and estimator: :mod:`zhunt.activations.mmd` (ARD-RBF, unbiased MMD²).

Objectives (optimised over ``log ell`` with Adam)
------------------------------------------------
``seed`` — the seed's objective as written::

    L_seed(ell) = sum_i MMD²(X_i^zh, X_i^en; ell) + lam * sum_j 1/ell_j.

Both terms fall as every ``ell_j -> inf`` (all kernel values -> 1, MMD² -> 0,
penalty -> 0): the infimum is the empty Z and is never attained. What
"survives" after a finite run is set by the step budget (Adam moves each
``log ell_j`` by about ``lr`` per step). We run it to reproduce the seed and
report the collapse (growth of the median and of the 10th percentile of
``log10 ell`` per 100 steps, the ``converged`` flag, full trajectories).

``wellposed`` — the default: make paired prompts indistinguishable while
keeping different problems distinguishable::

    L_wp(ell) = N * [ mean_i MMD²(X_i^zh, X_i^en; ell)
                      - gamma * mean_{(i, j) in C} MMD²(X_i^zh, X_j^en; ell) ]
                + lam * sum_j 1/ell_j,

with ``C`` the contrast pairs: ``contrast="cross"`` (default) mismatched
cross-language pairs ``i != j`` — each problem against ``n_neg`` fixed,
seeded partners (all ``N - 1`` when ``n_neg=None``); ``contrast="within"``
uses within-language pairs ``(X_i^zh, X_j^zh)`` and ``(X_i^en, X_j^en)``.
The factor ``N`` keeps the data term on the seed's scale (its first term *is*
the seed's), so one ``lam`` grid serves both. Why this form:

* it is bounded below (MMD² <= 2 for a kernel bounded by 1), and ``ell -> inf``
  gives 0, which any axis where matched pairs are closer than mismatched
  pairs beats — the optimum is finite and non-empty whenever such axes exist;
* an axis carrying only language (same offset for every problem) enters the
  matched and the mismatched cross-language MMDs alike, so in the linear
  (large-``ell``) regime it earns nothing and the penalty switches it off; in
  the kernel regime it actively hurts (it shrinks every cross-language kernel
  value and with it the problem contrast) — so it is driven to large ``ell``;
* an axis shared across languages that varies across problems raises the
  mismatched term only — it is kept;
* a ratio ``mean MMD²_lang / mean MMD²_contrast`` was rejected: for large
  ``ell`` both terms scale like ``sum_j w_j (.)`` with ``w_j = ell_j^-2``, so
  the ratio is invariant to a common rescaling of ``ell`` and the penalty
  again drives every ``ell`` to infinity (the seed's collapse returns).
  ``gamma = 1`` makes the data term a contrastive retrieval loss.

Initialisation
--------------
``cold``: ``log ell = 0`` (the median heuristic). ``warm`` (the seed's SVD
warm start): ``log ell_j = -log(z_j + eps) + c`` with ``z_j = sum_r V[r, j]^2``
the energy of axis ``j`` in Z (``V = V_Z`` in the coordinate basis; in the
rotated basis ``z`` is 1 on the first ``k`` axes and 0 elsewhere),
``eps = 1e-3``; the constant ``c`` only fixes the overall bandwidth so that
the median token pair again has ``D = 1`` (same starting scale as ``cold``),
the seed's profile across axes is kept exactly.

Optimisation: Adam (``lr`` 0.01), at most ``max_steps``; after ``min_steps``
a plateau stop ends the run when the objective improved by less than
``rtol = 1e-3`` of its scale (the sum of the absolute terms) over the last
``window = 50`` steps (``converged = True``).

Read-outs
---------
* ``|Z|`` (``z_size``, the headline): the mixture-model count of
  :func:`z_size` — the axes of the lower (short-lengthscale) component of a
  2-component Gaussian mixture on ``log10 ell`` (:func:`zhunt.stats.gmm_bimodality`)
  when the spectrum is bimodal (BIC gain > :data:`BIMODAL_BIC_GAIN`, Ashman's
  D > :data:`BIMODAL_ASHMAN_D`); a unimodal spectrum gives all or nothing
  (``d`` or 0, by :data:`LOG10_ELL_OFF`). It can take any value in 0..d.
  The headline run is the one the held-out test refits
  (:func:`ard_headline`), reported with that test's verdict.
* The seed's count, ``#{j : ell_j < tau}`` with ``tau`` the median of the
  converged ``ell``, kept for comparison. The median of one run's own ``ell``
  gives ``d/2`` by construction, so ``tau`` is pooled: over the λ grid of one
  objective, basis and init at the layer (:func:`ard_layer`,
  ``n_active_median``), and over all layers as well (:func:`ard_summary`,
  ``z_size_median``); pooled, it still forces the mean count over the pooled
  runs to ``d/2``, so only differences between runs carry information. Inits
  are never pooled: the warm start's lengthscales sit on another scale.
  ``n_active_alt`` is the mixture's lower component without the bimodality
  check.
* Overlap with SVD-Z (:func:`svd_overlap`): the fraction of ARD's surviving
  axes that lie among the top-|Z| axes by ``z_j``; chance is ``|T|/d``, with a
  hypergeometric p-value.
* Held-out test (:func:`heldout_test`, Liu et al. 2020 practice): fit
  ``ell`` on half of the problems; on the other half run permutation
  two-sample tests with the learned kernel — language (zh_i vs en_i) and
  problem (i vs a partner j in the same language).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from zhunt.data.pairing import pair_by_problem
from zhunt.errors import ZhuntError
from zhunt.progress import Progress
from zhunt.activations.mmd import CloudSet, permutation_mmd2, resolve_device
from zhunt.stats import gmm_bimodality
from zhunt.subspace import canonical_signs

__all__ = [
    "OBJECTIVES",
    "INITS",
    "BASES",
    "WARM_EPS",
    "load_token_clouds",
    "rotation_basis",
    "z_energy",
    "Standardiser",
    "cold_start",
    "warm_start",
    "ArdProblem",
    "ArdFit",
    "fit_ard",
    "BIMODAL_BIC_GAIN",
    "BIMODAL_ASHMAN_D",
    "LOG10_ELL_OFF",
    "HELDOUT_ALPHA",
    "is_bimodal",
    "z_size",
    "z_criteria",
    "heldout_tests",
    "heldout_verdict",
    "ard_headline",
    "svd_overlap",
    "growth_rate",
    "ArdLayer",
    "ard_layer",
    "ArdSummary",
    "ard_summary",
    "summary_table",
    "seed_collapse",
    "middle_lambda",
    "HeldoutTest",
    "heldout_test",
    "run_key",
    "lam_id",
    "TSV_COLUMNS",
]

log = logging.getLogger("zhunt.activations.ard")

OBJECTIVES = ("seed", "wellposed")
INITS = ("warm", "cold")
BASES = ("coord", "rotated")
CONTRASTS = ("cross", "within")
WARM_EPS = 1e-3
#: |Z| rule (:func:`z_size`): two modes need a BIC gain above this ...
BIMODAL_BIC_GAIN = 10.0
#: ... and Ashman's D above this (well-separated modes).
BIMODAL_ASHMAN_D = 2.0
#: An axis group whose log10 lengthscale is at or above this is switched off (ell >= 10 x median heuristic).
LOG10_ELL_OFF = 1.0
#: Held-out tests (:func:`heldout_verdict`) reject at this level.
HELDOUT_ALPHA = 0.05
#: Columns of the per-layer table of :func:`ard_layer` (one row per run).
TSV_COLUMNS = ["model", "layer", "lambda", "init", "objective", "basis", "steps", "converged", "mmd_lang",
               "mmd_problem", "penalty", "total", "n_active_median", "threshold_log10", "n_active_alt",
               "z_size", "z_rule",
               "bic_gain", "ashman_d", "overlap_svd", "overlap_chance", "overlap_p",
               "log10_ell_median_start", "log10_ell_median_end", "growth_per_100_steps", "growth_q10_per_100_steps",
               "frac_grown",
               "seconds", "n_problems", "d", "k_warm"]


# =========================================================================== data
def load_token_clouds(store, layer: int, langs=("zh", "en"), problem_ids=None, site: str = "input"):
    """Token clouds (special tokens removed) of every problem, paired across ``langs``.

    The problems are paired by :func:`zhunt.data.pairing.pair_by_problem` (a
    problem missing in one language is an error).

    Parameters
    ----------
    store : zhunt.data.store.ActivationStore
    layer : int
        Decoder layer ``l``, read at hidden index ``hidden_index(l, site)``.
    langs : sequence of str
    problem_ids : sequence of str, optional
        Subset (default: every problem, in the store's order for ``langs[0]``).
    site : {"input", "output"}
        :mod:`zhunt.models.site`.

    Returns
    -------
    ids : list of str
    clouds : dict
        ``{lang: [ndarray (T_i, d) float32, ...]}`` aligned with ``ids``.
    """
    if not 0 <= int(layer) < store.num_layers:
        raise ZhuntError(str(store.path), f"layer {layer} outside 0..{store.num_layers - 1}")
    from zhunt.models.site import hidden_index

    j = hidden_index(int(layer), site)
    ids, _ = pair_by_problem({lang: store.prompt_ids(lang) for lang in langs}, where=str(store.path))
    if problem_ids is not None:
        want = set(map(str, problem_ids))
        ids = [p for p in ids if p in want]
    if len(ids) < 2:
        raise ZhuntError(str(store.path), f"need at least 2 problems present in {list(langs)}, found {len(ids)}")
    clouds = {lang: [] for lang in langs}
    for p in ids:
        for lang in langs:
            h = store.tokens(p, lang, j)
            keep = ~store.token_mask(p, lang)
            if keep.sum() < 2:
                raise ZhuntError(str(store.path), f"prompt ({p}, {lang}) has {int(keep.sum())} non-special "
                                                  "tokens; the unbiased MMD² needs at least 2")
            clouds[lang].append(h[keep])
    return ids, clouds


def rotation_basis(V_Z: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``B = [V_Z; V_Z⊥]`` (d, d): rotated coordinates are ``B h``.

    Parameters
    ----------
    V_Z : ndarray of shape (k, d)
        Orthonormal rows.

    Returns
    -------
    ndarray of shape (d, d), orthogonal; rows ``0..k-1`` are ``V_Z``, the
    rest an orthonormal basis of the complement (signs canonicalised).
    """
    from scipy.linalg import null_space

    V = np.asarray(V_Z, dtype=np.float64)
    comp = canonical_signs(null_space(V).T)
    return np.vstack([V, comp])


def z_energy(V_Z: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """Energy of each coordinate axis in Z: ``z_j = sum_r (V_Z B^T)[r, j]^2``, shape (d,).

    ``basis=None`` means the coordinate axes (``B = I``): ``z_j = sum_r V_Z[r, j]^2``.
    ``sum_j z_j = k``.
    """
    V = np.asarray(V_Z, dtype=np.float64)
    W = V if basis is None else V @ np.asarray(basis, dtype=np.float64).T
    return (W ** 2).sum(axis=0)


@dataclass
class Standardiser:
    """Per-coordinate z-scoring followed by the global median-heuristic scale.

    ``u = (c - mean) / scale`` with ``scale = std * sigma0`` (module notes).

    Attributes
    ----------
    mean, std : ndarray of shape (d,)
    sigma0 : float
        sqrt of the median squared distance between z-scored tokens.
    sample : ndarray of shape (n_sub, d)
        The transformed subsample used for ``sigma0`` (for :func:`warm_start`).
    """

    mean: np.ndarray
    std: np.ndarray
    sigma0: float
    sample: np.ndarray = field(repr=False)

    @property
    def scale(self) -> np.ndarray:
        """``std * sigma0`` (d,)."""
        return self.std * self.sigma0

    @classmethod
    def fit(cls, tokens: np.ndarray, seed: int = 0, n_sub: int = 1000) -> "Standardiser":
        """Fit on ``tokens`` (R, d): moments over all rows, ``sigma0`` on a seeded subsample of ``n_sub`` rows."""
        X = np.asarray(tokens, dtype=np.float64)
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        std = np.where(std > 1e-8 * max(float(std.max()), 1e-30), std, 1.0)
        rng = np.random.default_rng(seed)
        sub = X[rng.choice(len(X), size=min(n_sub, len(X)), replace=False)]
        Z = (sub - mean) / std
        iu = np.triu_indices(len(Z), 1)
        sq = ((Z ** 2).sum(1)[:, None] + (Z ** 2).sum(1)[None, :] - 2 * Z @ Z.T)[iu]
        sigma0 = float(np.sqrt(max(np.median(np.clip(sq, 0, None)), 1e-12)))
        return cls(mean=mean, std=std, sigma0=sigma0, sample=Z / sigma0)

    def transform(self, c: np.ndarray) -> np.ndarray:
        """``(c - mean) / scale`` as float32, same shape as ``c``."""
        return ((np.asarray(c, dtype=np.float64) - self.mean) / self.scale).astype(np.float32)


def cold_start(d: int) -> np.ndarray:
    """``log ell = 0`` (the median heuristic in standardised units), shape (d,)."""
    return np.zeros(d)


def warm_start(z: np.ndarray, sample: np.ndarray, eps: float = WARM_EPS) -> np.ndarray:
    """The seed's SVD warm start, ``log ell_j = -log(z_j + eps) + c`` (module notes), shape (d,).

    Parameters
    ----------
    z : ndarray of shape (d,)
        :func:`z_energy`.
    sample : ndarray of shape (n, d)
        Standardised tokens (:attr:`Standardiser.sample`); ``c`` makes the
        median squared ARD distance between them 1.
    eps : float
    """
    base = -np.log(np.asarray(z, dtype=np.float64) + eps)
    W = sample * np.exp(-base)
    iu = np.triu_indices(len(W), 1)
    sq = ((W ** 2).sum(1)[:, None] + (W ** 2).sum(1)[None, :] - 2 * W @ W.T)[iu]
    c = 0.5 * math.log(max(float(np.median(np.clip(sq, 0, None))), 1e-30))
    return base + c


# =========================================================================== objective
def _contrast_pairs(N: int, n_neg: int | None, contrast: str, seed: int) -> np.ndarray:
    """Contrast cloud pairs over clouds ``[zh_0..zh_{N-1}, en_0..en_{N-1}]`` (module notes)."""
    if N < 2:
        raise ValueError("the contrast term needs at least 2 problems")
    if n_neg is None or n_neg >= N - 1:
        shifts = np.arange(1, N)
    else:
        rng = np.random.default_rng(seed)
        shifts = np.sort(rng.choice(np.arange(1, N), size=int(n_neg), replace=False))
    i = np.arange(N)
    out = []
    for r in shifts:
        j = (i + r) % N
        if contrast == "cross":
            out.append(np.stack([i, N + j], axis=1))
        elif contrast == "within":
            out.append(np.stack([i, j], axis=1))
            out.append(np.stack([N + i, N + j], axis=1))
        else:
            raise ValueError(f"contrast must be one of {CONTRASTS}, not {contrast!r}")
    return np.concatenate(out)


class ArdProblem:
    """The ARD-MMD objectives for one set of paired token clouds (module equations).

    Parameters
    ----------
    zh, en : sequence of ndarray of shape (T_i, d)
        Standardised token clouds of the ``N`` problems (same order).
    device, dtype
        Computation device (default CUDA when present) and dtype.
    gamma : float
        Weight of the contrast term of the well-posed objective.
    n_neg : int or None
        Contrast partners per problem (None: all ``N - 1``).
    contrast : {"cross", "within"}
    seed : int
        Seeds the choice of contrast partners.
    """

    def __init__(self, zh, en, device=None, dtype=torch.float32, gamma: float = 1.0, n_neg: int | None = 16,
                 contrast: str = "cross", seed: int = 0):
        if len(zh) != len(en):
            raise ValueError("zh and en must hold the same problems")
        self.N = len(zh)
        self.device = resolve_device(device)
        self.dtype = dtype
        self.gamma = float(gamma)
        self.clouds = CloudSet(list(zh) + list(en), device=self.device, dtype=dtype)
        self.d = self.clouds.d
        i = np.arange(self.N)
        self.lang_plan = self.clouds.plan(np.stack([i, self.N + i], axis=1))
        self.contrast_plan = self.clouds.plan(_contrast_pairs(self.N, n_neg, contrast, seed))

    def flops_per_step(self, objective: str) -> float:
        """Unpadded Gram FLOPs of one optimisation step: forward + backward = 2 x forward.

        The backward pass of ``G = (X_a w) X_b^T`` needs only ``dG X_b`` (the
        points carry no gradient), one more product of the same size.
        """
        f = self.clouds.self_plan.flops_forward + self.lang_plan.flops_forward
        if objective != "seed":
            f += self.contrast_plan.flops_forward
        return 2.0 * f

    def terms(self, log_ell: torch.Tensor, objective: str, lam: float, need_contrast: bool | None = None) -> dict:
        """Objective and its parts at ``log_ell`` (differentiable).

        Returns
        -------
        dict of 0-d tensors
            ``mmd_lang`` (mean over problems), ``mmd_problem`` (mean over
            contrast pairs; NaN when not computed), ``penalty`` (``lam sum 1/ell``),
            ``total`` (the objective) and ``scale`` (sum of absolute terms, for the plateau stop).
        """
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
        if need_contrast is None:
            need_contrast = objective != "seed"
        cs = self.clouds
        st = cs.prepare(log_ell)
        ss = cs.block_sums(st, cs.self_plan)
        lang = cs.mmd2(log_ell, self.lang_plan, ss, st).mean()
        nan = torch.tensor(float("nan"), device=self.device, dtype=self.dtype)
        prob = cs.mmd2(log_ell, self.contrast_plan, ss, st).mean() if need_contrast else nan
        penalty = lam * torch.exp(-log_ell).sum()
        if objective == "seed":
            data = self.N * lang
            scale = data.abs() + penalty
        else:
            data = self.N * (lang - self.gamma * prob)
            scale = self.N * (lang.abs() + self.gamma * prob.abs()) + penalty
        return {"mmd_lang": lang, "mmd_problem": prob, "penalty": penalty, "total": data + penalty,
                "scale": scale}


@dataclass
class ArdFit:
    """Result of :func:`fit_ard`.

    Attributes
    ----------
    log_ell : ndarray of shape (d,)
        Final log lengthscales (standardised units).
    init_log_ell : ndarray of shape (d,)
    trajectory : ndarray of shape (S, d)
        ``log ell`` at ``trajectory_steps`` (step 0 = init, then every
        ``log_every`` steps and the last step), float32.
    trajectory_steps : ndarray of shape (S,)
    loss : ndarray of shape (steps,)
        Objective before each update.
    steps : int
    converged : bool
        The plateau stop fired (False: the step budget ran out).
    terms : dict
        Final ``mmd_lang``, ``mmd_problem`` (always evaluated), ``penalty``, ``total``.
    seconds : float
    """

    log_ell: np.ndarray
    init_log_ell: np.ndarray
    trajectory: np.ndarray
    trajectory_steps: np.ndarray
    loss: np.ndarray
    steps: int
    converged: bool
    terms: dict
    seconds: float


def fit_ard(problem: ArdProblem, objective: str, lam: float, init_log_ell: np.ndarray, lr: float = 0.01,
            min_steps: int = 500, max_steps: int = 1000, window: int = 50, rtol: float = 1e-3,
            log_every: int | None = None, seed: int = 0) -> ArdFit:
    """Minimise an ARD-MMD objective over ``log ell`` with Adam and a plateau stop (module notes).

    Parameters
    ----------
    problem : ArdProblem
    objective : {"seed", "wellposed"}
    lam : float
        Sparsity weight ``lam`` of ``lam sum_j 1/ell_j``.
    init_log_ell : ndarray of shape (d,)
    lr : float
        Adam learning rate.
    min_steps, max_steps : int
        The plateau stop may fire from ``min_steps`` on; never more than ``max_steps``.
    window, rtol : int, float
        Plateau: ``L[t - window] - L[t] < rtol * scale[t - window]``.
    log_every : int, optional
        Trajectory subsampling (default ``max(1, max_steps // 100)``).
    seed : int
        ``torch.manual_seed`` (the optimisation itself is deterministic).
    """
    torch.manual_seed(seed)
    log_every = log_every or max(1, max_steps // 100)
    t0 = time.perf_counter()
    p = torch.tensor(np.asarray(init_log_ell), dtype=problem.dtype, device=problem.device, requires_grad=True)
    opt = torch.optim.Adam([p], lr=lr)
    losses, scales = [], []
    traj, traj_steps = [p.detach().cpu().numpy().copy()], [0]
    converged, step = False, 0
    for step in range(1, int(max_steps) + 1):
        opt.zero_grad(set_to_none=True)
        t = problem.terms(p, objective, lam)
        t["total"].backward()
        opt.step()
        losses.append(float(t["total"].detach()))
        scales.append(float(t["scale"].detach()))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"ARD objective became {losses[-1]} at step {step}")
        if step % log_every == 0:
            traj.append(p.detach().cpu().numpy().copy())
            traj_steps.append(step)
        if step >= max(min_steps, window + 1):
            if losses[-1 - window] - losses[-1] < rtol * scales[-1 - window]:
                converged = True
                break
    if traj_steps[-1] != step:
        traj.append(p.detach().cpu().numpy().copy())
        traj_steps.append(step)
    with torch.no_grad():
        fin = problem.terms(p, objective, lam, need_contrast=True)
    terms = {k: float(v) for k, v in fin.items() if k != "scale"}
    return ArdFit(log_ell=p.detach().cpu().numpy().astype(np.float64), init_log_ell=np.asarray(init_log_ell),
                  trajectory=np.array(traj, dtype=np.float32), trajectory_steps=np.array(traj_steps),
                  loss=np.array(losses), steps=step, converged=converged, terms=terms,
                  seconds=time.perf_counter() - t0)


# =========================================================================== read-outs
def is_bimodal(bic_gain: float, ashman_d: float, *, min_bic_gain: float = BIMODAL_BIC_GAIN,
               min_ashman_d: float = BIMODAL_ASHMAN_D) -> bool:
    """The bimodality rule of the lengthscale spectrum (:func:`z_size`'s step 2): two mixture
    components beat one by more than ``min_bic_gain`` BIC units and Ashman's D exceeds ``min_ashman_d``."""
    return bool(bic_gain > min_bic_gain and ashman_d > min_ashman_d)


def z_size(log_ell, *, min_bic_gain: float = BIMODAL_BIC_GAIN, min_ashman_d: float = BIMODAL_ASHMAN_D,
           log10_off: float = LOG10_ELL_OFF) -> dict:
    """|Z| of one run from its converged lengthscales: the mixture-model count.

    Rule (the headline |Z|; thresholds are the module constants):

    1. Fit a 2-component Gaussian mixture to ``x = log10 ell`` (:func:`zhunt.stats.gmm_bimodality`).
    2. **bimodal** when ``bic_gain > min_bic_gain`` (two components beat one
       by more than 10 BIC units, "very strong" on Kass and Raftery's scale)
       and Ashman's ``D > min_ashman_d`` (the modes are separated, not one
       skewed mode): ``|Z|`` = the axes whose posterior for the lower
       (short-lengthscale, in-use) component exceeds 1/2. If even that
       component sits at ``mu_low >= log10_off`` every axis is off: 0.
    3. **unimodal** otherwise: every axis has the same scale, so Z is all or
       nothing — ``|Z| = d`` when the common level ``median(x) < log10_off``
       (the kernel uses every axis), ``|Z| = 0`` when ``median(x) >=
       log10_off``: with ``ell >= 10`` in the standardised units (``log ell = 0``
       is the median heuristic, where the median token pair has squared
       distance 1) the median pair's kernel value is above
       ``exp(-1/200) = 0.995`` and the kernel no longer tells tokens apart.

    Unlike ``#{ell_j < median}`` (which is ``d/2`` by construction for one
    run, and pooled over runs forces the mean count to ``d/2``), this can give
    any number from 0 to d.

    Parameters
    ----------
    log_ell : array-like of shape (d,)
        Natural-log lengthscales (standardised units).

    Returns
    -------
    dict
        ``z_size`` (int), ``z_rule`` ("bimodal", "unimodal-used", "unimodal-off",
        "bimodal-off"), ``active`` (bool (d,)), ``bic_gain``, ``ashman_d``, ``mu_low``.
    """
    x = np.asarray(log_ell, dtype=np.float64).ravel() / math.log(10)
    d = len(x)
    gm = gmm_bimodality(x)
    if is_bimodal(gm["bic_gain"], gm["ashman_d"], min_bic_gain=min_bic_gain, min_ashman_d=min_ashman_d):
        if gm["mu_low"] >= log10_off:
            active, rule = np.zeros(d, dtype=bool), "bimodal-off"
        else:
            active, rule = gm["low"].copy(), "bimodal"
    elif d and float(np.median(x)) < log10_off:
        active, rule = np.ones(d, dtype=bool), "unimodal-used"
    else:
        active, rule = np.zeros(d, dtype=bool), "unimodal-off"
    return dict(z_size=int(active.sum()), z_rule=rule, active=active, bic_gain=gm["bic_gain"],
                ashman_d=gm["ashman_d"], mu_low=gm["mu_low"])


def z_criteria() -> str:
    """The |Z| rule as one line (``criteria`` columns, captions)."""
    return (f"|Z| = axes of the lower component of a 2-Gaussian mixture on log10 ell when bimodal (BIC gain > "
            f"{BIMODAL_BIC_GAIN:g} and Ashman D > {BIMODAL_ASHMAN_D:g}); unimodal: d if median log10 ell < "
            f"{LOG10_ELL_OFF:g}, else 0")


def svd_overlap(active: np.ndarray, z: np.ndarray) -> dict:
    """Overlap of ARD's surviving axes with the SVD mask's top axes.

    ``T`` = the ``min(m, #{z_j > 0})`` axes with the largest ``z_j`` (ties by
    index), ``m = |active|``; ``overlap = |active ∩ T| / m``; chance ``|T| / d``
    (its expectation for a random ``active`` set of size m); ``p`` = hypergeometric
    ``P(X >= |active ∩ T|)``.

    Parameters
    ----------
    active : bool ndarray of shape (d,)
    z : ndarray of shape (d,)
        :func:`z_energy` in the same basis.

    Returns
    -------
    dict with ``overlap``, ``chance``, ``p``, ``hits``, ``m``.
    """
    from scipy.stats import hypergeom

    active = np.asarray(active, dtype=bool)
    d, m = len(active), int(active.sum())
    if m == 0:
        return dict(overlap=math.nan, chance=math.nan, p=math.nan, hits=0, m=0)
    t = int(min(m, int((np.asarray(z) > 1e-12).sum())))
    T = np.argsort(-np.asarray(z), kind="stable")[:t]
    hits = int(active[T].sum())
    return dict(overlap=hits / m, chance=t / d, p=float(hypergeom.sf(hits - 1, d, t, m)), hits=hits, m=m)


def growth_rate(trajectory: np.ndarray, steps: np.ndarray, tail: float = 0.5, q: float = 50.0) -> float:
    """Slope of a percentile of ``log10 ell`` per 100 steps over the last ``tail`` fraction of a trajectory.

    Parameters
    ----------
    trajectory : ndarray of shape (S, d)
        Natural-log lengthscales.
    steps : ndarray of shape (S,)
    tail : float
    q : float
        Percentile across axes (50: the median; 10: the most-used axes — these
        keep growing only when the objective collapses, whereas a well-posed
        objective also sends unused axes to infinity, moving the median).
    """
    med = np.percentile(np.asarray(trajectory, dtype=np.float64), q, axis=1) / math.log(10)
    steps = np.asarray(steps, dtype=np.float64)
    sel = steps >= steps[-1] * (1 - tail)
    if sel.sum() < 2 or np.ptp(steps[sel]) == 0:
        return math.nan
    return float(np.polyfit(steps[sel], med[sel], 1)[0] * 100)


def lam_id(lam) -> float:
    """λ as matched between HDF5 attributes and TSV text (6 significant digits, the TSV format)."""
    return float(f"{float(lam):.6g}")


def middle_lambda(lambdas) -> float:
    """The pre-registered λ of a grid: the middle of the sorted values (the upper middle of an even grid).

    The held-out test refits this λ (its TSV and the headline carry it), and
    the spectrum figure shows it.
    """
    v = sorted(float(x) for x in lambdas)
    if not v:
        raise ZhuntError("ard.lambdas", "the λ grid is empty")
    return v[len(v) // 2]


def _lam_key(lam: float) -> str:
    return f"lambda{float(lam):g}"


def run_key(objective, basis, init, lam) -> str:
    """HDF5 group of one run in an ARD run file: ``{objective}/{basis}/{init}/lambda{λ:g}``."""
    return f"{objective}/{basis}/{init}/{_lam_key(lam)}"


# =========================================================================== one layer
def _prepare_basis(store, layer, V_Z, basis, ids=None, seed=0, standardiser=None, site="input"):
    """Clouds in ``basis``, the standardiser and z-energy; returns (ids, zh, en, std, z, B)."""
    ids, clouds = load_token_clouds(store, layer, ("zh", "en"), ids, site=site)
    B = rotation_basis(V_Z) if basis == "rotated" else None
    zh = [c.astype(np.float64) @ B.T if B is not None else c for c in clouds["zh"]]
    en = [c.astype(np.float64) @ B.T if B is not None else c for c in clouds["en"]]
    if standardiser is None:
        standardiser = Standardiser.fit(np.concatenate(zh + en), seed=seed)
    zh = [standardiser.transform(c) for c in zh]
    en = [standardiser.transform(c) for c in en]
    return ids, zh, en, standardiser, z_energy(V_Z, B), B


def _init(init, z, std):
    if init == "cold":
        return cold_start(len(z))
    if init == "warm":
        return warm_start(z, std.sample)
    raise ValueError(f"init must be one of {INITS}, not {init!r}")


def _check_grid(objectives, inits, bases, lambdas) -> list[float]:
    """Validate the grid settings (config keys ``ard.*``); returns the λ as floats."""
    for name, vals, allowed in (("objectives", objectives, OBJECTIVES), ("inits", inits, INITS),
                                ("bases", bases, BASES)):
        bad = [v for v in vals if v not in allowed]
        if bad or not len(vals):
            raise ZhuntError(f"ard.{name}", f"need a non-empty subset of {list(allowed)}, got {list(vals)}")
    lambdas = [float(x) for x in lambdas]
    if not lambdas or min(lambdas) <= 0:
        raise ZhuntError("ard.lambdas", f"need positive sparsity weights, got {lambdas}")
    return lambdas


#: Store attributes that identify the inputs, carried into the run file for its readers.
_PROVENANCE_KEYS = ("model_weights_sha256", "prompt_file_sha256", "template")


@dataclass
class ArdLayer:
    """Exp. C at one layer (:func:`ard_layer`).

    Attributes
    ----------
    table : DataFrame
        One row per (site, run): ``site``, ``hidden_index`` then :data:`TSV_COLUMNS`.
    attrs : dict
        The run's settings and the store's provenance (model, layer, site, hidden_index,
        n_problems, d, k_warm, kind, lr, min/max_steps, gamma, n_neg, contrast, seed, warm_eps, ...),
        of the primary site.
    sites : dict
        ``{site: (runs, prep, hidden_index)}``, the primary site first: ``runs`` a list of
        ``{"objective", "basis", "init", "lam", "fit"}`` (:class:`ArdFit`), ``prep``
        ``{basis: (Standardiser, z_energy)}``.
    """

    table: pd.DataFrame
    attrs: dict
    sites: dict


def ard_layer(store, V_Z: np.ndarray, model_name: str, layer: int, lambdas, lr: float = 0.01,
              min_steps: int = 500, max_steps: int = 1000, objectives=("seed", "wellposed"),
              inits=("warm", "cold"), bases=("coord", "rotated"), k_warm: int = 50, seed: int = 0, device=None,
              kind: str = "multihead", gamma: float = 1.0, n_neg: int | None = 16, contrast: str = "cross",
              site: str = "input", site_variants=(), n_jobs: int = 1) -> ArdLayer:
    """Exp. C at one layer: the whole λ × init × objective × basis grid, at each site.

    Parameters
    ----------
    store : ActivationStore
        The open activation store (:class:`zhunt.data.store.ActivationStore`).
    V_Z : ndarray of shape (k_warm, d)
        The layer's SVD mask (kind ``kind``, dimension ``k_warm``): the warm start, the rotated
        basis and the overlap.
    model_name : str
    layer : int
        Decoder layer ``l``, read at ``hidden_index(l, site)``.
    lambdas : sequence of float
        Sparsity weights (> 0).
    lr, min_steps, max_steps : float, int, int
        Adam and the plateau stop (:func:`fit_ard`).
    objectives, inits, bases : sequences
        Subsets of :data:`OBJECTIVES`, :data:`INITS`, :data:`BASES`.
    k_warm : int
        Dimension of ``V_Z`` (recorded).
    seed : int
        Seeds the ``sigma0`` subsample, the contrast partners and torch.
    device, kind : str
        Torch device (default CUDA when available); the mask kind (recorded).
    gamma, n_neg, contrast
        Well-posed objective settings (:class:`ArdProblem`).
    site, site_variants
        The primary site and extra sites (:mod:`zhunt.models.site`): the whole grid
        runs at each, the table has one block of rows per site (``site``,
        ``hidden_index`` columns; the median threshold is per site).
    n_jobs : int
        On the CPU, the grid's runs are fitted ``n_jobs`` at a time in threads,
        each with single-threaded torch kernels (the runs are independent and
        deterministic, so the results equal ``n_jobs=1`` bit for bit; the small
        per-cloud products of one run scale worse over cores than whole runs do).
        Ignored on an accelerator.

    Returns
    -------
    ArdLayer
    """
    from zhunt.models.site import check_site, hidden_index

    lambdas = _check_grid(objectives, inits, bases, lambdas)
    if V_Z.shape[1] != store.hidden_size:
        raise ValueError(f"mask width {V_Z.shape[1]} != hidden size {store.hidden_size}")
    dev = resolve_device(device)
    sites = list(dict.fromkeys([check_site(site)] + [check_site(v) for v in site_variants]))
    by_site = {}
    progress = Progress(len(sites) * len(bases) * len(objectives) * len(inits) * len(lambdas), f"L{layer} ARD run")
    for site_ in sites:
        by_site[site_] = _ard_grid(store, layer, V_Z, bases, objectives, inits, lambdas, lr, min_steps, max_steps,
                                   seed, dev, gamma, n_neg, contrast, site_, progress,
                                   n_jobs=n_jobs if dev.type == "cpu" else 1)
    n_problems, d = by_site[sites[0]][2], store.hidden_size
    provenance = {key: store.attrs[key] for key in _PROVENANCE_KEYS if key in store.attrs}
    table = _grid_table(by_site, model_name, layer, n_problems, d, k_warm)
    attrs = dict(model=model_name, layer=int(layer), site=sites[0], hidden_index=hidden_index(int(layer), sites[0]),
                 n_problems=n_problems, d=d, k_warm=int(k_warm), kind=kind, lr=lr, min_steps=int(min_steps),
                 max_steps=int(max_steps), gamma=gamma, n_neg=-1 if n_neg is None else int(n_neg),
                 contrast=contrast, seed=int(seed), warm_eps=WARM_EPS, **provenance)
    return ArdLayer(table=table, attrs=attrs,
                    sites={s_: (*by_site[s_][:2], hidden_index(int(layer), s_)) for s_ in sites})


def _grid_table(by_site: Mapping, model_name, layer, n_problems, d, k_warm) -> pd.DataFrame:
    """The per-layer TSV: :func:`_run_rows` of every site, ``site`` and ``hidden_index`` first."""
    from zhunt.models.site import hidden_index

    frames = []
    for site_, (runs, prep, _) in by_site.items():
        t = pd.DataFrame(_run_rows(runs, prep, model_name, layer, n_problems, d, k_warm), columns=TSV_COLUMNS)
        t.insert(0, "hidden_index", hidden_index(int(layer), site_))
        t.insert(0, "site", site_)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


@contextmanager
def _torch_threads(n: int):
    """Set ``torch.set_num_threads(n)`` for the block (process-wide), restoring it afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _ard_grid(store, layer, V_Z, bases, objectives, inits, lambdas, lr, min_steps, max_steps, seed, dev, gamma,
              n_neg, contrast, site, progress=None, n_jobs: int = 1):
    """The λ × init × objective × basis grid at one site: ``(runs, prep, n_problems)``.

    The runs are listed basis, objective, init, λ (the order of the table) and fitted
    ``n_jobs`` at a time (:func:`ard_layer`)."""
    tasks, prep, problems = [], {}, {}
    for basis in bases:
        ids, zh, en, std, z, _ = _prepare_basis(store, layer, V_Z, basis, seed=seed, site=site)
        prep[basis] = (std, z)
        problems[basis] = ArdProblem(zh, en, device=dev, gamma=gamma, n_neg=n_neg, contrast=contrast, seed=seed)
        tasks += [dict(objective=objective, basis=basis, init=init, lam=lam, start=_init(init, z, std))
                  for objective in objectives for init in inits for lam in lambdas]

    def fit(task):
        return fit_ard(problems[task["basis"]], task["objective"], task["lam"], task["start"], lr=lr,
                       min_steps=min_steps, max_steps=max_steps, seed=seed)

    def done(task, fit_):
        log.info("L%d (%s) %s/%s/%s λ=%g: %d steps (%s), mmd_lang %.4g, mmd_problem %.4g, %.1fs",
                 layer, site, task["objective"], task["basis"], task["init"], task["lam"], fit_.steps,
                 "converged" if fit_.converged else "budget", fit_.terms["mmd_lang"], fit_.terms["mmd_problem"],
                 fit_.seconds)
        if progress is not None:
            progress.update()
        return dict(objective=task["objective"], basis=task["basis"], init=task["init"], lam=task["lam"], fit=fit_)

    if n_jobs <= 1:
        runs = [done(t, fit(t)) for t in tasks]
    else:
        with _torch_threads(1), ThreadPoolExecutor(max_workers=int(n_jobs)) as pool:
            futures = [pool.submit(fit, t) for t in tasks]
            try:
                runs = [done(t, f.result()) for t, f in zip(tasks, futures)]
            except BaseException:  # a failed run fails the grid: do not fit the queued ones first
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return runs, prep, len(ids)


def _run_rows(runs, prep, model_name, layer, n_problems, d, k_warm) -> list[dict]:
    """Per-run TSV rows; the median threshold is pooled over the λ of one objective, basis and init."""
    thresholds = {}
    for r in runs:
        thresholds.setdefault((r["objective"], r["basis"], r["init"]), []).append(r["fit"].log_ell)
    thresholds = {k: float(np.median(np.concatenate(v))) for k, v in thresholds.items()}
    rows = []
    for r in runs:
        fit = r["fit"]
        tau = thresholds[(r["objective"], r["basis"], r["init"])]
        active = fit.log_ell < tau
        x = fit.log_ell / math.log(10)
        gm = gmm_bimodality(x)
        zs = z_size(fit.log_ell)
        ov = svd_overlap(active, prep[r["basis"]][1])
        rows.append(dict(
            model=model_name, layer=int(layer), **{"lambda": r["lam"]}, init=r["init"], objective=r["objective"],
            basis=r["basis"], steps=fit.steps, converged=fit.converged, mmd_lang=fit.terms["mmd_lang"],
            mmd_problem=fit.terms["mmd_problem"], penalty=fit.terms["penalty"], total=fit.terms["total"],
            n_active_median=int(active.sum()), threshold_log10=tau / math.log(10), n_active_alt=gm["n_low"],
            z_size=zs["z_size"], z_rule=zs["z_rule"],
            bic_gain=gm["bic_gain"], ashman_d=gm["ashman_d"], overlap_svd=ov["overlap"],
            overlap_chance=ov["chance"], overlap_p=ov["p"],
            log10_ell_median_start=float(np.median(fit.init_log_ell)) / math.log(10),
            log10_ell_median_end=float(np.median(fit.log_ell)) / math.log(10),
            growth_per_100_steps=growth_rate(fit.trajectory, fit.trajectory_steps),
            growth_q10_per_100_steps=growth_rate(fit.trajectory, fit.trajectory_steps, q=10),
            frac_grown=float((fit.log_ell > fit.init_log_ell).mean()), seconds=fit.seconds,
            n_problems=n_problems, d=d, k_warm=int(k_warm)))
    return rows


# =========================================================================== summary
def heldout_verdict(p_language: float, p_problem: float, alpha: float = HELDOUT_ALPHA) -> str:
    """Label of the held-out tests with the learned kernel (:func:`heldout_test`).

    ``"problems, not languages"`` (the language-agnostic Z the experiment looks
    for: p_problem < alpha <= p_language), ``"languages and problems"``,
    ``"languages only"``, ``"neither"``; ``"untestable"`` when a p-value is missing.
    """
    if not (np.isfinite(p_language) and np.isfinite(p_problem)):
        return "untestable"
    lang, prob = p_language < alpha, p_problem < alpha
    return ("languages and problems" if lang and prob else "languages only" if lang else
            "problems, not languages" if prob else "neither")


def ard_headline(table: pd.DataFrame, heldout: pd.DataFrame, primary_layer: int, model_name: str) -> pd.DataFrame:
    """The headline |Z|: the mixture-model count of the pre-registered run and its held-out test.

    The run is the one the held-out test refits (its layer, objective, init,
    basis and λ, read from ``heldout``): ``z_size`` / ``z_rule`` of the fit on
    all problems (:func:`z_size`), ``z_size_fit`` of the refit on half of
    them, and the learned kernel's two held-out p-values with
    :func:`heldout_verdict`.

    Parameters
    ----------
    table : DataFrame
        :func:`ard_summary`'s table (needs ``z_size``, ``z_rule``).
    heldout : DataFrame
        :func:`heldout_test`'s table.

    Returns
    -------
    DataFrame
        One row: ``model, layer, objective, basis, init, lambda, d, z_size, z_rule, bic_gain,
        ashman_d, z_size_fit, p_language, p_problem, heldout_verdict, z_size_median`` (the seed's
        pooled-median count, for comparison) and ``criteria``.
    """
    learned = heldout[heldout["kernel"] == "learned"].set_index("test")
    first = heldout.iloc[0]
    layer = int(first["layer"]) if "layer" in heldout.columns else int(primary_layer)
    sel = table[(table["layer"] == layer) & (table["objective"] == first["objective"])
                & (table["basis"] == first["basis"]) & (table["init"] == first["init"])
                & (table["lambda"].map(lam_id) == lam_id(first["lambda"]))]
    if not len(sel):
        raise ZhuntError("ard_test", f"the held-out run ({first['objective']}/{first['basis']}/{first['init']}, "
                                     f"λ={first['lambda']:g}, layer {layer}) is not in the ARD grid")
    r = sel.iloc[0]
    p_lang = float(learned.loc["language", "p_value"]) if "language" in learned.index else math.nan
    p_prob = float(learned.loc["problem", "p_value"]) if "problem" in learned.index else math.nan
    return pd.DataFrame([dict(
        model=model_name, layer=layer, objective=r["objective"], basis=r["basis"], init=r["init"],
        **{"lambda": float(r["lambda"])}, d=int(r["d"]), z_size=int(r["z_size"]), z_rule=r["z_rule"],
        bic_gain=float(r["bic_gain"]), ashman_d=float(r["ashman_d"]),
        z_size_fit=int(first["z_size_fit"]) if "z_size_fit" in heldout.columns else -1,
        p_language=p_lang, p_problem=p_prob, heldout_verdict=heldout_verdict(p_lang, p_prob),
        z_size_median=r.get("z_size_median", math.nan),
        criteria=z_criteria() + f"; held-out tests reject at p < {HELDOUT_ALPHA:g}")])


def summary_table(per: pd.DataFrame, runs: Mapping) -> pd.DataFrame:
    """Per-run rows of every layer with the seed's pooled-median |Z| next to the per-layer columns.

    Parameters
    ----------
    per : DataFrame
        The per-layer TSVs of :func:`ard_layer` (one site), concatenated.
    runs : mapping
        ``{(layer, objective, basis, init, lambda): {"log_ell", "z", ...}}``
        (:func:`zhunt.stages.ard.read_run_files`).

    Returns
    -------
    DataFrame
        ``per`` plus ``z_size_median`` (``#{ell_j < tau}``, ``tau`` = median of
        ``log ell`` pooled over all layers and λ of the same objective, basis
        and init), ``threshold_pooled_log10``, ``overlap_pooled`` and
        ``overlap_pooled_chance`` (:func:`svd_overlap` of that count), sorted by
        objective, basis, init, λ, layer.
    """
    pooled = {}
    for (layer, obj, basis, init, lam), r in runs.items():
        pooled.setdefault((obj, basis, init), []).append(r["log_ell"])
    tau = {k: float(np.median(np.concatenate(v))) for k, v in pooled.items()}
    extra = []
    for _, row in per.iterrows():
        key = (int(row["layer"]), row["objective"], row["basis"], row["init"], lam_id(row["lambda"]))
        r = runs.get(key)
        if r is None:
            extra.append(dict(z_size_median=math.nan, threshold_pooled_log10=math.nan,
                              overlap_pooled=math.nan, overlap_pooled_chance=math.nan))
            continue
        t = tau[(row["objective"], row["basis"], row["init"])]
        active = r["log_ell"] < t
        ov = svd_overlap(active, r["z"]) if r["z"] is not None else dict(overlap=math.nan, chance=math.nan)
        extra.append(dict(z_size_median=int(active.sum()), threshold_pooled_log10=t / math.log(10),
                          overlap_pooled=ov["overlap"], overlap_pooled_chance=ov["chance"]))
    table = pd.concat([per, pd.DataFrame(extra)], axis=1)
    return table.sort_values(["objective", "basis", "init", "lambda", "layer"], kind="stable").reset_index(drop=True)


def seed_collapse(table: pd.DataFrame) -> dict:
    """Collapse statistics of the seed objective's runs in :func:`summary_table` (``{}`` when none ran).

    Returns
    -------
    dict
        ``n_runs``, ``n_converged``, ``median_growth_per_100_steps``,
        ``min_growth_per_100_steps``, ``median_growth_q10_per_100_steps``,
        ``median_log10_rise`` (end minus start median ``log10 ell``),
        ``median_frac_grown``, ``max_steps``.
    """
    seed_rows = table[table["objective"] == "seed"]
    if not len(seed_rows):
        return {}
    return dict(
        n_runs=int(len(seed_rows)), n_converged=int(seed_rows["converged"].sum()),
        median_growth_per_100_steps=float(seed_rows["growth_per_100_steps"].median()),
        min_growth_per_100_steps=float(seed_rows["growth_per_100_steps"].min()),
        median_growth_q10_per_100_steps=float(seed_rows["growth_q10_per_100_steps"].median()),
        median_log10_rise=float((seed_rows["log10_ell_median_end"]
                                 - seed_rows["log10_ell_median_start"]).median()),
        median_frac_grown=float(seed_rows["frac_grown"].median()),
        max_steps=int(seed_rows["steps"].max()))


@dataclass
class ArdSummary:
    """Exp. C over layers (:func:`ard_summary`).

    Attributes
    ----------
    table : DataFrame
        :func:`summary_table` of the primary site.
    collapse : dict
        :func:`seed_collapse` (``{}`` when the seed objective did not run).
    headline : DataFrame or None
        :func:`ard_headline` (``None`` without a held-out table).
    """

    table: pd.DataFrame
    collapse: dict
    headline: pd.DataFrame | None


def ard_summary(per: pd.DataFrame, runs: Mapping, primary_layer: int, model_name: str,
                heldout: pd.DataFrame | None = None, site: str | None = None) -> ArdSummary:
    """Exp. C summary over layers: |Z| vs layer, bimodality, SVD overlap, the seed objective's collapse.

    Parameters
    ----------
    per : DataFrame
        The per-layer tables of :func:`ard_layer`, concatenated.
    runs : mapping
        ``{(layer, objective, basis, init, lambda): {"log_ell", "z", ...}}`` of the same runs
        (the run files of the primary site, :func:`zhunt.stages.ard.read_run_files`).
    primary_layer : int
        Layer of the spectrum and trajectory figures (must be among the layers of ``per``).
    model_name : str
    heldout : DataFrame, optional
        :func:`heldout_test`'s table: gives the headline |Z| (:func:`ard_headline`).
    site : str, optional
        The primary site (default: the first ``site`` of ``per``): the summary
        covers its rows only; variant sites stay in the per-layer tables.

    Returns
    -------
    ArdSummary
    """
    if "site" in per.columns:  # the summary is of the primary site (the run files' top level)
        per = per[per["site"] == (site or per["site"].iloc[0])].reset_index(drop=True)
    if primary_layer not in set(per["layer"]):
        raise ZhuntError("study.primary_layer", f"layer {primary_layer} is not among the ARD layers "
                                                f"{sorted(set(per['layer']))}")
    table = summary_table(per, runs)
    headline = ard_headline(table, heldout, primary_layer, model_name) if heldout is not None else None
    return ArdSummary(table=table, collapse=seed_collapse(table), headline=headline)


# =========================================================================== held-out test
def heldout_tests(tzh, ten, partner, log_ell, *, n_permutations: int, seed: int, device=None) -> dict:
    """The language and the problem permutation test of one kernel on held-out clouds.

    Parameters
    ----------
    tzh, ten : sequence of ndarray of shape (T_i, d)
        The ``n`` held-out clouds per language (problem ``i`` in zh and in en).
    partner : ndarray of shape (n,)
        The derangement ``π`` of the problem test.
    log_ell : array-like of shape (d,)
        The kernel's log lengthscales.
    n_permutations : int
    seed : int
        The test ``t`` (0 language, 1 problem) relabels with seed ``seed + 1 + t``.

    Returns
    -------
    dict
        ``{"language": row, "problem": row}``, each row ``statistic`` (mean MMD²_u over pairs),
        ``null_mean``, ``null_q95``, ``p_value`` (``(1 + #{T_b >= T}) / (B + 1)``), ``frac_reject``
        (pairs with a per-pair p < 0.05) and ``n_pairs`` (:func:`heldout_test` defines the tests).
    """
    n = len(tzh)
    tests = {
        "language": (tzh, ten),
        "problem": ([tzh[i] for i in range(n)] + [ten[i] for i in range(n)],
                    [tzh[j] for j in partner] + [ten[j] for j in partner]),
    }
    out = {}
    for ti, (name, (a, b)) in enumerate(tests.items()):
        obs, null = permutation_mmd2(a, b, log_ell, n_permutations=n_permutations, seed=seed + 1 + ti, device=device)
        T, Tb = obs.mean(), null.mean(axis=1)
        p_pair = (1 + (null >= obs[None, :]).sum(0)) / (n_permutations + 1)
        out[name] = dict(statistic=float(T), null_mean=float(Tb.mean()), null_q95=float(np.quantile(Tb, 0.95)),
                         p_value=float((1 + (Tb >= T).sum()) / (n_permutations + 1)),
                         frac_reject=float((p_pair < 0.05).mean()), n_pairs=len(a))
    return out


def _heldout_rows(fit, tzh, ten, partner, meta: Mapping, *, n_fit: int, n_permutations: int, seed: int,
                  device) -> list[dict]:
    """The language and problem permutation tests on the held-out clouds, learned and median-heuristic kernels.

    ``tzh``, ``ten``: the ``n`` held-out clouds per language; ``partner``: the
    derangement ``π`` of the problem test; ``meta``: the leading columns of every
    row (:func:`heldout_test` documents the statistics).
    """
    rows = []
    zfit = z_size(fit.log_ell)
    for kernel, le in (("learned", fit.log_ell), ("median_heuristic", cold_start(len(fit.log_ell)))):
        res = heldout_tests(tzh, ten, partner, le, n_permutations=n_permutations, seed=seed, device=device)
        for name, r in res.items():
            rows.append(dict(**meta, kernel=kernel, test=name, **{k: r[k] for k in
                                                                  ("statistic", "null_mean", "null_q95", "p_value",
                                                                   "frac_reject", "n_pairs")},
                             n_fit=n_fit, n_test=len(tzh), n_permutations=int(n_permutations), fit_steps=fit.steps,
                             fit_converged=fit.converged, z_size_fit=zfit["z_size"], z_rule_fit=zfit["z_rule"],
                             d=len(fit.log_ell)))
    return rows


@dataclass
class HeldoutTest:
    """The held-out tests of one learned kernel (:func:`heldout_test`): ``table`` one row per
    (kernel, test), ``fit`` the :class:`ArdFit` on the first half of the problems."""

    table: pd.DataFrame
    fit: "ArdFit"


def heldout_test(store, V_Z: np.ndarray, layer: int, lam: float, *, model_name: str = "",
                 objective: str = "wellposed", init: str = "warm", basis: str = "coord", lr: float = 0.01,
                 min_steps: int = 500, max_steps: int = 1000, gamma: float = 1.0, n_neg: int | None = 16,
                 contrast: str = "cross", n_permutations: int = 200, seed: int = 0, device=None,
                 site: str = "input") -> HeldoutTest:
    """Held-out two-sample tests with a learned ARD kernel (Liu et al. 2020 practice), at one site.

    The problems are split in two halves (seeded). ``ell`` is fitted on the
    first half (:func:`fit_ard`; the standardisation too); on the second half
    two permutation tests are run with the learned kernel, and with the
    median-heuristic kernel (``log ell = 0``) as a reference:

    * language: ``T = mean_i MMD²(X_i^zh, X_i^en)``, tokens of each problem
      relabelled zh/en at random (null: the two prompts' tokens are
      exchangeable). A language-agnostic kernel should *not* reject.
    * problem: ``T = mean MMD²(X_i^lang, X_{π(i)}^lang)`` over a seeded
      derangement ``π`` of the held-out problems, both languages, tokens of each
      pair relabelled. A useful kernel should still reject.

    ``p = (1 + #{T_b >= T}) / (B + 1)`` for the aggregate statistic; the
    per-pair tests give ``frac_reject`` (fraction of pairs with p < 0.05).
    ``z_size_fit`` / ``z_rule_fit``: :func:`z_size` of the half-data fit.

    Parameters
    ----------
    store, V_Z, layer
        As in :func:`ard_layer`.
    lam : float
        The one λ of the fitted run.
    objective, init, basis, lr, min_steps, max_steps, gamma, n_neg, contrast
        The fitted run (defaults: the well-posed objective, warm start, coordinate basis).
    n_permutations : int
    seed : int
        Seeds the split, the fit, the pairing and the permutations.
    device : str, optional
    site : {"input", "output"}
        Layer ``layer`` is read at ``hidden_index(layer, site)`` (the primary site only).

    Returns
    -------
    HeldoutTest
    """
    from zhunt.models.site import hidden_index

    dev = resolve_device(device)
    ids, _ = load_token_clouds(store, layer, ("zh", "en"), site=site)
    if len(ids) < 6:
        raise ZhuntError(str(store.path), f"the held-out test needs at least 6 problems, found {len(ids)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ids))
    half = len(ids) // 2
    fit_ids = [ids[i] for i in sorted(perm[:half])]
    test_ids = [ids[i] for i in sorted(perm[half:])]
    _, zh, en, std, z, B = _prepare_basis(store, layer, V_Z, basis, fit_ids, seed=seed, site=site)
    prob = ArdProblem(zh, en, device=dev, gamma=gamma, n_neg=n_neg, contrast=contrast, seed=seed)
    fit = fit_ard(prob, objective, lam, _init(init, z, std), lr=lr, min_steps=min_steps, max_steps=max_steps,
                  seed=seed)
    _, tzh, ten, _, _, _ = _prepare_basis(store, layer, V_Z, basis, test_ids, seed=seed, standardiser=std, site=site)
    n = len(test_ids)
    shift = int(rng.integers(1, n))
    partner = (np.arange(n) + shift) % n
    meta = dict(site=site, hidden_index=hidden_index(int(layer), site), model=model_name, layer=int(layer),
                **{"lambda": float(lam)}, objective=objective, init=init, basis=basis)
    rows = _heldout_rows(fit, tzh, ten, partner, meta, n_fit=len(fit_ids), n_permutations=n_permutations,
                         seed=seed, device=dev)
    return HeldoutTest(table=pd.DataFrame(rows), fit=fit)
