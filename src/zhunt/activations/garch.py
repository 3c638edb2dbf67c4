"""GARCH(1,1) on seed 003's per-step cross-lingual update differences ``||delta_l^(t)||^2``: one fit per
problem, Engle's ARCH-LM gate, the per-series and model verdicts (:data:`GARCH_RULE`), and the
table of the ``garch`` rule (:func:`garch_table`).

Notation and definitions: :mod:`zhunt.activations.theory` (one list for every seed-003 quantity).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["GARCH_LEVEL", "GARCH_ARCH_LM_LAGS", "GARCH_MIN_STEPS", "GARCH_RULE", "simulate_garch", "garch_beta",
           "garch_verdict", "garch_model_verdict", "STEP_COLUMNS", "garch_table"]


#: Significance level of every test in the GARCH verdict (per series and across series).
GARCH_LEVEL = 0.05
#: Lags of Engle's ARCH-LM test that a series must pass before its GARCH fit counts.
GARCH_ARCH_LM_LAGS = 5
#: Shorter series are listed but not fitted.
GARCH_MIN_STEPS = 30
#: The per-series rule, as printed in tables and report captions.
GARCH_RULE = (f"clustered = Engle ARCH-LM ({GARCH_ARCH_LM_LAGS} lags) p < {GARCH_LEVEL} and GARCH(1,1) alpha and "
              f"beta both significant (p < {GARCH_LEVEL}, robust SE); series of >= {GARCH_MIN_STEPS} steps. "
              f"Model: 'clustered' when the count of clustered series exceeds a {GARCH_LEVEL:g} false-positive "
              f"rate (one-sided exact binomial p < {GARCH_LEVEL})")


def simulate_garch(n: int, omega: float = 0.1, alpha: float = 0.1, beta: float = 0.85,
                   mu: float = 0.0, seed: int = 0, burn: int = 500) -> np.ndarray:
    """Simulate a GARCH(1,1) series with ``arch`` (constant mean, normal innovations).

    ``y_t = mu + eps_t``, ``eps_t = sigma_t z_t``,
    ``sigma_t^2 = omega + alpha eps_{t-1}^2 + beta sigma_{t-1}^2``, ``z_t`` i.i.d. N(0, 1)
    drawn from ``numpy.random.default_rng(seed)``; the first ``burn`` values are discarded.

    Returns
    -------
    ndarray of shape (n,)
    """
    from arch.univariate import GARCH, ConstantMean, Normal

    if alpha + beta >= 1:
        raise ValueError("need alpha + beta < 1 (covariance stationarity)")
    model = ConstantMean(None, volatility=GARCH(1, 0, 1), distribution=Normal(seed=np.random.default_rng(seed)))
    return model.simulate([mu, omega, alpha, beta], int(n), burn=int(burn))["data"].to_numpy(np.float64)


def garch_beta(series, min_length: int = GARCH_MIN_STEPS) -> dict:
    """Fit a constant-mean GARCH(1,1) with normal errors (package ``arch``) and test for ARCH effects.

    The series is divided by its standard deviation ``s`` before fitting
    (``arch`` optimises poorly on badly scaled data); ``alpha`` and ``beta``
    are scale-free, ``omega`` is reported in the original units
    (``omega_fit * s^2``). Engle's ARCH-LM test
    (:func:`statsmodels.stats.diagnostic.het_arch`, ``GARCH_ARCH_LM_LAGS``
    lags) is run on the demeaned series.

    Parameters
    ----------
    series : array_like of shape (T,)
    min_length : int
        Shorter (or constant) series are not fitted.

    Returns
    -------
    dict
        ``beta``, ``beta_pvalue``, ``alpha``, ``alpha_pvalue``, ``omega``,
        ``arch_lm_pvalue``, ``converged`` (optimizer flag 0), ``n`` and
        ``status`` ("ok" or why not).

    Notes
    -----
    When ``alpha = 0`` the GARCH recursion never sees the data and ``beta`` is
    not identified: on white noise the optimizer often returns ``alpha ≈ 0``
    with a large and "significant" ``beta``. A significant ``beta`` alone is
    therefore not evidence of volatility clustering; :func:`garch_verdict`
    also asks for ``alpha`` and for the ARCH-LM test.
    """
    import warnings

    from arch import arch_model
    from statsmodels.stats.diagnostic import het_arch

    y = np.asarray(series, np.float64)
    y = y[np.isfinite(y)]
    nan = {"beta": math.nan, "beta_pvalue": math.nan, "alpha": math.nan, "alpha_pvalue": math.nan,
           "omega": math.nan, "arch_lm_pvalue": math.nan, "converged": False, "n": int(len(y))}
    if len(y) < min_length:
        return {**nan, "status": f"too short ({len(y)} < {min_length})"}
    s = float(np.std(y))
    if not s > 0:
        return {**nan, "status": "constant series"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = arch_model(y / s, mean="Constant", vol="GARCH", p=1, q=1, dist="normal",
                         rescale=False).fit(disp="off")
        lm_p = float(het_arch((y - y.mean()) / s, nlags=GARCH_ARCH_LM_LAGS)[1])
    pr, pv = res.params, res.pvalues
    return {"beta": float(pr["beta[1]"]), "beta_pvalue": float(pv["beta[1]"]),
            "alpha": float(pr["alpha[1]"]), "alpha_pvalue": float(pv["alpha[1]"]),
            "omega": float(pr["omega"]) * s**2, "arch_lm_pvalue": lm_p,
            "converged": int(res.convergence_flag) == 0, "n": int(len(y)), "status": "ok"}


def garch_verdict(fit: Mapping, level: float = GARCH_LEVEL) -> str:
    """Per-series verdict of seed 003's prediction "volatility clustering (significant beta)".

    Parameters
    ----------
    fit : mapping
        :func:`garch_beta`'s result.
    level : float

    Returns
    -------
    str
        ``"clustered"`` when the fit is ``ok`` and converged, Engle's ARCH-LM
        test rejects homoscedasticity (``arch_lm_pvalue < level``) and both
        ``alpha`` and ``beta`` are significant (``p < level``) — the null
        (constant conditional variance) must be rejected by a test that is
        valid under it before the identified-only-if-``alpha > 0`` ``beta`` is
        read; ``"not clustered"`` otherwise; ``"not fitted"`` for a series that
        was too short or constant (:data:`GARCH_RULE`).
    """
    if fit.get("status") != "ok":
        return "not fitted"
    ok = (bool(fit.get("converged")) and fit["arch_lm_pvalue"] < level and fit["alpha_pvalue"] < level
          and fit["beta_pvalue"] < level)
    return "clustered" if ok else "not clustered"


def garch_model_verdict(verdicts, level: float = GARCH_LEVEL) -> dict:
    """Verdict over every fitted series of a model: more clustered series than chance?

    Parameters
    ----------
    verdicts : sequence of str
        :func:`garch_verdict` labels (``"not fitted"`` ones are ignored).
    level : float
        Per-series false-positive rate bound (the level of each test) and the
        level of the one-sided exact binomial test ``k ~ Bin(n, level)``.

    Returns
    -------
    dict
        ``n_fitted``, ``n_clustered``, ``rate`` with its Wilson 95% interval
        ``lo``, ``hi``, ``binom_p`` and ``verdict``: ``"clustered"`` when
        ``binom_p < level``, ``"not clustered"`` otherwise, ``"not measured"``
        when nothing was fitted.
    """
    from scipy.stats import binomtest

    from zhunt.stats import binomial_ci

    v = [str(x) for x in verdicts if str(x) != "not fitted"]
    n, k = len(v), sum(x == "clustered" for x in v)
    if n == 0:
        return {"n_fitted": 0, "n_clustered": 0, "rate": math.nan, "lo": math.nan, "hi": math.nan,
                "binom_p": math.nan, "verdict": "not measured"}
    rate, lo, hi = binomial_ci(k, n)
    p = float(binomtest(k, n, level, alternative="greater").pvalue)
    return {"n_fitted": n, "n_clustered": int(k), "rate": float(rate), "lo": float(lo), "hi": float(hi),
            "binom_p": p, "verdict": "clustered" if p < level else "not clustered"}


#: Fields of one fit that go into the GARCH table (per series; the secondary series prefixed ``output_``).
_GARCH_FIELDS = ("beta", "beta_pvalue", "alpha", "alpha_pvalue", "omega", "arch_lm_pvalue", "converged",
                 "status", "verdict")


#: Columns a step table must have (seed 003's ``||delta_l^(t)||^2`` per problem and step,
#: :func:`zhunt.experiments.behaviour.step_distances`).
STEP_COLUMNS = ("problem", "step", "y")


def garch_table(df: pd.DataFrame, *, min_steps: int = GARCH_MIN_STEPS, level: float = GARCH_LEVEL) -> pd.DataFrame:
    """GARCH(1,1) on per-step cross-lingual update-difference norms, one fit per problem (and layer).

    Parameters
    ----------
    df : DataFrame
        The step table: :data:`STEP_COLUMNS` (``y`` is seed 003's ``||delta_l^(t)||^2``),
        optionally ``y_output`` (the output-difference series, fitted as a secondary
        series) and ``layer`` (one fit per (layer, problem)).
    min_steps : int
        Series shorter than this are listed but not fitted.
    level : float

    Returns
    -------
    DataFrame
        One row per fit: the keys, ``n`` and :func:`garch_beta`'s fields,
        ``beta_significant``, ``verdict`` (:func:`garch_verdict`) and
        ``clustering`` (``verdict == "clustered"``); with ``y_output`` the
        same fields prefixed ``output_``. :func:`garch_model_verdict` of the
        ``verdict`` column is the model verdict of a series.
    """
    keys = ["layer", "problem"] if "layer" in df.columns else ["problem"]
    series = [("y", "")] + ([("y_output", "output_")] if "y_output" in df.columns else [])
    rows = []
    for key, g in df.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("step")
        row = dict(zip(keys, key))
        for col, prefix in series:
            res = garch_beta(g[col].to_numpy(), min_length=min_steps)
            res["verdict"] = garch_verdict(res, level)
            if not prefix:
                row["n"] = res["n"]
            row.update({prefix + f: res[f] for f in _GARCH_FIELDS})
            row[prefix + "beta_significant"] = bool(res["beta_pvalue"] < level)
            row[prefix + "clustering"] = res["verdict"] == "clustered"
        rows.append(row)
    cols = keys + ["n"] + [p + f for _, p in series for f in _GARCH_FIELDS + ("beta_significant", "clustering")]
    return pd.DataFrame(rows, columns=cols)
