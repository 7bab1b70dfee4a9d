"""The covariance statsmodels reports standard errors from, computed on lmm_sparse's engine.

statsmodels' ``MixedLMResults.bse`` comes from the inverse of minus the Hessian of its
log-likelihood with the scale profiled out, in the parameters (beta, psi): the fixed
effects, then the random-effects covariance and the variance components *relative to the
scale* (``cov_re / scale`` by rows of its lower triangle, ``vcomp / scale``). With
``V = I + Z Psi Z'`` (lme4's ``Lambda Lambda'`` is Psi, level by level) and
``fac = n - p`` (REML) or ``n`` (ML):

    L(beta, psi) = -log|V| / 2 - fac log(r'V^{-1} r) / 2 [- log|X'V^{-1}X| / 2]   (+ const)

``r = y - X beta``. Every piece is one PLS evaluation at ``theta = chol(Psi)``:
``log|V| = ldL2``, ``X'V^{-1}X = R_X'R_X``, ``r'V^{-1}r = pwrss + |R_X (beta - beta_hat)|^2``.
The beta block is exact, ``-fac R_X'R_X / pwrss``; the cross block is ``fac / pwrss``
times the derivative of ``X'V^{-1}(y - X beta) = R_X'R_X (beta_hat(psi) - beta)``; these
and the psi block are numerical derivatives (Richardson extrapolation,
:mod:`lmm_sparse.numderiv`) over the few covariance parameters only.

A covariance block on the boundary (a variance at zero, a singular ``cov_re``) has no
two-sided neighbourhood in which ``chol(Psi)`` exists: its parameters are left out of the
Hessian and get NaN (statsmodels reports numbers there from a pseudo-inverse).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..model import LinearMixedModel
from ..numderiv import richardson_derivatives
from ..terms import ReStructure, template_theta

__all__ = ["CovBlock", "psi_of_theta", "statsmodels_pcov"]

# Steps, as fractions of each parameter's scale (below). The criterion is a sum over all
# rows (|L| in the thousands) computed to ~1e-13 relative, so smaller steps lose digits to
# rounding: against statsmodels' analytic Hessian on dietox (random slopes) and Pastes,
# steps of 1e-3 |psi| gave standard errors to 5e-5, 1e-2 to 1e-7.
_STEP = 1e-2
# A block is on the boundary when its smallest eigenvalue (a relative variance) is below
# this: lme4's singularity rule, a relative sd (theta) below 1e-4.
_BOUNDARY = 1e-8


@dataclass(frozen=True)
class CovBlock:
    """One covariance parameter block in statsmodels' order: one random-effects term.

    Fields
    ------
    term: the term's index in the engine's ReStructure.
    k: its size (the re block: k x k, lower triangle row by row; a vc: 1).
    theta: its slice of lme4's theta.
    """

    term: int
    k: int
    theta: slice

    @property
    def size(self) -> int:
        return self.k * (self.k + 1) // 2

    def matrix(self, values: np.ndarray) -> np.ndarray:
        """Psi (k x k) from its lower triangle row by row."""
        cov = np.zeros((self.k, self.k))
        cov[np.tril_indices(self.k)] = values
        return cov + np.tril(cov, -1).T


def psi_of_theta(re: ReStructure, blocks: list[CovBlock], theta: np.ndarray) -> np.ndarray:
    """statsmodels' relative covariance parameters (T T', lower triangles) from theta."""
    parts = []
    for block in blocks:
        T = re.template(theta, block.term)
        parts.append((T @ T.T)[np.tril_indices(block.k)])
    return np.concatenate(parts) if parts else np.zeros(0)


def _scales(block: CovBlock, values: np.ndarray) -> np.ndarray | None:
    """Each parameter's step scale, or None for a block on the boundary: the variance for a
    diagonal entry, sqrt(var_a var_b) for a covariance, capped so that the first steps
    (two at a time for mixed derivatives) stay below a third of Psi's smallest eigenvalue,
    which keeps Psi positive definite."""
    cov = block.matrix(values)
    smallest = float(np.linalg.eigvalsh(cov)[0])
    if smallest <= _BOUNDARY:
        return None
    var = np.diag(cov)
    rows, cols = np.tril_indices(block.k)
    return np.minimum(np.sqrt(var[rows] * var[cols]), smallest / (3 * _STEP))


def statsmodels_pcov(
    engine: LinearMixedModel, blocks: list[CovBlock], theta: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Minus the inverse Hessian of statsmodels' profiled log-likelihood in (beta, psi) at
    the fit (theta, beta); rows and columns of boundary blocks are NaN."""
    pls = engine.dense_pls() or engine.workspace
    n, p = engine.cp.n, engine.cp.p
    fac = n - p if engine.reml else n
    psi = psi_of_theta(engine.re, blocks, theta)
    free, scale, starts = [], [], np.cumsum([0] + [b.size for b in blocks])
    free_blocks = []
    for block, start in zip(blocks, starts, strict=False):
        s = _scales(block, psi[start : start + block.size])
        if s is not None:
            free.extend(range(start, start + block.size))
            scale.extend(s)
            free_blocks.append((block, start))
    free, scale = np.array(free, dtype=int), np.array(scale)

    def theta_at(z: np.ndarray) -> np.ndarray | None:
        x = psi.copy()
        x[free] += scale * z
        out = theta.copy()
        for block, start in free_blocks:
            try:
                T = np.linalg.cholesky(block.matrix(x[start : start + block.size]))
            except np.linalg.LinAlgError:
                return None
            out[block.theta] = template_theta(T)
        return out

    def parts(z: np.ndarray) -> np.ndarray:
        th = theta_at(z)
        if th is None:
            return np.full(1 + p, np.nan)
        ev = pls.evaluate(th)
        shift = ev.RX @ (beta - ev.beta)
        value = -0.5 * ev.ldL2 - 0.5 * fac * math.log(ev.pwrss + shift @ shift)
        if engine.reml:
            value -= 0.5 * ev.ldRX2
        return np.concatenate([[value], ev.RX.T @ ev.RX @ (ev.beta - beta)])

    ev0 = pls.evaluate(theta)
    m = len(free)
    hess = np.empty((p + m, p + m))
    hess[:p, :p] = -fac * (ev0.RX.T @ ev0.RX) / ev0.pwrss
    if m:
        # z = 0 gives every coordinate the same first step, _STEP, in its own scale
        d = richardson_derivatives(parts, np.zeros(m), relative=0.0, floor=_STEP)
        hess[p:, p:] = d.hessian[:, :, 0] / np.outer(scale, scale)
        hess[p:, :p] = fac / ev0.pwrss * d.gradient[:, 1:] / scale[:, None]
        hess[:p, p:] = hess[p:, :p].T
    pcov = np.full((p + len(psi), p + len(psi)), np.nan)
    keep = np.concatenate([np.arange(p), p + free])
    try:
        pcov[np.ix_(keep, keep)] = np.linalg.inv(-hess)
    except np.linalg.LinAlgError:
        pass  # a Hessian that cannot be inverted: every standard error unknown
    return pcov
