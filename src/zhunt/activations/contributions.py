"""Geometry of the layer contributions ``f_j = h(j + 1) - h(j)``: their Gram of cosines and the
cross-term fraction of the accumulated cross-lingual disagreement.

Notation and definitions: :mod:`zhunt.activations.theory` (one list for every seed-003 quantity).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["contribution_gram", "offdiag_stats", "cross_term_fraction"]


def contribution_gram(F: np.ndarray) -> np.ndarray:
    """Mean absolute cosine between the contributions of every two layers.

    Parameters
    ----------
    F : ndarray of shape (L, M, d)
        ``F[j, m]`` = contribution of layer ``j`` for prompt ``m``.

    Returns
    -------
    ndarray of shape (L, L)
        ``G[j, k] = mean_m |cos(F[j, m], F[k, m])|`` (diagonal 1 unless a
        contribution is exactly zero).
    """
    F = np.asarray(F, np.float64)
    n = np.linalg.norm(F, axis=2, keepdims=True)
    U = F / np.where(n > 0, n, 1.0)
    C = np.einsum("jmd,kmd->mjk", U, U)
    return np.abs(C).mean(axis=0)


def offdiag_stats(G: np.ndarray) -> tuple[float, float]:
    """``(mean, max)`` of the off-diagonal entries of a square matrix."""
    G = np.asarray(G, np.float64)
    off = G[~np.eye(G.shape[0], dtype=bool)]
    return float(off.mean()), float(off.max())


def cross_term_fraction(delta: np.ndarray) -> float:
    """Fraction of ``sum_i ||sum_j delta_j^i||^2`` due to cross terms between layers.

    Parameters
    ----------
    delta : ndarray of shape (L, N, d)
        Per-layer cross-lingual contribution differences.

    Returns
    -------
    float
        ``(T - D) / T`` with ``T = sum_i ||sum_j delta_j^i||^2`` and
        ``D = sum_{i,j} ||delta_j^i||^2``, i.e. ``2 sum_i sum_{j<k} <delta_j^i, delta_k^i> / T``
        (signed: negative when layers partly cancel each other).
    """
    delta = np.asarray(delta, np.float64)
    T = float(np.sum(delta.sum(axis=0) ** 2))
    D = float(np.sum(delta**2))
    return (T - D) / T if T > 0 else math.nan
