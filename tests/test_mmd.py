"""Tests for zhunt.activations.mmd: ARD-RBF kernel, unbiased MMD² (single, padded batch, packed CloudSet)."""

import numpy as np
import pytest
import torch

from zhunt.activations.mmd import CloudSet, ard_kernel, mmd2_batched, mmd2_unbiased, pad_clouds


def mmd2_reference(X, Y, ell):
    """Slow reference: the unbiased estimator with explicit double loops (numpy, float64)."""
    def k(a, b):
        return np.exp(-0.5 * np.sum((a - b) ** 2 / ell ** 2))

    n, m = len(X), len(Y)
    sxx = sum(k(X[i], X[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(Y[i], Y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(X[i], Y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def t64(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


@pytest.fixture
def clouds():
    rng = np.random.default_rng(0)
    d = 5
    ell = np.exp(rng.normal(0, 0.5, d))
    X = [rng.normal(0, 1, (n, d)) for n in (4, 7, 3, 6)]
    Y = [rng.normal(0.5, 1.2, (n, d)) for n in (5, 2, 8, 3)]
    return X, Y, ell


def test_kernel_matches_definition(clouds):
    X, Y, ell = clouds
    K = ard_kernel(t64(X[0]), t64(Y[0]), t64(np.log(ell))).numpy()
    ref = np.exp(-0.5 * (((X[0][:, None, :] - Y[0][None, :, :]) / ell) ** 2).sum(-1))
    np.testing.assert_allclose(K, ref, rtol=1e-12)


def test_unbiased_matches_reference(clouds):
    X, Y, ell = clouds
    for x, y in zip(X, Y):
        got = float(mmd2_unbiased(t64(x), t64(y), t64(np.log(ell))))
        assert got == pytest.approx(mmd2_reference(x, y, ell), rel=1e-10, abs=1e-12)


def test_padded_batch_matches_reference(clouds):
    X, Y, ell = clouds
    Xp, mx = pad_clouds(X, device="cpu", dtype=torch.float64)
    Yp, my = pad_clouds(Y, device="cpu", dtype=torch.float64)
    got = mmd2_batched(Xp, mx, Yp, my, t64(np.log(ell))).numpy()
    ref = [mmd2_reference(x, y, ell) for x, y in zip(X, Y)]
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_cloudset_matches_reference_and_is_differentiable(clouds):
    X, Y, ell = clouds
    cs = CloudSet(X + Y, device="cpu", dtype=torch.float64, block_elems=200)  # tiny budget: many buckets
    assert len(cs.self_plan.buckets) > 1
    pairs = [(0, 4), (1, 5), (2, 6), (3, 7), (0, 3), (7, 2)]
    plan = cs.plan(pairs)
    log_ell = t64(np.log(ell)).requires_grad_(True)
    got = cs.mmd2(log_ell, plan)
    allc = X + Y
    ref = [mmd2_reference(allc[a], allc[b], ell) for a, b in pairs]
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    assert plan.flops_forward == sum(2 * len(allc[a]) * len(allc[b]) * 5 for a, b in pairs)
    # gradient agrees with the single-pair implementation
    got.sum().backward()
    g_fast = log_ell.grad.clone()
    log_ell2 = t64(np.log(ell)).requires_grad_(True)
    sum(mmd2_unbiased(t64(allc[a]), t64(allc[b]), log_ell2) for a, b in pairs).backward()
    np.testing.assert_allclose(g_fast.numpy(), log_ell2.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block_elems", [150, 10 ** 6])
def test_cloudset_grouped_partners_match_reference(block_elems):
    """Pairs sharing a first cloud are computed as one group (its partners stacked); groups of
    1-5 partners, a repeated pair and small / one-bucket budgets give each pair's own MMD² and the
    summed gradient of the single-pair implementation (float64, rtol 1e-10 / 1e-9)."""
    rng = np.random.default_rng(3)
    d = 4
    allc = [rng.normal(rng.normal(0, 0.3), 1.0, (int(n), d)) for n in rng.integers(2, 9, 10)]
    ell = np.exp(rng.normal(0, 0.4, d))
    pairs = [(a, int(b)) for a in range(6) for b in rng.choice(np.arange(6, 10), 1 + a % 4, replace=False)]
    pairs += [(2, 7), (2, 7), (9, 0)]
    rng.shuffle(pairs)
    cs = CloudSet(allc, device="cpu", dtype=torch.float64, block_elems=block_elems)
    plan = cs.plan(pairs)
    assert max(b.n_slots for b in plan.buckets) > 1
    log_ell = t64(np.log(ell)).requires_grad_(True)
    got = cs.mmd2(log_ell, plan)
    ref = [mmd2_reference(allc[a], allc[b], ell) for a, b in pairs]
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    (got * t64(np.arange(1, len(pairs) + 1))).sum().backward()
    log_ell2 = t64(np.log(ell)).requires_grad_(True)
    sum((i + 1) * mmd2_unbiased(t64(allc[a]), t64(allc[b]), log_ell2) for i, (a, b) in enumerate(pairs)).backward()
    np.testing.assert_allclose(log_ell.grad.numpy(), log_ell2.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_gradcheck_single_pair():
    rng = np.random.default_rng(1)
    X, Y = t64(rng.normal(size=(4, 3))), t64(rng.normal(size=(5, 3)))
    log_ell = t64(rng.normal(0, 0.3, 3)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda le: mmd2_unbiased(X, Y, le), (log_ell,))


def test_zero_in_expectation_for_one_distribution():
    """Same distribution: mean of the unbiased estimator over many draws is 0 within 4 standard errors."""
    rng = np.random.default_rng(2)
    d, R = 3, 400
    X = [rng.normal(size=(6, d)) for _ in range(R)]
    Y = [rng.normal(size=(9, d)) for _ in range(R)]
    Xp, mx = pad_clouds(X, device="cpu", dtype=torch.float64)
    Yp, my = pad_clouds(Y, device="cpu", dtype=torch.float64)
    v = mmd2_batched(Xp, mx, Yp, my, torch.zeros(d, dtype=torch.float64)).numpy()
    se = v.std(ddof=1) / np.sqrt(R)
    assert abs(v.mean()) < 4 * se
    assert (v < 0).any()  # the unbiased estimator takes negative values
    # ... whereas a shifted distribution is clearly positive
    Z = [rng.normal(1.0, 1.0, size=(9, d)) for _ in range(R)]
    Zp, mz = pad_clouds(Z, device="cpu", dtype=torch.float64)
    w = mmd2_batched(Xp, mx, Zp, mz, torch.zeros(d, dtype=torch.float64)).numpy()
    assert w.mean() > 10 * w.std(ddof=1) / np.sqrt(R)


def test_large_lengthscales_stay_accurate():
    """expm1 sums: with ell ~ 1e3 the float32 result still matches float64 to a few digits."""
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(30, 4)), rng.normal(0.3, 1, size=(25, 4))
    le = np.full(4, np.log(1e3))
    ref = mmd2_reference(X, Y, np.exp(le))
    got = float(mmd2_unbiased(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32),
                              torch.tensor(le, dtype=torch.float32)))
    assert got == pytest.approx(ref, rel=1e-3)


def test_too_few_points():
    with pytest.raises(ValueError):
        mmd2_unbiased(torch.zeros(1, 2), torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError):
        CloudSet([np.zeros((1, 2)), np.zeros((3, 2))], device="cpu")
