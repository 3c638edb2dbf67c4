"""Theorem 1 of seed 003, checked numerically: a shared linear map trained on two languages.

The claim
---------
One linear map ``W`` is trained with a squared loss on a mixture of two
languages. In the directions where the two languages present the content the
same way, ``W`` keeps a large singular value; in the directions where they
disagree, the singular value shrinks. The seed states
``sigma_i ∝ sqrt(rho_i)`` with the per-direction *agreement ratio*

    rho_i = (a1 z1_i + a2 z2_i)^2 / (a1 z1_i^2 + a2 z2_i^2).

Data model (exact, so the prediction can be checked to machine precision)
-------------------------------------------------------------------------
* Content ``s`` in R^n with ``E[s] = 0`` and ``E[s s^T] = Lambda = diag(lam)``
  (any positive variances; the same for both languages).
* A language ``l`` in {1, 2} is drawn with probability ``a_l`` (``a1 + a2 = 1``),
  independently of ``s``.
* The model sees ``x = Q D_l s`` where ``D_l = diag(z_l)`` holds the
  per-direction gains of language ``l`` and ``Q`` (n x n, orthogonal) is a
  mixing basis shared by both languages (so ``W`` is not diagonal in the
  coordinates it is trained in).
* The target is the content itself, ``y = s``; the loss is
  ``E ||W x - s||^2``.

The optimum in closed form
--------------------------
The loss is a convex quadratic in ``W``; setting its gradient
``2 (W E[x x^T] - E[s x^T])`` to zero gives the normal equations
``W* = E[s x^T] (E[x x^T])^{-1}``. Both moments are diagonal in the
``Q`` basis because ``s`` and the language are independent:

    E[s x^T]  = sum_l a_l Lambda D_l Q^T = diag(lam_i m_i) Q^T,   m_i = a1 z1_i + a2 z2_i
    E[x x^T]  = Q (sum_l a_l D_l Lambda D_l) Q^T = Q diag(lam_i q_i) Q^T,   q_i = a1 z1_i^2 + a2 z2_i^2

so ``W* = diag(m_i / q_i) Q^T``: its right singular vectors are the columns
of ``Q`` (the language geometry, not the training coordinates, fixes them —
the "gauge" is broken) and its singular values are

    sigma_i = |m_i| / q_i = sqrt(rho_i / q_i),   with rho_i = m_i^2 / q_i.

The content variances ``lam`` cancel. By Cauchy–Schwarz ``m_i^2 <= q_i``
(weights ``a_l`` summing to one), so ``0 <= rho_i <= 1``, with ``rho_i = 1``
iff ``z1_i = z2_i``. The seed's ``sigma_i ∝ sqrt(rho_i)`` holds exactly when
the input power per direction ``q_i`` is the same for every direction; we
impose ``q_i = 1`` by rescaling the gains of each direction (both languages by
the same factor, which leaves ``rho_i`` unchanged). Without that
normalisation the general formula ``sqrt(rho_i / q_i)`` is what holds (also
reported).

Finite data with exact moments
------------------------------
The map is trained by full-batch gradient descent on an actual sample of
``N`` points (``a_l N`` per language). Each language's content sample is
whitened and rescaled so that its sample second moment is exactly
``Lambda``; the sample least-squares optimum then equals ``W*`` exactly and
any residual disagreement is optimisation error, which we drive below
``1e-12`` relative gradient norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from zhunt.subspace import random_subspace

__all__ = ["ToyProblem", "agreement_ratio", "make_problem", "sample_data", "optimal_map",
           "train_shared_map", "compare_spectrum", "toy_theorem"]


def agreement_ratio(z1: np.ndarray, z2: np.ndarray, a1: float, a2: float) -> np.ndarray:
    """Per-direction agreement ratio ``rho_i = (a1 z1_i + a2 z2_i)^2 / (a1 z1_i^2 + a2 z2_i^2)``.

    Parameters
    ----------
    z1, z2 : ndarray of shape (n,)
        Per-direction gains of the two languages.
    a1, a2 : float
        Language frequencies (``a1 + a2 = 1`` makes ``0 <= rho <= 1``).

    Returns
    -------
    ndarray of shape (n,)
    """
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    return (a1 * z1 + a2 * z2) ** 2 / (a1 * z1**2 + a2 * z2**2)


@dataclass
class ToyProblem:
    """Parameters of the bilingual toy model (see the module docstring).

    Attributes
    ----------
    a1, a2 : float          language frequencies
    z1, z2 : ndarray (n,)   per-direction gains (normalised so that ``a1 z1^2 + a2 z2^2 = 1`` by default)
    lam : ndarray (n,)      content variances ``E[s_i^2]``
    Q : ndarray (n, n)      shared orthogonal mixing basis
    """

    a1: float
    a2: float
    z1: np.ndarray
    z2: np.ndarray
    lam: np.ndarray
    Q: np.ndarray

    @property
    def n(self) -> int:
        """Dimension ``n``."""
        return int(self.z1.shape[0])

    @property
    def rho(self) -> np.ndarray:
        """Agreement ratios ``rho_i`` (n,)."""
        return agreement_ratio(self.z1, self.z2, self.a1, self.a2)

    @property
    def power(self) -> np.ndarray:
        """Input power per direction ``q_i = a1 z1_i^2 + a2 z2_i^2`` (n,)."""
        return self.a1 * self.z1**2 + self.a2 * self.z2**2


def make_problem(n: int = 12, a1: float = 0.7, seed: int = 0, normalise_power: bool = True) -> ToyProblem:
    """Draw a toy problem whose directions span agreement from ``rho ≈ 1`` to ``rho`` small.

    Language 1 gains ``z1_i ~ U(0.5, 1.5)``; language 2 gains
    ``z2_i = c_i z1_i`` with ``c_i`` evenly spaced in ``[-2, 1]`` and
    shuffled (``c = 1``: full agreement; ``c < 0``: the languages present the
    direction with opposite signs). Content variances ``lam_i ~ logU(0.5, 2)``
    make ``E[x x^T]`` non-isotropic so gradient descent has real work to do.

    Parameters
    ----------
    n : int
        Dimension (>= 2).
    a1 : float
        Frequency of language 1 in (0, 1); ``a2 = 1 - a1``.
    seed : int
        Seed of every draw.
    normalise_power : bool
        Rescale each direction's gains so that ``q_i = 1`` (the condition
        under which ``sigma ∝ sqrt(rho)`` is exact).
    """
    if n < 2 or not 0 < a1 < 1:
        raise ValueError("need n >= 2 and 0 < a1 < 1")
    rng = np.random.default_rng(seed)
    a2 = 1.0 - a1
    z1 = rng.uniform(0.5, 1.5, n)
    c = rng.permutation(np.linspace(-2.0, 1.0, n))
    z2 = c * z1
    if normalise_power:
        scale = np.sqrt(a1 * z1**2 + a2 * z2**2)
        z1, z2 = z1 / scale, z2 / scale
    lam = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    Q = random_subspace(n, n, rng).T  # Haar-random orthogonal basis, drawn after the gains
    return ToyProblem(a1=a1, a2=a2, z1=z1, z2=z2, lam=lam, Q=Q)


def sample_data(p: ToyProblem, n_samples: int = 4000, seed: int = 0):
    """A finite bilingual sample whose second moments equal the population ones exactly.

    ``round(a1 N)`` points of language 1 and the rest of language 2 (``a1 N``
    must be an integer, so the empirical frequencies are exactly ``a1, a2``).
    Per language, Gaussian content ``S_l`` (n_l, n) is centred and
    transformed so that ``S_l^T S_l / n_l = Lambda`` exactly.

    Returns
    -------
    X : ndarray (N, n)
        Inputs, row form ``x^T = s^T D_l Q^T``.
    S : ndarray (N, n)
        Targets (the content).
    lang : ndarray (N,) int
        1 or 2.
    """
    n1 = int(round(p.a1 * n_samples))
    if not np.isclose(n1, p.a1 * n_samples) or n1 <= p.n or n_samples - n1 <= p.n:
        raise ValueError("a1 * n_samples must be an integer and each language needs more than n points")
    rng = np.random.default_rng(seed)
    Xs, Ss, langs = [], [], []
    for lang, (m, z) in enumerate(((n1, p.z1), (n_samples - n1, p.z2)), start=1):
        S = rng.standard_normal((m, p.n))
        S -= S.mean(axis=0)
        C = S.T @ S / m
        ev, U = np.linalg.eigh(C)
        S = S @ (U / np.sqrt(ev)) @ U.T * np.sqrt(p.lam)  # S^T S / m = diag(lam)
        Xs.append((S * z) @ p.Q.T)
        Ss.append(S)
        langs.append(np.full(m, lang))
    return np.vstack(Xs), np.vstack(Ss), np.concatenate(langs)


def optimal_map(p: ToyProblem) -> np.ndarray:
    """The population optimum ``W* = diag(m / q) Q^T`` (n, n) (module docstring)."""
    m = p.a1 * p.z1 + p.a2 * p.z2
    return (m / p.power)[:, None] * p.Q.T


def train_shared_map(X: np.ndarray, S: np.ndarray, tol: float = 1e-12, max_iter: int = 100_000):
    """Full-batch gradient descent on ``(1/N) sum ||W x - s||^2`` from ``W = 0``.

    Step size ``2 / (lmax + lmin)`` of the Hessian ``2 C_xx`` (``C_xx = X^T X / N``),
    the fastest fixed step for a quadratic; stops when the gradient's
    Frobenius norm falls below ``tol`` times its initial value.

    Parameters
    ----------
    X, S : ndarray (N, n)
        Inputs and targets.

    Returns
    -------
    W : ndarray (n, n)
    info : dict
        ``n_iter``, ``converged``, ``loss`` (final), ``grad_norm_rel``, ``loss_curve`` (list).
    """
    X = np.asarray(X, np.float64)
    S = np.asarray(S, np.float64)
    N = X.shape[0]
    Cxx = X.T @ X / N
    Csx = S.T @ X / N
    Css = float(np.sum(S**2) / N)
    ev = np.linalg.eigvalsh(Cxx)
    lr = 1.0 / (ev[-1] + ev[0])  # = 2 / (lmax + lmin) of the Hessian 2 Cxx
    W = np.zeros((S.shape[1], X.shape[1]))
    g0 = None
    curve = []
    it, rel = 0, np.inf
    for it in range(1, max_iter + 1):
        grad = 2.0 * (W @ Cxx - Csx)
        gn = float(np.linalg.norm(grad))
        g0 = gn if g0 is None else g0
        rel = gn / g0 if g0 > 0 else 0.0
        loss = float(np.sum((W @ Cxx) * W) - 2 * np.sum(W * Csx) + Css)
        curve.append(loss)
        if rel < tol:
            break
        W = W - lr * grad
    return W, {"n_iter": it, "converged": bool(rel < tol), "loss": curve[-1],
               "grad_norm_rel": rel, "loss_curve": curve}


def compare_spectrum(W: np.ndarray, p: ToyProblem, rho_floor: float = 1e-3) -> pd.DataFrame:
    """Singular values of a trained ``W`` against the Theorem-1 prediction, per direction.

    Directions are matched by sorting: the i-th largest ``sigma_i`` against
    the i-th largest ``sqrt(rho)`` (and, separately, against the i-th largest
    general prediction ``sqrt(rho / q)``).

    Returns
    -------
    DataFrame, one row per rank ``i`` (descending):
        ``rank``, ``sigma``, ``sigma_norm`` (= sigma / sigma_max), ``sqrt_rho_norm``
        (= sqrt(rho_(i) / rho_max)), ``rel_err`` (|sigma_norm - sqrt_rho_norm| / sqrt_rho_norm),
        ``sigma_pred_general`` (sqrt(rho/q), sorted), ``rel_err_general``, ``rho`` (sorted
        descending), ``counted`` (rho / rho_max >= rho_floor: only these enter the headline
        maximum, a relative error of a vanishing value being meaningless).
    """
    sig = np.linalg.svd(np.asarray(W, np.float64), compute_uv=False)
    rho = np.sort(p.rho)[::-1]
    pred_rho = np.sqrt(rho / rho[0])
    pred_gen = np.sort(np.sqrt(p.rho / p.power))[::-1]
    sn = sig / sig[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(sn - pred_rho) / pred_rho
        rel_g = np.abs(sig - pred_gen) / pred_gen
    return pd.DataFrame({"rank": np.arange(len(sig)), "sigma": sig, "sigma_norm": sn,
                         "sqrt_rho_norm": pred_rho, "rel_err": rel, "sigma_pred_general": pred_gen,
                         "rel_err_general": rel_g, "rho": rho, "counted": rho / rho[0] >= rho_floor})


def toy_theorem(seed: int = 0, n: int = 12, a1: float = 0.7, n_samples: int = 4000) -> dict:
    """Train the shared bilingual map and compare its spectrum with Theorem 1.

    Parameters
    ----------
    seed : int
        Seed of the problem (:func:`make_problem`); the sample uses ``seed + 1``.
    n, a1, n_samples : int, float, int
        Dimension, frequency of language 1, sample size.

    Returns
    -------
    dict
        ``table`` (:func:`compare_spectrum` with the ``direction`` behind each rank and its gains
        ``z1``, ``z2``), ``loss_curve`` (the training loss per step), ``rel_error_max`` (max over
        counted directions of the relative error of ``sigma_i / sigma_max`` vs
        ``sqrt(rho_i / rho_max)``), ``rel_error_general_max``, ``closed_form_error`` (max abs
        difference between the trained ``W`` and ``W*``), ``right_vector_alignment`` (min over
        directions of ``|<v_i, Q e_i>|``: the right singular vectors are the mixing basis, i.e.
        the gauge is fixed), ``n_iter``, ``converged``, ``final_loss``, ``n``, ``a1``, ``n_samples``.
    """
    p = make_problem(n=n, a1=a1, seed=seed)
    X, S, _ = sample_data(p, n_samples=n_samples, seed=seed + 1)
    W, info = train_shared_map(X, S)
    df = compare_spectrum(W, p)
    order = np.argsort(-np.sqrt(p.rho / p.power))  # direction index behind each sorted rank
    df.insert(1, "direction", order)
    df.insert(2, "z1", p.z1[order])
    df.insert(3, "z2", p.z2[order])
    _, sv, Vt = np.linalg.svd(W)
    # distinct singular values: each right singular vector must be one column of Q
    align = float(np.min(np.max(np.abs(Vt @ p.Q), axis=1)))
    counted = df["counted"].to_numpy()
    return {"table": df, "loss_curve": info["loss_curve"],
            "rel_error_max": float(df["rel_err"][counted].max()),
            "rel_error_general_max": float(df["rel_err_general"][counted].max()),
            "closed_form_error": float(np.max(np.abs(W - optimal_map(p)))),
            "right_vector_alignment": align, "n_iter": info["n_iter"], "converged": info["converged"],
            "final_loss": info["loss"], "n": n, "a1": a1, "n_samples": n_samples}
