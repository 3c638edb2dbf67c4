"""Tests for zhunt.stats: percentile bootstrap CIs and the exact McNemar test."""

import numpy as np
import pytest

from zhunt.stats import bootstrap_ci, mcnemar_exact, rate_ci


def test_bootstrap_matches_scipy_percentile():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(1)
    x = (rng.random(40) < 0.35).astype(float)
    est, lo, hi = bootstrap_ci(x, n_resamples=20000, seed=3)
    ref = bootstrap((x,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                    random_state=np.random.default_rng(5)).confidence_interval
    assert est == pytest.approx(x.mean())
    # two Monte Carlo estimates of the same quantiles
    assert lo == pytest.approx(ref.low, abs=0.03)
    assert hi == pytest.approx(ref.high, abs=0.03)
    assert lo <= est <= hi


def test_bootstrap_deterministic_and_degenerate():
    x = np.r_[np.ones(7), np.zeros(13)]
    assert bootstrap_ci(x, seed=0) == bootstrap_ci(x, seed=0)
    y = np.random.default_rng(2).normal(size=30)
    assert bootstrap_ci(y, seed=0) != bootstrap_ci(y, seed=1)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0, 1.0)
    assert bootstrap_ci(np.zeros(10)) == (0.0, 0.0, 0.0)
    assert all(np.isnan(bootstrap_ci(np.array([]))))


def test_bootstrap_paired_statistic():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    X = np.c_[a + 1.0, a]  # paired: the difference is exactly 1 in every row
    est, lo, hi = bootstrap_ci(X, lambda s: (s[..., 0] - s[..., 1]).mean(axis=1))
    assert est == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bootstrap_ci(X)  # no default statistic for 2-d data


def test_rate_ci():
    r = rate_ci([True, False, True, True])
    assert r["rate"] == 0.75 and r["n"] == 4 and r["k"] == 3
    assert 0 <= r["lo"] <= r["rate"] <= r["hi"] <= 1


@pytest.mark.parametrize("n01,n10,n11,n00", [(5, 0, 3, 2), (7, 2, 0, 1), (0, 0, 4, 4), (10, 10, 1, 1),
                                              (1, 12, 5, 5)])
def test_mcnemar_matches_statsmodels(n01, n10, n11, n00):
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.r_[np.ones(n01), np.zeros(n10), np.ones(n11), np.zeros(n00)].astype(bool)
    b = np.r_[np.zeros(n01), np.ones(n10), np.ones(n11), np.zeros(n00)].astype(bool)
    res = mcnemar_exact(a, b)
    assert (res["n01"], res["n10"], res["n11"], res["n00"]) == (n01, n10, n11, n00)
    ref = mcnemar([[n11, n01], [n10, n00]], exact=True).pvalue
    assert res["p"] == pytest.approx(min(1.0, ref), rel=1e-9, abs=1e-12)


def test_mcnemar_length_mismatch():
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_binomial_ci_matches_scipy_and_is_never_zero_width():
    from scipy.stats import binomtest
    from zhunt.stats import binomial_ci

    for k, n in [(0, 1), (0, 20), (4, 20), (20, 20), (7, 70)]:
        r, lo, hi = binomial_ci(k, n, method="exact")
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        np.testing.assert_allclose([lo, hi], [ci.low, ci.high], atol=1e-10)
        r, wlo, whi = binomial_ci(k, n)
        wci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        np.testing.assert_allclose([wlo, whi], [wci.low, wci.high], atol=1e-10)
        assert r == k / n and hi > lo and whi > wlo
    assert all(np.isnan(binomial_ci(0, 0)))


def test_binomial_ci_ends_are_exact_at_zero_and_all():
    from zhunt.stats import binomial_ci

    # Wilson's formula leaves a rounding residue at k = 0 (1.4e-17 at 0/24): the bound must be 0
    for method in ("wilson", "exact"):
        for n in (1, 13, 24, 70, 237):
            assert binomial_ci(0, n, method=method)[1] == 0.0
            assert binomial_ci(n, n, method=method)[2] == 1.0


def test_holm_by_hand():
    from zhunt.stats import holm

    p = [0.01, 0.04, 0.03, np.nan, 0.5]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> monotone 0.09, 0.5*1=0.5
    np.testing.assert_allclose(holm(p), [0.04, 0.09, 0.09, np.nan, 0.5], atol=1e-12)
