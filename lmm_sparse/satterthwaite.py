"""Satterthwaite's denominator degrees of freedom for t and F tests of the fixed effects.

For a contrast ``l' beta`` with variance ``v(tau) = l' V(tau) l``, where ``V = sigma^2
(R_X' R_X)^{-1}`` is vcov(beta) and ``tau = (theta, sigma)`` are the variance parameters
(Satterthwaite 1946; Kuznetsova, Brockhoff & Christensen 2017, JSS 82(13), eq. 3-4):

    df = 2 v^2 / (g' A g),   g_k = l' (dV/dtau_k) l,   A = 2 H^{-1},

with H the Hessian of the deviance (ML) or REML criterion as a function of tau, beta
profiled out but sigma free (lmerTest's ``devfun_vp``). A is the asymptotic covariance of
tau. H is inverted on its positive eigenvalues only (a generalized inverse), as lmerTest
does, so that a parameter on its boundary does not blow up.

The deviance with sigma free separates into two functions of theta,

    d(theta, sigma) = g1(theta) + g2(theta) / sigma^2 + n' log(2 pi sigma^2),
    g1 = ldL2 (+ ldRX2 for REML),  g2 = pwrss,  n' = n (ML) or n - p (REML),

so only the theta-derivatives of g1 and g2 (and of (R_X'R_X)^{-1}) are taken numerically,
all from the same evaluations; the sigma-derivatives are analytic. With a kernel that
gives the exact gradients of g1 and g2 (:meth:`PLSWorkspace.criterion_parts`), their
Hessians are differences of those gradients: ``8 m`` evaluations with gradient for
m = len(theta); otherwise differences of values, about ``8 m^2`` evaluations. None of
them touches the n rows.

For an F test of ``L beta = 0`` with several rows, L is rotated to the eigenvectors of
``L V L'``; each rotated row gets its own df nu_i, and the F statistic's df is
``2 E / (E - q)`` with ``E = sum nu_i / (nu_i - 2)`` (Fai & Cornelius 1996).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .crossprod import inverse_gram
from .errors import ConvergenceWarning
from .numderiv import richardson_derivatives

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["VarparCovariance", "varpar_covariance", "satterthwaite_df", "satterthwaite_ftest",
           "FTest"]

_EIGEN_TOL = 1e-8  # lmerTest's tolerance on the eigenvalues of H
_EPS = math.sqrt(np.finfo(float).eps)  # rank tolerance of L V L' (lmerTest's contestMD)


@dataclass(frozen=True)
class VarparCovariance:
    """What Satterthwaite's df need, computed once per fit.

    Fields
    ------
    varpar: tau = (theta, sigma) at the optimum.
    hessian: H, the Hessian of the criterion in tau.
    cov: A = 2 H^+, the asymptotic covariance of tau.
    jacobian: dV/dtau_k for each k, shape (m + 1, p, p).
    vcov: V = vcov(beta) at the optimum.
    """

    varpar: np.ndarray
    hessian: np.ndarray
    cov: np.ndarray
    jacobian: np.ndarray
    vcov: np.ndarray


@dataclass(frozen=True)
class FTest:
    """One F test of ``L beta = 0``: statistic, its degrees of freedom and p-value.

    ``scale`` is the Kenward-Roger scaling of F (1 otherwise); ``unscaled`` the Wald F
    before it (lmerTest's Mean Sq is ``unscaled * sigma^2``).
    """

    F: float
    numdf: int
    dendf: float
    p_value: float
    unscaled: float


_SECOND_DIFFERENCE_FLOOR = 1e-3


def _parts_by_values(result: LmerResult, theta: np.ndarray):
    """(g2, dg2, H1, H2, dU) from second differences of g1, g2 and U's values."""
    workspace = result.model.workspace

    def parts(th: np.ndarray) -> np.ndarray:
        ev = workspace.evaluate(th)
        g1 = ev.ldL2 + (ev.ldRX2 if result.reml else 0.0)
        return np.concatenate([[g1, ev.pwrss], inverse_gram(ev.RX).ravel()])

    # Second differences lose eps |f| / h^2 to rounding: with the default floor of 1e-4
    # (1.25e-5 after four halvings) pwrss's second derivative in sleepstudy's small
    # correlation entry (0.015) was off by 2e-5 relative on one machine's BLAS; a floor of
    # 1e-3 brought it to 2e-7 against the route through exact gradients.
    d = richardson_derivatives(parts, theta, floor=_SECOND_DIFFERENCE_FLOOR)
    return (d.value[1], d.gradient[:, 1], d.hessian[:, :, 0], d.hessian[:, :, 1],
            d.value[2:], d.gradient[:, 2:])


def _parts_by_gradients(result: LmerResult, theta: np.ndarray):
    """(g2, dg2, H1, H2, dU) from first differences of the exact gradients of g1, g2."""
    workspace, m = result.model.workspace, theta.size

    def parts(th: np.ndarray) -> np.ndarray:
        ev, dg1, dg2 = workspace.criterion_parts(th, result.reml)
        return np.concatenate([[ev.pwrss], dg1, dg2, inverse_gram(ev.RX).ravel()])

    d = richardson_derivatives(parts, theta, second=False)
    H1, H2 = d.gradient[:, 1 : 1 + m], d.gradient[:, 1 + m : 1 + 2 * m]
    return (d.value[0], d.value[1 + m : 1 + 2 * m], (H1 + H1.T) / 2, (H2 + H2.T) / 2,
            d.value[1 + 2 * m :], d.gradient[:, 1 + 2 * m :])


def varpar_covariance(result: LmerResult) -> VarparCovariance:
    """H, A = 2 H^+ and dV/dtau at the fit (see the module docstring)."""
    model = result.model
    n, p = model.cp.n, model.cp.p
    nprime = n - p if result.reml else n
    theta, sigma = np.asarray(result.theta, float), float(result.sigma)
    m = theta.size
    by = _parts_by_gradients if model.workspace.has_gradient else _parts_by_values
    g2, dg2, H1, H2, U, dU = by(result, theta)
    model.workspace.evaluate(theta)  # leave the workspace at the optimum
    s2 = sigma**2
    H = np.empty((m + 1, m + 1))
    H[:m, :m] = H1 + H2 / s2
    H[:m, m] = H[m, :m] = -2.0 * dg2 / sigma**3
    H[m, m] = 6.0 * g2 / sigma**4 - 2.0 * nprime / s2
    H = (H + H.T) / 2
    cov = 2.0 * _positive_inverse(H)
    U = U.reshape(p, p)
    jac = np.empty((m + 1, p, p))
    jac[:m] = s2 * dU.reshape(m, p, p)
    jac[m] = 2.0 * sigma * U
    return VarparCovariance(np.append(theta, sigma), H, cov, jac, s2 * U)


def _positive_inverse(H: np.ndarray) -> np.ndarray:
    """Inverse of H on its positive eigenvalues, warning as lmerTest does otherwise."""
    values, vectors = np.linalg.eigh(H)
    negative = values < -_EIGEN_TOL
    zero = np.abs(values) <= _EIGEN_TOL
    if negative.any():
        warnings.warn(
            f"the Hessian of the criterion in (theta, sigma) has {int(negative.sum())} "
            f"negative eigenvalue(s) ({', '.join(f'{v:.1e}' for v in values[negative])}): "
            "the fit may not have converged, Satterthwaite df are unreliable",
            ConvergenceWarning, stacklevel=4,
        )
    if zero.any():
        warnings.warn(
            f"the Hessian of the criterion in (theta, sigma) has {int(zero.sum())} "
            "eigenvalue(s) close to zero: a parameter is not identified or on its boundary",
            ConvergenceWarning, stacklevel=4,
        )
    keep = values > _EIGEN_TOL
    return (vectors[:, keep] / values[keep]) @ vectors[:, keep].T


def _quad(c: np.ndarray, M: np.ndarray) -> float:
    return float(c @ M @ c)


def satterthwaite_df(vc: VarparCovariance, c: np.ndarray) -> tuple[float, float]:
    """(variance of c' beta, its Satterthwaite df) for one contrast row c."""
    variance = _quad(c, vc.vcov)
    g = np.array([_quad(c, J) for J in vc.jacobian])
    denom = _quad(g, vc.cov)
    return variance, (2.0 * variance**2 / denom if denom > 0 else math.inf)


def _combined_df(nu: np.ndarray) -> float:
    """df of an F statistic that averages q t^2 statistics with df nu (lmerTest's rule)."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < 1e-8):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)


def satterthwaite_ftest(vc: VarparCovariance, L: np.ndarray, beta: np.ndarray) -> FTest:
    """F test of ``L beta = 0`` with Satterthwaite's denominator df."""
    from scipy import stats

    L = np.atleast_2d(np.asarray(L, float))
    if L.shape[0] == 1:
        return _one_row(vc, L[0], beta)
    values, vectors = np.linalg.eigh(L @ vc.vcov @ L.T)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    q = int(np.sum(values > max(_EPS * values[0], 0.0)))
    if q == 0:
        return FTest(math.nan, 0, math.nan, math.nan, math.nan)
    PL = vectors[:, :q].T @ L
    if q == 1:
        return _one_row(vc, PL[0], beta)
    F = float(np.sum((PL @ beta) ** 2 / values[:q]) / q)
    nu = np.array([satterthwaite_df(vc, row)[1] for row in PL])
    dendf = _combined_df(nu)
    return FTest(F, q, dendf, float(stats.f.sf(F, q, dendf)), F)


def _one_row(vc: VarparCovariance, c: np.ndarray, beta: np.ndarray) -> FTest:
    from scipy import stats

    variance, df = satterthwaite_df(vc, c)
    F = float((c @ beta) ** 2 / variance)
    return FTest(F, 1, df, float(stats.f.sf(F, 1, df)), F)
