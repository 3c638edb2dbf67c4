"""Small statistics shared by the behavioural and patching stages.

* :func:`bootstrap_ci` — percentile bootstrap confidence interval of a
  statistic of paired observations (rows are resampled together), with a
  fixed seed so every number is reproducible.
* :func:`rate_ci` — a rate (mean of a boolean / 0-1 vector) with its bootstrap
  CI, as a dict ready for a table row.
* :func:`binomial_ci` — Wilson score or exact Clopper–Pearson interval of a
  binomial rate (never zero-width for ``n >= 1``; statsmodels'
  ``proportion_confint``).
* :func:`holm` — Holm step-down adjusted p-values across a grid of tests
  (statsmodels' ``multipletests(method="holm")``).
* :func:`gmm_bimodality` — 2-component Gaussian mixture vs one Gaussian on a
  1-D sample (EM, BIC gain, Ashman's D, the points of the lower component);
  the one implementation, used by the ARD |Z| rule (:func:`zhunt.activations.ard.z_size`).
* :func:`mcnemar_exact` — exact McNemar test of two paired binary outcomes:
  with ``n01`` pairs where only the first is True and ``n10`` where only the
  second is, ``p = binomtest(n01, n01 + n10, 0.5)`` two-sided
  (:func:`scipy.stats.binomtest`; equal to statsmodels'
  ``mcnemar(table, exact=True)``). ``p = 1`` when no pair is discordant.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["N_RESAMPLES", "CONFIDENCE", "SEED", "bootstrap_ci", "rate_ci", "binomial_ci", "holm",
           "mcnemar_exact", "gmm_bimodality"]

#: Default number of bootstrap resamples.
N_RESAMPLES = 2000
#: Default confidence level of every interval.
CONFIDENCE = 0.95
#: Default seed of the bootstrap generator.
SEED = 0


def bootstrap_ci(data, statistic: Callable[[np.ndarray], np.ndarray] | None = None, *,
                 n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                 seed: int = SEED) -> tuple[float, float, float]:
    """Percentile bootstrap CI of a statistic of ``n`` paired observations.

    Parameters
    ----------
    data : array_like of shape (n,) or (n, m)
        Observations; with two dimensions each row is one unit (e.g. one
        problem) and rows are resampled as a whole (paired bootstrap).
    statistic : callable, optional
        ``statistic(x)`` for ``x`` of shape ``(B, n)`` or ``(B, n, m)`` (a batch
        of ``B`` resamples) returning ``(B,)``. Default: the mean over axis 1
        (only for 1-d ``data``).
    n_resamples : int
        ``B``, the number of resamples (>= 1).
    confidence : float
        Two-sided level; the interval is the ``(1 - c)/2`` and ``(1 + c)/2``
        quantiles (linear interpolation) of the resampled statistics.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same inputs and seed
        always give the same interval.

    Returns
    -------
    (estimate, low, high) : tuple of float
        ``statistic`` on the data itself and the interval. All NaN for empty
        data.
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim not in (1, 2):
        raise ValueError(f"data must be (n,) or (n, m), got shape {x.shape}")
    if statistic is None:
        if x.ndim != 1:
            raise ValueError("the default statistic (mean) needs 1-d data")
        statistic = lambda a: a.mean(axis=1)  # noqa: E731
    n = x.shape[0]
    if n == 0:
        return (float("nan"),) * 3
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    est = float(np.asarray(statistic(x[None]))[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(n_resamples), n))
    stats = np.asarray(statistic(x[idx]), dtype=np.float64)
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, (1 + confidence) / 2])
    return est, float(lo), float(hi)


def rate_ci(flags, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
            seed: int = SEED) -> dict:
    """A rate with its percentile bootstrap CI.

    Parameters
    ----------
    flags : array_like of shape (n,)
        Booleans or values in [0, 1] (a per-unit fraction, e.g. over random
        subspaces), one per unit.

    Returns
    -------
    dict
        ``rate``, ``lo``, ``hi`` (floats; NaN when ``n = 0``), ``n``, and
        ``k`` (the sum of ``flags``; the count for booleans).
    """
    x = np.asarray(flags, dtype=np.float64).ravel()
    est, lo, hi = bootstrap_ci(x, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return {"rate": est, "lo": lo, "hi": hi, "n": int(x.size), "k": float(x.sum())}


def mcnemar_exact(a, b) -> dict:
    """Exact McNemar test of two paired binary outcomes.

    Parameters
    ----------
    a, b : array_like of bool, shape (n,)
        Outcome of condition A and of condition B on the same ``n`` units.

    Returns
    -------
    dict
        ``n01`` (A True, B False), ``n10`` (A False, B True), ``n11``, ``n00``,
        and ``p``: two-sided exact binomial p-value of ``n01`` out of
        ``n01 + n10`` discordant pairs under ``p = 1/2`` (1.0 without
        discordant pairs).
    """
    from scipy.stats import binomtest

    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} vs {b.size}")
    n01 = int((a & ~b).sum())
    n10 = int((~a & b).sum())
    m = n01 + n10
    p = 1.0 if m == 0 else float(binomtest(n01, m, 0.5, alternative="two-sided").pvalue)
    return {"n01": n01, "n10": n10, "n11": int((a & b).sum()), "n00": int((~a & ~b).sum()), "p": min(1.0, p)}


def binomial_ci(k, n, *, confidence: float = CONFIDENCE, method: str = "wilson") -> tuple[float, float, float]:
    """A binomial rate ``k / n`` with a Wilson or exact (Clopper–Pearson) interval.

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials.
    confidence : float
        Two-sided level.
    method : {"wilson", "exact"}
        ``wilson``: Wilson score interval; ``exact``: Clopper–Pearson
        (statsmodels ``method="beta"``).

    Returns
    -------
    (rate, low, high) : tuple of float
        All NaN when ``n = 0``. For ``n >= 1`` the interval always has positive
        width (``[0, hi]`` with ``hi > 0`` at ``k = 0``).
    """
    from statsmodels.stats.proportion import proportion_confint

    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if method not in ("wilson", "exact"):
        raise ValueError(f"method must be 'wilson' or 'exact', not {method!r}")
    if n == 0:
        return (float("nan"),) * 3
    lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson" if method == "wilson" else "beta")
    # both intervals reach 0 at k = 0 and 1 at k = n exactly; statsmodels' Wilson formula leaves
    # a rounding residue there (1.4e-17 at 0/24), which would print as a nonzero bound
    lo = 0.0 if k == 0 else max(0.0, float(lo))
    hi = 1.0 if k == n else min(1.0, float(hi))
    return k / n, lo, hi


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error control across a grid).

    Parameters
    ----------
    pvalues : array_like of shape (m,)
        Raw p-values; NaN entries (tests that could not be run) are left NaN
        and do not count towards ``m``.

    Returns
    -------
    ndarray of shape (m,)
        Adjusted p-values, ``min(1, max_{j<=i} (m - j + 1) p_(j))`` in sorted
        order, mapped back to the input order.
    """
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def _gauss_logpdf(x, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def gmm_bimodality(x, n_iter: int = 500, tol: float = 1e-10) -> dict:
    """Bimodality of a 1-D sample: 2-component Gaussian mixture vs one Gaussian (EM in numpy).

    EM from three deterministic starts (means at the 10/90, 25/75 and 40/60
    percentiles) keeps the best log-likelihood; variances are floored at
    ``1e-6 var(x)``. ``BIC = -2 logL + p log n`` (p = 2 and 5).

    Parameters
    ----------
    x : array-like of shape (n,)
        E.g. ``log10 ell``.

    Returns
    -------
    dict
        ``bic_gain`` = BIC_1 - BIC_2 (> 0 favours two components),
        ``ashman_d`` = sqrt(2) |mu_1 - mu_2| / sqrt(var_1 + var_2),
        ``mu_low``, ``mu_high``, ``sd_low``, ``sd_high``, ``w_low``,
        ``n_low`` (points with posterior > 1/2 for the lower-mean component),
        ``low`` (bool mask of those points).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    n = len(x)
    v = x.var()
    nan = dict(bic_gain=0.0, ashman_d=0.0, mu_low=float(x.mean()) if n else math.nan, mu_high=math.nan,
               sd_low=math.sqrt(v) if n else math.nan, sd_high=math.nan, w_low=1.0, n_low=0,
               low=np.zeros(n, dtype=bool))
    if n < 5 or v <= 1e-300:
        return nan
    floor = 1e-6 * v
    ll1 = _gauss_logpdf(x, x.mean(), v).sum()
    best = None
    for qa, qb in ((10, 90), (25, 75), (40, 60)):
        mu = np.percentile(x, [qa, qb]).astype(np.float64)
        if mu[0] == mu[1]:
            mu = mu + np.array([-1e-3, 1e-3]) * math.sqrt(v)
        var = np.full(2, v / 4)
        w = np.full(2, 0.5)
        prev = -np.inf
        for _ in range(n_iter):
            lp = np.log(w)[None, :] + _gauss_logpdf(x[:, None], mu[None, :], var[None, :])
            mx = lp.max(1, keepdims=True)
            ll = float((mx[:, 0] + np.log(np.exp(lp - mx).sum(1))).sum())
            r = np.exp(lp - mx)
            r /= r.sum(1, keepdims=True)
            nk = r.sum(0) + 1e-300
            w = np.clip(nk / n, 1e-12, None)
            mu = (r * x[:, None]).sum(0) / nk
            var = np.maximum((r * (x[:, None] - mu[None, :]) ** 2).sum(0) / nk, floor)
            if ll - prev < tol * max(1.0, abs(ll)):
                break
            prev = ll
        lp = np.log(w)[None, :] + _gauss_logpdf(x[:, None], mu[None, :], var[None, :])
        mx = lp.max(1, keepdims=True)
        ll = float((mx[:, 0] + np.log(np.exp(lp - mx).sum(1))).sum())
        if best is None or ll > best[0]:
            post = np.exp(lp - mx)
            post /= post.sum(1, keepdims=True)
            best = (ll, mu.copy(), var.copy(), w.copy(), post)
    ll2, mu, var, w, post = best
    lo, hi = int(np.argmin(mu)), int(np.argmax(mu))
    if lo == hi:
        hi = 1 - lo
    bic1 = -2 * ll1 + 2 * math.log(n)
    bic2 = -2 * ll2 + 5 * math.log(n)
    low = post[:, lo] > 0.5
    return dict(bic_gain=float(bic1 - bic2),
                ashman_d=float(math.sqrt(2) * abs(mu[hi] - mu[lo]) / math.sqrt(var[lo] + var[hi])),
                mu_low=float(mu[lo]), mu_high=float(mu[hi]), sd_low=float(math.sqrt(var[lo])),
                sd_high=float(math.sqrt(var[hi])), w_low=float(w[lo]), n_low=int(low.sum()), low=low)
