"""The minimization over the nuisance parameters with one parameter held: one problem per
kind of parameter, and the L-BFGS-B minimization that solves it.

Every evaluation is one ``PLSWorkspace.evaluate`` through :class:`Engine`, no n-sized
work; beta is always profiled out exactly by the PLS solution. What each problem
minimizes (docs/profile.md, section 3):

* ``sigma`` held at s: minimize ``ldL2 + pwrss / s^2 + n log(2 pi s^2)`` over theta;
* the ``sd`` of coefficient ``a`` of term ``i`` held at ``s > 0``: the same deviance
  with sigma free, over theta whose row ``a`` of ``T_i`` is ``(s / sigma) w / |w|``
  (``s = sigma |row a|`` solved for the row); at ``s = 0`` the row is zero and sigma is
  profiled out analytically (the ML criterion);
* a ``cor`` of term ``i`` held: sigma is profiled out analytically (a correlation does not
  involve it); the term is written through its relative standard deviations and the
  partial correlations of a C-vine whose first pair is the profiled one
  (:mod:`lmm_sparse.profile.vine`), so that every point of the box is a valid covariance
  with the profiled entry held;
* fixed effect ``j`` held at ``b``: minimize over theta the ML criterion of the reduced
  problem (column ``j`` moved into the offset), whose penalized residual sum of squares is,
  exactly, ``pwrss + (b - beta_hat_j)^2 / [(R_X' R_X)^(-1)]_jj`` at every theta.

:func:`minimize_nuisance` uses L-BFGS-B, with the exact gradient when the kernel provides
the selected inverse (:mod:`lmm_sparse.gradient`), else central differences, and
restarts off a collapsed template column as the fit does.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import scipy.optimize

from ..crossprod import inverse_gram
from ..optimize import restart_point
from ..parameters import Parameter, sdcor_from_theta
from ..pls import PLSEval
from .engine import Engine, fold_theta, theta_positions
from .setup import ProfileSetup
from .vine import psd_cholesky, vine_cholesky, vine_partials

__all__ = ["Problem", "make_problem", "minimize_nuisance"]

# L-BFGS-B settings of the nuisance minimizations: the fit's own (optimize._options).
_LBFGSB_OPTIONS = {"ftol": 1e-12, "gtol": 1e-6, "maxls": 20, "maxcor": 30, "maxfun": 20_000}
_INFEASIBLE = 1e300  # what the optimizer sees at a point where the deviance is not finite


class Problem(Protocol):
    """The minimization over the nuisance parameters x with one parameter held at v."""

    exact: bool  # deviance(..., grad=True) gives the exact gradient (else central differences)

    def bounds(self, value: float) -> tuple[np.ndarray, np.ndarray]:
        """Box of x for L-BFGS-B."""

    def start(self) -> np.ndarray:
        """x at the ML estimate."""

    def feasible(self, x: np.ndarray, value: float) -> np.ndarray:
        """x made a valid start (e.g. a direction normalized)."""

    def restart(self, x: np.ndarray, value: float) -> np.ndarray | None:
        """A start off a collapsed template column of x, or None if there is none."""

    def canonical(self, x: np.ndarray, value: float) -> np.ndarray:
        """x with theta folded onto its bounds (see :func:`fold_theta`)."""

    def deviance(self, x: np.ndarray, value: float,
                 grad: bool) -> tuple[float, np.ndarray | None]:
        """The ML deviance at (x, value) and, if ``grad``, its gradient in x."""

    def point(self, x: np.ndarray, value: float) -> np.ndarray:
        """Every parameter (sds/cors, sigma, fixed effects) at (x, value)."""


class _ThetaProblem:
    """Base of the problems whose nuisance parameter is theta itself."""

    def __init__(self, engine: Engine, setup: ProfileSetup, par: Parameter) -> None:
        self.engine, self.setup, self.par = engine, setup, par
        self.exact = engine.exact
        n = engine.re.ntheta
        self.lower, self.upper = np.full(n, -np.inf), np.full(n, np.inf)  # see fold_theta

    def bounds(self, value: float) -> tuple[np.ndarray, np.ndarray]:
        return self.lower, self.upper

    def canonical(self, x: np.ndarray, value: float) -> np.ndarray:
        return fold_theta(self.engine.re, x)

    def start(self) -> np.ndarray:
        return self.setup.theta.copy()

    def feasible(self, x: np.ndarray, value: float) -> np.ndarray:
        return x

    def restart(self, x: np.ndarray, value: float) -> np.ndarray | None:
        """A start inside the boundary if x has collapsed template columns, else None."""
        re = self.engine.re
        again = restart_point(x, re.lower, re.template_columns())
        return None if np.array_equal(again, x) else again

    def _full(self, theta: np.ndarray, sigma: float, beta: np.ndarray) -> np.ndarray:
        return np.concatenate([sdcor_from_theta(self.engine.re, theta, sigma), beta])


class _SigmaProblem(_ThetaProblem):
    """sigma held at v: minimize ldL2 + pwrss / v^2 + n log(2 pi v^2) over theta."""

    def deviance(self, x, value, grad):
        ev = self.engine.evaluate(x)
        if not (value > 0 and np.isfinite(ev.pwrss) and ev.pwrss > 0):
            return math.inf, None
        f = self.engine.fixed_scale(ev, ev.pwrss, value**2)
        g = self.engine.fixed_scale_gradient(ev, ev.beta, 1.0 / value**2) if grad else None
        return f, g

    def point(self, x, value):
        return self._full(x, value, self.engine.evaluate(x).beta)


class _BetaProblem(_ThetaProblem):
    """Fixed effect j held at b: column j moves into the offset.

    At each theta the reduced problem's pwrss is, exactly,
    ``P_j = pwrss + (b - beta_hat_j)^2 / S_jj`` with ``S = (R_X' R_X)^{-1}`` (the
    quadratic ``|R_X (beta - beta_hat)|^2`` minimized over the other betas), attained at
    ``beta* = beta_hat + S[:, j] (b - beta_hat_j) / S_jj``; sigma is profiled out:
    ``f = ldL2 + n (1 + log(2 pi P_j / n))``.
    """

    def _constrained(self, ev: PLSEval, value: float) -> tuple[float, np.ndarray]:
        j = self.par.column
        s = inverse_gram(ev.RX)[:, j]  # column j of S = R_X^{-1} R_X^{-T}
        shift = (value - ev.beta[j]) / s[j]
        return ev.pwrss + shift * (value - ev.beta[j]), ev.beta + s * shift

    def deviance(self, x, value, grad):
        ev = self.engine.evaluate(x)
        if not (np.isfinite(ev.pwrss) and ev.pwrss > 0):
            return math.inf, None
        pwrss, beta = self._constrained(ev, value)
        n = self.engine.n
        f = self.engine.fixed_scale(ev, pwrss, pwrss / n)
        g = self.engine.fixed_scale_gradient(ev, beta, n / pwrss) if grad else None
        return f, g

    def point(self, x, value):
        ev = self.engine.evaluate(x)
        pwrss, beta = self._constrained(ev, value)
        beta[self.par.column] = value
        return self._full(x, math.sqrt(pwrss / self.engine.n), beta)


class _SdProblem:
    """The sd of coefficient a of term i held at s.

    In theta, ``s = sigma |row a of T_i|``. Solving the constraint for sigma puts a
    barrier where the row vanishes, on theta's bound, where a bounded optimizer gives up;
    a correlation/partial-correlation form is singular where a correlation is +-1, which
    is where singular fits live. So: every entry of theta but row a is free as in the
    fit, sigma is free (as log sigma), and row a is ``(s / sigma) w / |w|`` with w its
    direction (for a = 0 the row is the single entry ``s / sigma``). Smooth wherever
    ``w != 0``; the scale of w is a flat direction, reset to 1 before each minimization.

    The deviance is the fixed-sigma one, ``ldL2 + pwrss / sigma^2 + n log(2 pi sigma^2)``.
    At s = 0 the row is zero and sigma is profiled out (the ML criterion); log sigma and
    w stay in x without effect.
    """

    def __init__(self, engine: Engine, setup: ProfileSetup, par: Parameter) -> None:
        self.engine, self.setup, self.par = engine, setup, par
        self.exact = engine.exact
        re = engine.re
        pos = theta_positions(re, par.term)[par.row]
        self.row = pos[pos >= 0]  # theta indices of T_i[a, 0..a], the diagonal last
        self.rest = np.setdiff1d(np.arange(re.ntheta), self.row)
        nr, nw = len(self.rest), len(self.row) if par.row > 0 else 0
        self.nw = nw
        # unbounded: theta's bounds only make the template unique (see fold_theta)
        self.lower, self.upper = np.full(nr + 1 + nw, -np.inf), np.full(nr + 1 + nw, np.inf)

    def bounds(self, value):
        return self.lower, self.upper

    def _direction(self, x: np.ndarray) -> np.ndarray:
        if not self.nw:
            return np.ones(1)
        w = x[len(self.rest) + 1 :]
        norm = float(np.linalg.norm(w))
        return w / norm if norm > 0 else np.eye(len(w))[-1]

    def feasible(self, x, value):
        if self.nw:
            x = x.copy()
            x[len(self.rest) + 1 :] = self._direction(x)
        return x

    def _sigma(self, x: np.ndarray) -> float:
        return math.exp(float(x[len(self.rest)]))

    def theta(self, x: np.ndarray, value: float) -> np.ndarray:
        theta = np.empty(self.engine.re.ntheta)
        theta[self.rest] = x[: len(self.rest)]
        theta[self.row] = value / self._sigma(x) * self._direction(x)
        return theta

    def from_theta(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        w = theta[self.row] if self.nw else np.zeros(0)
        return np.concatenate([theta[self.rest], [math.log(sigma)], w])

    def start(self) -> np.ndarray:
        sigma = float(self.setup.estimates[self.engine.re.ntheta])
        return self.feasible(self.from_theta(self.setup.theta, sigma), 0.0)

    def canonical(self, x, value):
        theta = fold_theta(self.engine.re, self.theta(x, value))
        out = self.from_theta(theta, self._sigma(x))
        if value == 0.0 and self.nw:  # the row is zero: keep the direction
            out[len(self.rest) + 1 :] = x[len(self.rest) + 1 :]
        return out

    def restart(self, x, value):
        """As the theta problems' restart, on the theta that x gives; row a is set by s,
        sigma and w and is left as it is."""
        re = self.engine.re
        theta = self.theta(x, value)
        again = restart_point(theta, re.lower, re.template_columns())
        again[self.row] = theta[self.row]
        if np.array_equal(again, theta):
            return None
        return np.concatenate([again[self.rest], x[len(self.rest) :]])

    def deviance(self, x, value, grad):
        theta = self.theta(x, value)
        nr = len(self.rest)
        if value == 0.0:  # sigma profiled out: the ML criterion
            f, g = self.engine.ml(theta, grad)
            if g is None or not np.isfinite(f):
                return f, None
            return f, np.concatenate([g[self.rest], np.zeros(1 + self.nw)])
        sigma = self._sigma(x)
        ev = self.engine.evaluate(theta)
        if not (np.isfinite(ev.pwrss) and ev.pwrss > 0):
            return math.inf, None
        f = self.engine.fixed_scale(ev, ev.pwrss, sigma**2)
        if not grad:
            return f, None
        g = self.engine.fixed_scale_gradient(ev, ev.beta, 1.0 / sigma**2)
        g_row, row = g[self.row], theta[self.row]
        # log sigma acts directly and through row a = (s / sigma) u: d row / d log sigma = -row
        g_sigma = 2.0 * self.engine.n - 2.0 * ev.pwrss / sigma**2 - float(g_row @ row)
        out = np.concatenate([g[self.rest], [g_sigma], np.zeros(self.nw)])
        if self.nw:  # d (w / |w|) / dw = (I - u u') / |w|
            w = x[nr + 1 :]
            u = self._direction(x)
            scale = value / sigma / float(np.linalg.norm(w))
            out[nr + 1 :] = scale * (g_row - u * float(u @ g_row))
        return f, out

    def point(self, x, value):
        theta = self.theta(x, value)
        ev = self.engine.evaluate(theta)
        sigma = self._sigma(x) if value > 0 else math.sqrt(ev.pwrss / self.engine.n)
        full = np.concatenate([sdcor_from_theta(self.engine.re, theta, sigma), ev.beta])
        full[self.par.index] = value
        return full


class _CorProblem:
    """The correlation of coefficients a > b of term i held at rho.

    A correlation does not involve sigma, so sigma (and beta) are profiled out: the
    criterion is the ML one. The term is in sd/correlation form: ``T_i = D L`` with
    ``D = diag(d)`` its relative standard deviations (sd / sigma, >= 0) and L the
    (semidefinite) Cholesky factor of its correlation matrix, written through the partial
    correlations of a C-vine whose first two variables are b and a, so that the first
    partial correlation is the profiled one and every point of the box ``d >= 0,
    -1 <= other partials <= 1`` is a valid covariance (:func:`vine_cholesky`). Nuisance:
    the other terms' theta, d, the other partials (none for a 2 x 2 term, where the
    template ``[[d_1, 0], [d_2 rho, d_2 sqrt(1 - rho^2)]]`` is smooth in d).
    """

    def __init__(self, engine: Engine, setup: ProfileSetup, par: Parameter) -> None:
        self.engine, self.setup, self.par = engine, setup, par
        self.exact = engine.exact
        re = engine.re
        self.k = k = re.terms[par.term].k
        pos = theta_positions(re, par.term)
        self.rows, self.cols = np.nonzero(pos >= 0)
        self.term_theta = pos[self.rows, self.cols]
        self.other = np.setdiff1d(np.arange(re.ntheta), self.term_theta)
        self.order = np.array([par.col, par.row]
                              + [c for c in range(k) if c not in (par.col, par.row)])
        upper = np.triu_indices(k, 1)
        self.free = tuple((i, j) for i, j in zip(*upper, strict=True) if (i, j) != (0, 1))
        no, nf = len(self.other), len(self.free)
        # the other terms' theta unbounded (see fold_theta); d >= 0: a row's sign is not free
        self.lower = np.concatenate([np.full(no, -np.inf), np.zeros(k), -np.ones(nf)])
        self.upper = np.concatenate([np.full(no + k, np.inf), np.ones(nf)])

    def bounds(self, value):
        return self.lower, self.upper

    def feasible(self, x, value):
        return x

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        no, k = len(self.other), self.k
        return x[:no], x[no : no + k], x[no + k :]

    def _factor(self, value: float, partials: np.ndarray) -> np.ndarray:
        """Cholesky factor of the correlation matrix, in the coefficients' order."""
        P = np.zeros((self.k, self.k))
        P[0, 1] = value
        for (i, j), pij in zip(self.free, partials, strict=True):
            P[i, j] = pij
        Lv = vine_cholesky(P)
        C = np.empty((self.k, self.k))
        C[np.ix_(self.order, self.order)] = Lv @ Lv.T
        return psd_cholesky(C)

    def theta(self, x: np.ndarray, value: float) -> np.ndarray:
        other, d, partials = self._split(x)
        T = d[:, None] * self._factor(value, partials)
        theta = np.empty(self.engine.re.ntheta)
        theta[self.other] = other
        theta[self.term_theta] = T[self.rows, self.cols]
        return theta

    def from_theta(self, theta: np.ndarray) -> np.ndarray:
        """The nuisance parameters of a theta; its own value of the profiled correlation
        is dropped. A zero sd gets correlations 0."""
        T = self.engine.re.template(theta, self.par.term)
        S = T @ T.T
        d = np.sqrt(np.diag(S))
        C = np.eye(self.k)
        live = d > 0
        C[np.ix_(live, live)] = S[np.ix_(live, live)] / np.outer(d[live], d[live])
        P = vine_partials(C[np.ix_(self.order, self.order)])
        partials = np.array([P[i, j] for i, j in self.free])
        return np.concatenate([theta[self.other], d, partials])

    def start(self) -> np.ndarray:
        return self.from_theta(self.setup.theta)

    def canonical(self, x, value):
        out = x.copy()
        out[: len(self.other)] = fold_theta(self.engine.re, self.theta(x, value))[self.other]
        return out

    def restart(self, x, value):
        """As the theta problems' restart, on the theta that x gives."""
        re = self.engine.re
        theta = self.theta(x, value)
        again = restart_point(theta, re.lower, re.template_columns())
        return None if np.array_equal(again, theta) else self.from_theta(again)

    def _term_jacobian(self, x: np.ndarray, value: float) -> np.ndarray:
        """d theta_i / d (d, partials): exact for d (rows of L), central differences of
        the cheap k x k map for the partial correlations."""
        _, d, partials = self._split(x)
        L = self._factor(value, partials)
        J = np.zeros((len(self.term_theta), self.k + len(partials)))
        for a in range(self.k):
            J[:, a] = np.where(self.rows == a, L[self.rows, self.cols], 0.0)
        h = 1e-6
        for f in range(len(partials)):
            hi, lo = partials.copy(), partials.copy()
            hi[f], lo[f] = min(partials[f] + h, 1.0), max(partials[f] - h, -1.0)
            dL = self._factor(value, hi) - self._factor(value, lo)
            J[:, self.k + f] = (d[:, None] * dL)[self.rows, self.cols] / (hi[f] - lo[f])
        return J

    def deviance(self, x, value, grad):
        f, g = self.engine.ml(self.theta(x, value), grad)
        if g is None or not np.isfinite(f):
            return f, None
        term = g[self.term_theta] @ self._term_jacobian(x, value)
        return f, np.concatenate([g[self.other], term])

    def point(self, x, value):
        theta = self.theta(x, value)
        ev = self.engine.evaluate(theta)
        sigma = math.sqrt(ev.pwrss / self.engine.n)
        full = np.concatenate([sdcor_from_theta(self.engine.re, theta, sigma), ev.beta])
        full[self.par.index] = value
        return full


def make_problem(engine: Engine, setup: ProfileSetup, par: Parameter) -> Problem:
    """The nuisance problem of holding ``par``, by its kind."""
    kinds = {"sigma": _SigmaProblem, "sd": _SdProblem, "cor": _CorProblem,
             "beta": _BetaProblem}
    return kinds[par.kind](engine, setup, par)


def minimize_nuisance(problem: Problem, value: float,
                      x0: np.ndarray) -> tuple[np.ndarray, float]:
    """The nuisance optimum at ``value``: L-BFGS-B from x0 (exact gradient when the kernel
    has one, else central differences). Returns the best point evaluated and its deviance
    (an optimizer can end a line search on a worse point near a barrier)."""
    lower, upper = problem.bounds(value)
    x0 = problem.feasible(np.clip(x0, lower, upper), value)
    exact = problem.exact
    best: list = [x0, math.inf]

    def fun(x: np.ndarray):
        f, g = problem.deviance(x, value, exact)
        if np.isfinite(f) and f < best[1]:
            best[0], best[1] = np.clip(x, lower, upper), f
        if exact:
            if not (np.isfinite(f) and g is not None and np.all(np.isfinite(g))):
                return _INFEASIBLE, np.zeros_like(x)
            return f, g
        return f if np.isfinite(f) else _INFEASIBLE

    if len(x0) == 0:
        return x0, problem.deviance(x0, value, False)[0]
    bounds = scipy.optimize.Bounds(lower, upper)
    jac = True if exact else "3-point"
    scipy.optimize.minimize(fun, x0, method="L-BFGS-B", jac=jac, bounds=bounds,
                            options=_LBFGSB_OPTIONS)
    # A zero template column is a stationary point of the deviance (which is even in the
    # column's sign), where a gradient method cannot move although the minimum may lie
    # elsewhere: minimize again from a point off it, as the fit does, keep the better.
    again = problem.restart(problem.canonical(best[0], value), value)
    if again is not None:
        scipy.optimize.minimize(fun, np.clip(again, lower, upper), method="L-BFGS-B",
                                jac=jac, bounds=bounds, options=_LBFGSB_OPTIONS)
    return problem.canonical(best[0], value), best[1]

