"""C-vine partial correlations: a box of numbers in [-1, 1] that maps onto every
correlation matrix.

Holding one correlation of a term fixed must leave a simple domain for the others: boxing
each correlation in [-1, 1] separately (lme4's way) lets an optimizer step into matrices
that are not positive semidefinite. The partial correlations of a C-vine do not: every
point of the box is a valid correlation matrix and every correlation matrix is one point
(Lewandowski, Kurowicka & Joe 2009, J. Multivariate Analysis 100), and the first partial
is a plain correlation, the one the profile holds. Used by the correlation problem of
:mod:`lmm_sparse.profile.problems`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psd_cholesky", "vine_cholesky", "vine_partials"]


def psd_cholesky(S: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """Lower-triangular L with L L' = S for a positive semidefinite S.

    A zero pivot (a variable that is a combination of the earlier ones) leaves its column
    zero instead of failing as LAPACK's Cholesky does.
    """
    k = S.shape[0]
    L = np.zeros_like(S, dtype=float)
    for j in range(k):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        if d <= tol * max(1.0, abs(S[j, j])):
            continue
        L[j, j] = math.sqrt(d)
        L[j + 1 :, j] = (S[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


def vine_cholesky(P: np.ndarray) -> np.ndarray:
    """Cholesky factor of the correlation matrix with C-vine partial correlations P.

    ``P[i, j]`` (i < j) is the correlation of variables i and j given 0, ..., i - 1; in
    particular ``P[0, j]`` is the plain correlation of 0 and j. Every P in [-1, 1] gives a
    valid (positive semidefinite) correlation matrix, and every one has such a P
    (Lewandowski, Kurowicka & Joe 2009): holding ``P[0, 1]`` fixes one correlation and
    leaves a box for the others.
    """
    k = P.shape[0]
    L = np.zeros((k, k))
    L[0, 0] = 1.0
    for j in range(1, k):
        rest = 1.0
        for i in range(j):
            L[j, i] = P[i, j] * math.sqrt(max(rest, 0.0))
            rest -= L[j, i] ** 2
        L[j, j] = math.sqrt(max(rest, 0.0))
    return L


def vine_partials(C: np.ndarray) -> np.ndarray:
    """The C-vine partial correlations of a correlation matrix (inverse of vine_cholesky)."""
    k = C.shape[0]
    L = psd_cholesky(C)
    P = np.zeros((k, k))
    for j in range(1, k):
        rest = 1.0
        for i in range(j):
            P[i, j] = L[j, i] / math.sqrt(rest) if rest > 1e-12 else 0.0
            rest -= L[j, i] ** 2
    return np.clip(P, -1.0, 1.0)
