"""Start values for theta: a moment estimate of each term's relative covariance.

lme4 starts every fit at theta = 1 on template diagonals and 0 elsewhere: random effects
with the residual's standard deviation, uncorrelated. A quasi-Newton method spends many
of its evaluations getting from there to the neighbourhood of the optimum: on the
simulated 1M-row design, 20 of its 32 evaluations, six of them steps to the boundary
with criteria up to a hundred times the optimum's.

This start comes from the cross-products alone (no pass over the rows; cost O(l k^3) for
l levels of a k-column term):

* ``r = y - X beta_ols``: the cross-products hold ``Z'r`` and ``r'r`` (their y0 is that
  residual);
* per level j of term i, ``b_j = C_j^+ Z_j'r``: the level's own least-squares
  coefficients on the term's columns, with ``C_j = Z_j'Z_j`` the diagonal block of Z'Z,
  and ``s2_i``, the residual variance left after them;
* ``Sigma_i = mean_j b_j b_j' - sigma^2 mean_j C_j^+``: the spread of the b_j less
  their sampling noise, relative to sigma^2, estimated as the smallest of
  ``r'r / (n - p)``, the ``s2_i`` (each still holds the terms not fitted) and the
  residual variance after all terms' level fits in turn (other terms' effects that do
  not average out within a level are left in the spread: a start errs upwards);
* its eigenvalues clipped to [0.01, 1e4] (relative standard deviations from 0.1 to 100),
  so that the start is inside the bounds and away from the boundary, and theta_i is its
  lower Cholesky factor in lme4's order, rounded to three significant digits.

It ignores how the terms overlap (each b_j carries the other terms' effects too), so it is
a start, not an estimate: the optimizer still finds the optimum, and the convergence
checks are the same. Measured on the benchmark workloads (docs/optimizer.md): the same
optima as from lme4's start, in 9% to 69% fewer evaluations. ``LinearMixedModel.fit``
redoes a fit from lme4's start when the one from here fails the gradient check.
"""

from __future__ import annotations

import numpy as np

from .crossprod import CrossProducts
from .terms import ReStructure, template_theta

__all__ = ["moment_start", "RELATIVE_VARIANCE_RANGE"]

# Eigenvalues of the start's relative covariances: relative sds from 0.1 to 100.
RELATIVE_VARIANCE_RANGE = (0.01, 1e4)


def moment_start(re: ReStructure, cp: CrossProducts) -> np.ndarray:
    """theta's start (see the module docstring); lme4's start where the data give no
    usable estimate (no residual left, or a non-finite result)."""
    p = cp.p
    rss = float(cp.XyXy[p, p])
    if not (np.isfinite(rss) and rss > 0 and cp.n > p):
        return re.theta0.copy()
    pinvs = [_diagonal_pinv(cp, i, term.nlevels, term.k) for i, term in enumerate(re.terms)]
    fits = [_level_fit(Cinv, cp.ZtXy[i][:, :, p]) for i, Cinv in enumerate(pinvs)]
    # sigma^2: the smallest residual variance seen: without level fits, after each term's,
    # and after all terms' fitted in turn
    seen = [rss / (cp.n - p), _sequential_residual_variance(re, cp, pinvs)]
    for (_, explained), Cinv in zip(fits, pinvs, strict=True):
        dof = cp.n - p - Cinv.shape[0] * Cinv.shape[1]
        seen.append((rss - explained) / dof if dof > 0 else None)
    sigma2 = min(s2 for s2 in seen if s2 is not None and s2 > 0)
    parts = []
    for i, ((b, _), Cinv) in enumerate(zip(fits, pinvs, strict=True)):
        relative = (b.T @ b / len(b)) / sigma2 - Cinv.mean(axis=0)
        parts.append(_cholesky_theta(relative) if np.all(np.isfinite(relative))
                     else re.term_theta(re.theta0, i))
    return _significant(np.concatenate(parts), _START_DIGITS)


def _level_fit(Cinv: np.ndarray, Ztr: np.ndarray) -> tuple[np.ndarray, float]:
    """Each level's least-squares coefficients on a residual r, from the pseudo-inverses
    ``Cinv`` of its blocks C_j and ``Z_j'r`` (levels x k), and the sum of squares they
    explain."""
    b = np.einsum("jab,jb->ja", Cinv, Ztr)
    return b, float(np.sum(b * Ztr))


def _diagonal_pinv(cp: CrossProducts, i: int, nlevels: int, k: int) -> np.ndarray:
    """Pseudo-inverses of term i's diagonal blocks C_j = Z_j'Z_j, (levels, k, k)."""
    block = next(b for b in cp.blocks if b.i == i and b.j == i)
    C = np.zeros((nlevels, k, k))
    C[block.rows] = block.C
    if k == 1:  # scalars: no batched SVD
        out = np.zeros_like(C)
        np.divide(1.0, C, out=out, where=C > 0)
        return out
    return np.linalg.pinv(C, hermitian=True)


def _sequential_residual_variance(
    re: ReStructure, cp: CrossProducts, pinvs: list[np.ndarray]
) -> float | None:
    """The residual variance after fitting each term's levels in turn to what the terms
    before it left (one sweep of backfitting, through the blocks of Z'Z), or None without
    degrees of freedom left. Without it a crossed design's sigma^2 holds the variances of
    all terms but one (Penicillin: 1.0 instead of 0.3)."""
    p = cp.p
    dof = cp.n - p - sum(term.nlevels * term.k for term in re.terms)
    if dof <= 0:
        return None
    rss, coefs = float(cp.XyXy[p, p]), []
    for i, term in enumerate(re.terms):
        Ztr = cp.ZtXy[i][:, :, p].copy()  # Z_i' r, less the fits of the terms before i
        for block in cp.blocks:
            if block.i == i and block.j < i:
                fitted = np.einsum("nab,nb->na", block.C, coefs[block.j][block.cols])
                for a in range(term.k):
                    Ztr[:, a] -= np.bincount(block.rows, fitted[:, a], term.nlevels)
        b, explained = _level_fit(pinvs[i], Ztr)
        rss -= explained
        coefs.append(b)
    return rss / dof


# The start is rounded to this many significant digits: its later digits carry no
# information, and without them the same data in another row order or partitioning (Dask),
# whose cross-products differ in the last bits, start at the same point, so that the
# optimizer takes the same path and stops at the same theta.
_START_DIGITS = 3


def _significant(x: np.ndarray, digits: int) -> np.ndarray:
    """x rounded to ``digits`` significant digits (zeros stay zero)."""
    scale = np.ones_like(x)
    nonzero = x != 0
    scale[nonzero] = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x[nonzero]))))
    return np.round(x * scale) / scale


def _cholesky_theta(relative: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of ``relative`` with its eigenvalues clipped to
    RELATIVE_VARIANCE_RANGE, as theta (column-major lower triangle, as lme4)."""
    w, V = np.linalg.eigh((relative + relative.T) / 2)
    w = np.clip(w, *RELATIVE_VARIANCE_RANGE)
    L = np.linalg.cholesky((V * w) @ V.T)
    return template_theta(L)
