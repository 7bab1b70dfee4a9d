"""The Hessian statsmodels reports standard errors from, computed on lmm_sparse's engine.

statsmodels' ``MixedLMResults.bse`` comes from the inverse of minus the Hessian of its
log-likelihood with the scale profiled out, in the parameters (beta, Psi, vcomp): the fixed
effects, the random-effects covariance and the variance components *relative to the scale*
(``cov_re / scale``, ``vcomp / scale``). With ``V = I + Z Psi Z'`` (lme4's
``Lambda Lambda' = Psi``, per level) and ``fac = n - p`` (REML) or ``n`` (ML):

    L(beta, Psi) = -log|V| / 2 - fac log(r'V^{-1} r) / 2 [- log|X'V^{-1}X| / 2]   (+ const)

``r = y - X beta``. Every piece is one PLS evaluation at ``theta = chol(Psi)``:
``log|V| = ldL2``, ``X'V^{-1}X = R_X'R_X``, ``r'V^{-1}r = pwrss + |R_X (beta - beta_hat)|^2``.
The beta block is exact, ``-fac R_X'R_X / pwrss``; the cross block is ``fac / pwrss``
times the derivative of ``X'V^{-1}(y - X beta) = R_X'R_X (beta_hat(Psi) - beta)``; both
numerical derivatives (Richardson extrapolation, :mod:`lmm_sparse.numderiv`) run over the
few covariance parameters only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..model import LinearMixedModel
from ..numderiv import richardson_derivatives

__all__ = ["loglike_hessian"]

# psi's entries are variances relative to sigma^2. The criterion is a sum over all rows
# (|L| in the thousands) computed to ~1e-13 relative, so steps of 1e-3 |psi| lose digits to
# rounding: against statsmodels' analytic Hessian on dietox (random slopes) and Pastes,
# 1e-3 gave standard errors to 5e-5, 1e-2 (with the floor below) to 1e-7.
_RELATIVE = 1e-2


def _floor(psi: np.ndarray) -> float:
    """Smallest first step: 1e-3, but never a sizeable part of a small positive variance
    (a step past zero leaves the parameter space)."""
    positive = np.abs(psi[psi != 0])
    return float(min(1e-3, 0.1 * positive.min())) if positive.size else 1e-3


def loglike_hessian(
    engine: LinearMixedModel,
    theta_of_psi: Callable[[np.ndarray], np.ndarray | None],
    psi: np.ndarray,
    beta: np.ndarray,
) -> np.ndarray:
    """Hessian of statsmodels' profiled log-likelihood in (beta, psi) at (beta, psi).

    ``theta_of_psi`` maps the relative covariance parameters to lme4's theta (None where
    they are not a covariance); ``beta`` is the estimate at ``psi``.
    """
    pls = engine.dense_pls() or engine.workspace
    n, p = engine.cp.n, engine.cp.p
    fac = n - p if engine.reml else n
    r = len(psi)

    def parts(x: np.ndarray) -> np.ndarray:
        theta = theta_of_psi(x)
        if theta is None:
            return np.full(1 + p, np.nan)
        ev = pls.evaluate(theta)
        gram = ev.RX.T @ ev.RX
        shift = ev.RX @ (beta - ev.beta)
        qf = ev.pwrss + shift @ shift
        value = -0.5 * ev.ldL2 - 0.5 * fac * math.log(qf)
        if engine.reml:
            value -= 0.5 * ev.ldRX2
        return np.concatenate([[value], gram @ (ev.beta - beta)])

    theta0 = theta_of_psi(psi)
    ev0 = pls.evaluate(theta0)
    hess = np.empty((p + r, p + r))
    hess[:p, :p] = -fac * (ev0.RX.T @ ev0.RX) / ev0.pwrss
    if r:
        d = richardson_derivatives(parts, psi, relative=_RELATIVE, floor=_floor(psi))
        hess[p:, p:] = d.hessian[:, :, 0]
        hess[p:, :p] = fac / ev0.pwrss * d.gradient[:, 1:]
        hess[:p, p:] = hess[p:, :p].T
    return hess
