"""Cointegration of two languages' trajectories through depth: Johansen rank against simulated
finite-sample critical values, VECM error-correction coefficients, and the per-problem and model
verdicts (:data:`COINT_RULE`).

Notation and definitions: :mod:`zhunt.activations.theory` (one list for every seed-003 quantity).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from zhunt.activations.paired import PairedStates
from zhunt.errors import ZhuntError

__all__ = ["COINTEGRATION_CAPTION", "COINT_LEVEL", "COINT_MODEL_LEVEL", "COINT_N_SIM", "COINT_SIM_SEED",
           "ALPHA_RATIO_THRESHOLD", "COINT_RULE", "johansen_null_crit", "johansen_rank", "vecm_alpha",
           "cointegration_verdict", "cointegration_model_verdict", "cointegration_table"]


COINTEGRATION_CAPTION = (
    "Johansen trace-test rank (constant, one lagged difference; critical values simulated at the series' own "
    "length and dimension, since statsmodels' tabulated ones over-reject) of the two languages' pooled "
    "trajectories through depth, projected on the leading principal components of all pooled states, and at "
    "that rank the VECM error-correction coefficients: |alpha_l| = Frobenius norm of language l's rows of "
    "Pi = alpha beta^T, and the ratio |alpha_a|/|alpha_b| (which language adjusts). "
    "Caveats: the 'time' axis is depth, not time — layers are different functions, so the stationarity "
    "and constant-coefficient assumptions of a VECM have no justification; the series has only L+1 points "
    "for 2c equations, so the test has little power; the "
    "projection to c components is itself fitted on the data; ranks are per problem and are not independent "
    "across problems. Read the distribution as descriptive, not as an estimate of dim(Z)."
)


#: Level of the per-problem sequential Johansen trace test (1 %: at 5 % a single pair's label would be
#: a false "cointegrated" once in twenty random-walk pairs, right at the calibration bound).
COINT_LEVEL = 0.01
#: Level of the model-level verdict (one-sided exact binomial test of the count of rank >= 1 problems
#: against the per-problem false-positive rate COINT_LEVEL).
COINT_MODEL_LEVEL = 0.05
#: Monte-Carlo draws per null hypothesis for the finite-sample critical values.
COINT_N_SIM = 1000
#: Seed of those draws.
COINT_SIM_SEED = 12345
#: ``|alpha_a| / |alpha_b|`` at or above this (at or below its inverse): one language does the adjusting.
ALPHA_RATIO_THRESHOLD = 2.0
#: The rule, as printed in tables and report captions.
COINT_RULE = (f"rank = sequential Johansen trace test at {COINT_LEVEL:g} against finite-sample critical values "
              f"simulated at the series' own length and dimension ({COINT_N_SIM} draws per null: r i.i.d. "
              f"N(0,1) + m-r independent random walks); per problem 'not cointegrated' (rank 0), else VECM "
              f"alpha ratio |alpha_a|/|alpha_b| >= {ALPHA_RATIO_THRESHOLD:g}: 'a adjusts', <= "
              f"1/{ALPHA_RATIO_THRESHOLD:g}: 'b adjusts', else 'both adjust' ('stationary' at full rank). "
              f"Model: 'cointegrated' when the count of rank >= 1 problems exceeds a {COINT_LEVEL:g} "
              f"false-positive rate (one-sided exact binomial p < {COINT_MODEL_LEVEL:g})")


def _johansen(Y: np.ndarray, det_order: int, k_ar_diff: int):
    """``(result, "")`` of statsmodels' ``coint_johansen``, or ``(None, reason)`` when the small-sample algebra fails."""
    from statsmodels.tsa.vector_ar.vecm import coint_johansen

    try:
        res = coint_johansen(Y, det_order, k_ar_diff)
    except (np.linalg.LinAlgError, ValueError) as exc:
        return None, " ".join(str(exc).split())[:120] or type(exc).__name__
    if not np.all(np.isfinite(np.asarray(res.trace_stat, np.float64))):
        return None, "non-finite trace statistics"
    return res, ""


_CRIT_CACHE: dict = {}


def johansen_null_crit(T: int, m: int, det_order: int = 0, k_ar_diff: int = 1, level: float = COINT_LEVEL,
                       n_sim: int = COINT_N_SIM, seed: int = COINT_SIM_SEED) -> np.ndarray:
    """Finite-sample critical values of the Johansen trace statistics, by simulation.

    For each null ``H_r: rank <= r`` (``r = 0..m-1``) draw ``n_sim`` series of
    shape ``(T, m)`` with ``r`` i.i.d. N(0, 1) columns (stationary) and ``m - r``
    independent Gaussian random walks, compute the trace statistic ``r`` of
    :func:`statsmodels.tsa.vector_ar.vecm.coint_johansen` exactly as the data's
    (same ``det_order``, ``k_ar_diff``) and take its ``1 - level`` quantile.

    Why: ``coint_johansen``'s tabulated values do not match its own
    deterministic-term handling (statsmodels issues #5355, #6168) and are
    asymptotic. Measured on two independent random walks at nominal 5 %: 13.5 %
    rejections of rank 0 at T = 200 and T = 500 (det_order 0), 22 % at
    T = 19, 83 % with m = 4 at T = 19. Simulating the statistic as computed
    removes both errors (nuisance: the stationary part is white noise here).

    Returns
    -------
    ndarray of shape (m,)
        Critical value of trace statistic ``r``; NaN where fewer than half the
        draws could be computed.
    """
    key = (int(T), int(m), int(det_order), int(k_ar_diff), float(level), int(n_sim), int(seed))
    if key not in _CRIT_CACHE:
        rng = np.random.default_rng(seed)
        crit = np.full(m, math.nan)
        for r in range(m):
            stats = []
            for _ in range(n_sim):
                E = rng.standard_normal((T, m))
                E[:, r:] = np.cumsum(E[:, r:], axis=0)
                res, _ = _johansen(E, det_order, k_ar_diff)
                if res is not None:
                    stats.append(float(res.trace_stat[r]))
            if len(stats) >= n_sim / 2:
                crit[r] = float(np.quantile(stats, 1.0 - level))
        _CRIT_CACHE[key] = crit
    return _CRIT_CACHE[key].copy()


def johansen_rank(Y: np.ndarray, det_order: int = 0, k_ar_diff: int = 1, level: float = COINT_LEVEL,
                  n_sim: int = COINT_N_SIM) -> dict:
    """Cointegration rank of a multivariate series by the sequential Johansen trace test.

    Parameters
    ----------
    Y : ndarray of shape (T, m)
        ``m <= 12`` (the tabulated critical values).
    det_order : {-1, 0, 1}
    k_ar_diff : int
    level : {0.10, 0.05, 0.01}
    n_sim : int
        Draws per null of :func:`johansen_null_crit`.

    Returns
    -------
    dict
        ``rank``: the first ``r`` whose null "rank <= r" is not rejected
        against the simulated critical values (``m`` if every null is
        rejected; NaN if the test failed); ``rank_tabulated``: the same with
        statsmodels' tabulated values (the rule before the fix, kept for
        comparison); ``trace`` (m,), ``crit`` (m,, tabulated at ``level``),
        ``crit_sim`` (m,); ``error`` ("" or the reason).
    """
    Y = np.asarray(Y, np.float64)
    col = {0.10: 0, 0.05: 1, 0.01: 2}[level]
    T, m = Y.shape
    res, err = _johansen(Y, det_order, k_ar_diff)
    if res is None:
        return {"rank": math.nan, "rank_tabulated": math.nan, "trace": np.full(m, math.nan),
                "crit": np.full(m, math.nan), "crit_sim": np.full(m, math.nan), "error": err}
    tr = np.asarray(res.trace_stat, np.float64)
    cv = np.asarray(res.trace_stat_crit_vals, np.float64)[:, col]
    cs = johansen_null_crit(T, m, det_order, k_ar_diff, level, n_sim)

    def first_not_rejected(c):
        if not np.all(np.isfinite(c)):
            return math.nan
        notrej = np.flatnonzero(tr <= c)
        return int(notrej[0]) if len(notrej) else m

    return {"rank": first_not_rejected(cs), "rank_tabulated": first_not_rejected(cv), "trace": tr, "crit": cv,
            "crit_sim": cs, "error": "" if np.all(np.isfinite(cs)) else "simulated critical values undefined"}


def vecm_alpha(Y: np.ndarray, rank: int, n_a: int, k_ar_diff: int = 1) -> dict:
    """Error-correction coefficients of a VECM at a given cointegration rank.

    Fits ``Delta y_t = alpha beta^T y_{t-1} + Gamma_1 Delta y_{t-1} + c + e_t``
    (:class:`statsmodels.tsa.vector_ar.vecm.VECM`, ``deterministic="co"``: an
    unrestricted constant, as ``det_order = 0`` of the rank test) with
    ``alpha, beta`` of shape ``(m, rank)``. The first ``n_a`` variables belong
    to language ``a``, the rest to ``b``.

    ``alpha`` alone is not identified for ``rank > 1`` (``alpha A, beta A^{-T}``
    fit equally), ``Pi = alpha beta^T`` is. The speed of adjustment of a
    language is therefore ``|alpha_l| = ||Pi_l||_F``, the Frobenius norm of
    that language's rows of ``Pi``: how strongly its variables are pulled back
    by last step's disequilibrium. For ``rank = 1`` the ratio
    ``|alpha_a| / |alpha_b|`` equals the ratio of the Euclidean norms of the
    two blocks of ``alpha`` (seed 003's ``|alpha_1| / |alpha_2|``).

    Parameters
    ----------
    Y : ndarray of shape (T, m)
    rank : int
        ``1 <= rank <= m``.
    n_a : int
        Variables of language ``a`` (the first ``n_a`` columns).
    k_ar_diff : int

    Returns
    -------
    dict
        ``alpha`` (m, rank), ``Pi`` (m, m), ``alpha_a``, ``alpha_b``
        (``||Pi_l||_F``), ``alpha_ratio`` (``alpha_a / alpha_b``; inf when
        ``alpha_b = 0``), ``error`` ("" or why the fit failed, then NaNs).
    """
    from statsmodels.tsa.vector_ar.vecm import VECM

    Y = np.asarray(Y, np.float64)
    m = Y.shape[1]
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = VECM(Y, k_ar_diff=k_ar_diff, coint_rank=int(rank), deterministic="co").fit()
        alpha, beta = np.asarray(res.alpha, np.float64), np.asarray(res.beta, np.float64)
        Pi = alpha @ beta.T
        if not np.all(np.isfinite(Pi)):
            raise np.linalg.LinAlgError("non-finite VECM coefficients")
    except (np.linalg.LinAlgError, ValueError) as exc:
        return {"alpha": np.full((m, max(int(rank), 1)), math.nan), "Pi": np.full((m, m), math.nan),
                "alpha_a": math.nan, "alpha_b": math.nan, "alpha_ratio": math.nan,
                "error": " ".join(str(exc).split())[:120] or type(exc).__name__}
    na, nb = float(np.linalg.norm(Pi[:n_a])), float(np.linalg.norm(Pi[n_a:]))
    ratio = na / nb if nb > 0 else math.inf
    return {"alpha": alpha, "Pi": Pi, "alpha_a": na, "alpha_b": nb, "alpha_ratio": ratio, "error": ""}


def cointegration_verdict(rank, alpha_ratio, m: int, a: str = "a", b: str = "b",
                          threshold: float = ALPHA_RATIO_THRESHOLD) -> str:
    """Per-problem cointegration label (:data:`COINT_RULE`).

    Returns
    -------
    str
        ``"not measured"`` (rank NaN), ``"not cointegrated"`` (rank 0),
        ``"stationary"`` (rank ``m``: no common trend), else
        ``"{a} adjusts"`` when ``alpha_ratio >= threshold``, ``"{b} adjusts"``
        when ``alpha_ratio <= 1 / threshold`` (``inf`` counts as large),
        ``"both adjust"`` otherwise, ``"cointegrated, alpha not measured"``
        when the VECM fit failed (ratio NaN).
    """
    if rank is None or not np.isfinite(rank):
        return "not measured"
    rank = int(rank)
    if rank == 0:
        return "not cointegrated"
    if rank >= m:
        return "stationary"
    if alpha_ratio is None or np.isnan(alpha_ratio):
        return "cointegrated, alpha not measured"
    if alpha_ratio >= threshold:
        return f"{a} adjusts"
    if alpha_ratio <= 1.0 / threshold:
        return f"{b} adjusts"
    return "both adjust"


def cointegration_model_verdict(ranks, alpha_ratios=None, a: str = "a", b: str = "b",
                                level: float = COINT_LEVEL, model_level: float = COINT_MODEL_LEVEL,
                                threshold: float = ALPHA_RATIO_THRESHOLD) -> dict:
    """Verdict over every problem: more cointegrated pairs than the test's false-positive rate?

    Parameters
    ----------
    ranks : sequence of float
        Per-problem ranks (NaN = not measured, ignored).
    alpha_ratios : sequence of float, optional
        Per-problem ``|alpha_a| / |alpha_b|`` (used where ``0 < rank < m``).

    Returns
    -------
    dict
        ``n``, ``n_cointegrated`` (rank >= 1), ``rate`` with Wilson 95% ``lo``,
        ``hi``, ``binom_p`` (one-sided exact, ``Bin(n, level)``), ``verdict``
        (``"cointegrated"`` when ``binom_p < model_level``, ``"not cointegrated"``,
        ``"not measured"``),
        ``alpha_ratio_median`` over the cointegrated problems with a finite
        ratio and ``adjusts`` (its label: ``"{a} adjusts"``, ``"{b} adjusts"``,
        ``"both adjust"``; ``""`` when not cointegrated).
    """
    from scipy.stats import binomtest

    from zhunt.stats import binomial_ci

    r = np.asarray(ranks, np.float64)
    ok = np.isfinite(r)
    n, k = int(ok.sum()), int((r[ok] >= 1).sum())
    out = {"n": n, "n_cointegrated": k, "rate": math.nan, "lo": math.nan, "hi": math.nan, "binom_p": math.nan,
           "verdict": "not measured", "alpha_ratio_median": math.nan, "adjusts": ""}
    if n == 0:
        return out
    rate, lo, hi = binomial_ci(k, n)
    p = float(binomtest(k, n, level, alternative="greater").pvalue)
    out.update(rate=float(rate), lo=float(lo), hi=float(hi), binom_p=p,
               verdict="cointegrated" if p < model_level else "not cointegrated")
    if alpha_ratios is not None:
        q = np.asarray(alpha_ratios, np.float64)
        sel = ok & (r >= 1) & np.isfinite(q) & (q > 0)
        if sel.any():
            med = float(np.exp(np.median(np.log(q[sel]))))  # median of log ratios: symmetric in a <-> b
            out["alpha_ratio_median"] = med
            if out["verdict"] == "cointegrated":
                out["adjusts"] = cointegration_verdict(1, med, 2, a, b, threshold)
    return out


def cointegration_table(P: PairedStates, pair: tuple[str, str], components: int = 2,
                        det_order: int = 0, k_ar_diff: int = 1) -> pd.DataFrame:
    """Johansen rank and VECM error-correction coefficients per problem for the pair's trajectories.

    Returns
    -------
    DataFrame
        ``problem``, ``category``, ``rank`` (simulated critical values),
        ``rank_tabulated``, ``alpha_{a}``, ``alpha_{b}`` (``||Pi_l||_F`` of
        :func:`vecm_alpha` at ``rank``; NaN at rank 0), ``alpha_ratio``
        (``alpha_a / alpha_b``), ``verdict`` (:func:`cointegration_verdict`),
        ``trace_r{r}``, ``crittab_r{r}`` (tabulated), ``critsim_r{r}`` (simulated) at ``COINT_LEVEL`` for
        ``r = 0..2c-1``, ``error``.
    """
    K, J, N, d = P.H.shape
    c = int(components)
    if not 1 <= c <= min(6, d):
        raise ZhuntError("theory.coint_components", f"must be in 1..{min(6, d)}, got {components}")
    allX = P.H.reshape(-1, d)
    mu = allX.mean(axis=0)
    C = (allX - mu).T @ (allX - mu)
    ev, U = np.linalg.eigh(C)
    V = U[:, ::-1][:, :c].T  # (c, d)
    a, b = pair
    Za = (P.states(a) - mu) @ V.T  # (J, N, c)
    Zb = (P.states(b) - mu) @ V.T
    rows = []
    for i, p in enumerate(P.problems):
        Y = np.concatenate([Za[:, i], Zb[:, i]], axis=1)  # (J, 2c)
        res = johansen_rank(Y, det_order, k_ar_diff)
        r = {"problem": p, "category": P.category[i], "rank": res["rank"], "rank_tabulated": res["rank_tabulated"]}
        fit = {"alpha_a": math.nan, "alpha_b": math.nan, "alpha_ratio": math.nan, "error": ""}
        if np.isfinite(res["rank"]) and res["rank"] >= 1:
            fit = vecm_alpha(Y, int(res["rank"]), c, k_ar_diff)
        r.update({f"alpha_{a}": fit["alpha_a"], f"alpha_{b}": fit["alpha_b"], "alpha_ratio": fit["alpha_ratio"],
                  "verdict": cointegration_verdict(res["rank"], fit["alpha_ratio"], 2 * c, a, b)})
        for k in range(2 * c):
            r[f"trace_r{k}"] = res["trace"][k]
        for k in range(2 * c):
            r[f"crittab_r{k}"] = res["crit"][k]
        for k in range(2 * c):
            r[f"critsim_r{k}"] = res["crit_sim"][k]
        r["error"] = "; ".join(e for e in (res["error"], fit["error"]) if e)
        rows.append(r)
    return pd.DataFrame(rows)
