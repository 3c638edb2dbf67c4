"""Checks of subspace geometry against independent computations."""

import numpy as np
from numpy.testing import assert_allclose
from scipy.linalg import subspace_angles

from zhunt.subspace import (
    canonical_signs,
    effective_rank,
    grassmann_similarity,
    principal_angles,
    project,
    project_complement,
    projector,
    random_subspace,
)


def test_effective_rank_known_values():
    assert_allclose(effective_rank(np.ones(7)), 7.0, rtol=1e-12)
    assert_allclose(effective_rank(np.array([5.0, 0, 0])), 1.0, rtol=1e-12)
    s = np.array([3.0, 1.0])
    p = s / s.sum()
    assert_allclose(effective_rank(s), np.exp(-(p * np.log(p)).sum()), rtol=1e-12)
    assert effective_rank(np.zeros(3)) == 0.0


def test_grassmann_similarity_matches_principal_angles():
    V1 = random_subspace(5, 30, random_state=0)
    V2 = random_subspace(5, 30, random_state=1)
    ang = subspace_angles(V1.T, V2.T)  # scipy, independent route
    assert_allclose(grassmann_similarity(V1, V2), np.mean(np.cos(ang) ** 2), atol=1e-12)
    assert_allclose(grassmann_similarity(V1, V1), 1.0, atol=1e-12)
    Q = np.linalg.qr(np.random.default_rng(2).standard_normal((5, 5)))[0]
    assert_allclose(grassmann_similarity(V1, Q @ V1), 1.0, atol=1e-12)
    assert_allclose(np.sort(principal_angles(V1, V2)), np.sort(ang), atol=1e-12)


def test_orthogonal_subspaces_have_zero_similarity():
    E = np.eye(10)
    assert_allclose(grassmann_similarity(E[:3], E[3:6]), 0.0, atol=1e-15)


def test_projectors():
    V = random_subspace(4, 12, random_state=3)
    P = projector(V)
    assert_allclose(P @ P, P, atol=1e-12)
    assert_allclose(P, P.T, atol=1e-12)
    assert_allclose(np.trace(P), 4.0, atol=1e-12)
    X = np.random.default_rng(4).standard_normal((6, 12))
    assert_allclose(project(X, V), X @ P, atol=1e-12)
    assert_allclose(project(X, V) + project_complement(X, V), X, atol=1e-12)
    assert_allclose(project(X, V) @ project_complement(X, V).T, 0.0, atol=1e-12)


def test_random_subspace_is_orthonormal_deterministic_and_unbiased():
    V = random_subspace(6, 40, random_state=7)
    assert_allclose(V @ V.T, np.eye(6), atol=1e-12)
    assert_allclose(random_subspace(6, 40, random_state=7), V)
    # E||P_Z x||^2 = k/d ||x||^2 for a Haar-random subspace (200 draws, 5 sigma band)
    x = np.random.default_rng(8).standard_normal(40)
    fr = [np.sum(project(x[None], random_subspace(6, 40, random_state=s)) ** 2) / (x @ x) for s in range(400)]
    assert abs(np.mean(fr) - 6 / 40) < 5 * np.std(fr) / np.sqrt(len(fr))


def test_canonical_signs():
    V = np.array([[0.1, -0.9], [0.5, 0.2]])
    C = canonical_signs(V)
    assert_allclose(C, [[-0.1, 0.9], [0.5, 0.2]])
