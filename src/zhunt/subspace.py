"""Subspace geometry shared by every analysis.

Conventions (DESIGN.md): a k-dimensional subspace of R^d is held as a matrix
``V`` of shape (k, d) with orthonormal rows; its projector is ``P = V.T @ V``.
"""

from __future__ import annotations

import numpy as np


def effective_rank(singular_values: np.ndarray) -> float:
    """Effective rank of a matrix from its singular values.

    ``erank = exp(H(p))`` with ``p_i = sigma_i / sum_j sigma_j`` and ``H`` the
    Shannon entropy in nats (Roy & Vetterli, 2007).

    Parameters
    ----------
    singular_values : ndarray of shape (r,)
        Non-negative singular values (zeros allowed).

    Returns
    -------
    float
        A number in [1, r]; 0.0 for an all-zero spectrum.
    """
    s = np.asarray(singular_values, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def grassmann_similarity(V1: np.ndarray, V2: np.ndarray) -> float:
    """Mean squared cosine of the principal angles between two subspaces.

    ``sim = mean(svd(V1 @ V2.T) ** 2) = ||V1 V2^T||_F^2 / min(k1, k2)``.

    Parameters
    ----------
    V1 : ndarray of shape (k1, d)
    V2 : ndarray of shape (k2, d)
        Orthonormal rows.

    Returns
    -------
    float in [0, 1]; 1 for identical subspaces, 0 for orthogonal ones.
    """
    s = np.linalg.svd(np.asarray(V1, np.float64) @ np.asarray(V2, np.float64).T, compute_uv=False)
    return float(np.mean(s**2))


def principal_angles(V1: np.ndarray, V2: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the row spaces of ``V1`` and ``V2``.

    Thin wrapper over :func:`scipy.linalg.subspace_angles`, which expects
    column bases.
    """
    from scipy.linalg import subspace_angles

    return np.sort(subspace_angles(np.asarray(V1, np.float64).T, np.asarray(V2, np.float64).T))


def projector(V: np.ndarray) -> np.ndarray:
    """Orthogonal projector ``P = V.T @ V`` of shape (d, d) onto the row space of ``V`` (k, d)."""
    V = np.asarray(V)
    return V.T @ V


def project(X: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Project rows of ``X`` (n, d) onto span(V): ``X V^T V`` without forming the d x d projector."""
    return (X @ V.T) @ V


def project_complement(X: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Project rows of ``X`` (n, d) onto the orthogonal complement of span(V)."""
    return X - project(X, V)


def random_subspace(k: int, d: int, random_state: int | np.random.Generator | None = None) -> np.ndarray:
    """Haar-random k-dimensional subspace of R^d as a (k, d) orthonormal-row matrix.

    QR of a Gaussian (d, k) matrix with the sign of R's diagonal fixed, which
    makes the distribution exactly uniform on the Grassmannian.
    """
    rng = np.random.default_rng(random_state)
    G = rng.standard_normal((d, k))
    Q, R = np.linalg.qr(G)
    Q = Q * np.sign(np.diag(R))
    return Q.T


def canonical_signs(V: np.ndarray) -> np.ndarray:
    """Flip each row of ``V`` so its largest-magnitude entry is positive (deterministic output)."""
    V = np.array(V, copy=True)
    idx = np.argmax(np.abs(V), axis=1)
    signs = np.sign(V[np.arange(V.shape[0]), idx])
    signs[signs == 0] = 1.0
    return V * signs[:, None]
