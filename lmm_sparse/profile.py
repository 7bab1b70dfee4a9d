"""Profile-likelihood confidence intervals, as lme4's ``profile()`` and
``confint(method = "profile")``.

What is profiled is lme4's (R/profile.R, ``profile.merMod`` and ``devfun2``):

* **The likelihood is always the ML one.** A REML fit is first refitted by maximum
  likelihood (lme4's ``refitML``); the profile and the intervals are those of the ML
  deviance, centred on the ML estimates.
* **The parameters** are the standard deviations and correlations of each random-effect
  term (in theta's order: each template's lower triangle column by column, ``sd_`` on the
  diagonal, ``cor_`` below it), the residual standard deviation ``sigma``, and the fixed
  effects. Their names are lme4's ``oldNames = FALSE`` names (:func:`varpar_names`).
* **zeta.** With ``D(phi)`` the deviance minimized over all the other parameters while
  parameter ``phi`` is held fixed, and ``D_hat`` its minimum,
  ``zeta(phi) = sign(phi - phi_hat) sqrt(D(phi) - D_hat)``, approximately standard normal
  under the null; the interval at level ``1 - alpha`` is ``{phi : |zeta(phi)| <= z_(1 -
  alpha / 2)}``.

How each minimization is done (every evaluation is one ``PLSWorkspace.evaluate``, no
n-sized work; beta is always profiled out exactly by the PLS solution):

* ``sigma`` held at s: minimize ``ldL2 + pwrss / s^2 + n log(2 pi s^2)`` over theta;
* the ``sd`` of coefficient ``a`` of term ``i`` held at ``s > 0``: the same deviance
  with sigma free, over theta whose row ``a`` of ``T_i`` is ``(s / sigma) w / |w|``
  (``s = sigma |row a|`` solved for the row); at ``s = 0`` the row is zero and sigma is
  profiled out analytically (the ML criterion);
* a ``cor`` of term ``i`` held: sigma is profiled out analytically (a correlation does not
  involve it); the term is written through its relative standard deviations and the
  partial correlations of a C-vine whose first pair is the profiled one, so that every
  point of the box is a valid covariance with the profiled entry held;
* fixed effect ``j`` held at ``b``: minimize over theta the ML criterion of the reduced
  problem (column ``j`` moved into the offset), whose penalized residual sum of squares is,
  exactly, ``pwrss + (b - beta_hat_j)^2 / [(R_X' R_X)^(-1)]_jj`` at every theta.

The nuisance minimizations use L-BFGS-B, with the exact gradient when the kernel provides
the selected inverse (:mod:`lmm_sparse.gradient`), else central differences. The walk
along each profile follows lme4's (steps of about ``delta`` in zeta, from the estimate
outwards until ``|zeta|`` exceeds the cut-off or the parameter reaches its bound);
interval endpoints are then found by Brent's root finding on zeta itself between the two
walk points that bracket the quantile, instead of lme4's interpolating splines. Where the
profile stays below the quantile up to a bound (a standard deviation at 0, a correlation
at +-1) the endpoint is that bound, as in lme4's ``confint.thpr``.

See docs/profile.md for the formulas and references.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import pandas as pd
import scipy.interpolate
import scipy.linalg
import scipy.optimize
import scipy.stats
from threadpoolctl import threadpool_limits

from .crossprod import ZtZOperator
from .errors import ConvergenceWarning, LmmSparseError
from .gradient import gradient_parts
from .optimize import optimize_with_restart, restart_point
from .parallel import map_tasks
from .pls import PLSEval, profiled_deviance
from .terms import ReStructure

if TYPE_CHECKING:
    from .model import LinearMixedModel
    from .results import LmerResult

__all__ = [
    "ProfileParameter",
    "profile",
    "confint_profile",
    "profile_zeta",
    "varpar_names",
    "varpar_estimates",
    "profile_parameters",
    "sdcor_from_theta",
    "percent_labels",
]

ParameterKind = Literal["sd", "cor", "sigma", "beta"]
EndStatus = Literal["cutoff", "bound", "failed"]

_PROFILE_COLUMNS = ("parameter", "value", "zeta")
# L-BFGS-B settings of the nuisance minimizations: the fit's own (optimize._options).
_LBFGSB_OPTIONS = {"ftol": 1e-12, "gtol": 1e-6, "maxls": 20, "maxcor": 30, "maxfun": 20_000}
_INFEASIBLE = 1e300  # what the optimizer sees at a point where the deviance is not finite
# A profile point whose deviance is below the optimum's by more than this means the fit
# had not reached its optimum: warned (lme4 stops with an error beyond 1e-9). Below it
# the effect on zeta is negligible (1e-3 moves zeta by 2.6e-4 at 1.96).
_LOWER_DEVIANCE_TOL = 1e-3
# Brent's method stops when the bracket is this fraction of the walk step that
# bracketed the root (the step is ~1/8 of the half-interval: ~1e-5 of its width).
_ROOT_XTOL = 1e-4
_SHIFT_REL = 0.01  # first step from the estimate: 1% of it (lme4's pw * 1.01) ...
_SHIFT_ABS = 1e-3  # ... but at least this, times sigma for sds, absolute for correlations


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ProfileParameter:
    """One parameter of lme4's profile parameterization.

    Fields
    ------
    name: lme4's ``oldNames = FALSE`` name (``sd_Days|Subject``, ``sigma``, ``Days``).
    kind: "sd", "cor", "sigma" or "beta".
    index: position in the full parameter vector (sd/cor in theta's order, sigma, beta).
    term: the random-effect term (sd, cor), else -1.
    row, col: position in the term's template: the sd of coefficient ``row`` (row == col),
        or the correlation of coefficients ``row`` > ``col``; -1 otherwise.
    column: the fixed effect's column of X (beta), else -1.
    lower, upper: the parameter's range (0 for sds and sigma, -1 and 1 for correlations).
    """

    name: str
    kind: ParameterKind
    index: int
    term: int = -1
    row: int = -1
    col: int = -1
    column: int = -1
    lower: float = -math.inf
    upper: float = math.inf


def _term_parameters(re: ReStructure, start: int) -> list[ProfileParameter]:
    out: list[ProfileParameter] = []
    for i, term in enumerate(re.terms):
        names, group = term.coef_names, term.group
        for col in range(term.k):  # theta's order: the lower triangle column by column
            for row in range(col, term.k):
                index = start + len(out)
                if row == col:
                    out.append(ProfileParameter(f"sd_{names[col]}|{group}", "sd", index, i,
                                                row, col, lower=0.0))
                else:
                    out.append(ProfileParameter(f"cor_{names[row]}.{names[col]}|{group}", "cor",
                                                index, i, row, col, lower=-1.0, upper=1.0))
    return out


def profile_parameters(model: LinearMixedModel) -> tuple[ProfileParameter, ...]:
    """All parameters of the profile, in lme4's order: per term its sds and correlations
    (theta's order), then ``sigma``, then the fixed effects (``model.fixed.names``)."""
    pars = _term_parameters(model.re, 0)
    m = len(pars)
    pars.append(ProfileParameter("sigma", "sigma", m, lower=0.0))
    for j, name in enumerate(model.fixed.names):
        pars.append(ProfileParameter(str(name), "beta", m + 1 + j, column=j))
    return tuple(pars)


def _check_result(result: LmerResult) -> LinearMixedModel:
    model = getattr(result, "model", None)
    if model is None or not hasattr(model, "workspace"):
        raise LmmSparseError(
            f"profiling needs a fitted LmerResult with its model, got {type(result).__name__}"
        )
    return model


def varpar_names(result: LmerResult) -> list[str]:
    """Names of the variance parameters, lme4's ``confint(oldNames = FALSE)`` spelling.

    Per random-effect term, in the order of theta (terms by decreasing number of levels;
    within a term its template's lower triangle column by column): ``sd_<coef>|<group>``
    for a standard deviation, ``cor_<coef_row>.<coef_col>|<group>`` for a correlation;
    then ``"sigma"``. For ``(Days | Subject)``: ``sd_(Intercept)|Subject``,
    ``cor_Days.(Intercept)|Subject``, ``sd_Days|Subject``, ``sigma``. Coefficient names
    are ours (formulaic's), e.g. ``sd_Variety[T.Marvellous]|Block``.
    """
    model = _check_result(result)
    return [p.name for p in profile_parameters(model) if p.kind != "beta"]


def sdcor_from_theta(re: ReStructure, theta: np.ndarray, sigma: float) -> np.ndarray:
    """Standard deviations and correlations of every term, then sigma (lme4's Cv_to_Sv).

    The covariance of one level's effects of term i is ``sigma^2 T_i T_i'``; entry (r, c)
    of its lower triangle (column-major, theta's order) becomes the sd of coefficient r
    (r == c) or the correlation of r and c. A correlation with a zero sd is NaN.
    """
    out = []
    for i in range(len(re.terms)):
        T = re.template(theta, i)
        S = sigma**2 * (T @ T.T)
        sd = np.sqrt(np.diag(S))
        for col in range(T.shape[0]):
            for row in range(col, T.shape[0]):
                if row == col:
                    out.append(sd[col])
                else:  # clipped: rounding can put a correlation of +-1 just beyond it
                    denom = sd[row] * sd[col]
                    out.append(min(1.0, max(-1.0, S[row, col] / denom)) if denom > 0
                               else math.nan)
    out.append(sigma)
    return np.asarray(out, dtype=float)


def varpar_estimates(result: LmerResult) -> pd.Series:
    """The fit's variance parameters by :func:`varpar_names`: sds, correlations, sigma.

    These are the fit's own estimates (REML ones for a REML fit), the same numbers as
    ``result.varcorr``'s ``sdcor`` column in profile order. A correlation involving a
    zero standard deviation is NaN.
    """
    model = _check_result(result)
    values = sdcor_from_theta(model.re, np.asarray(result.theta, dtype=float), result.sigma)
    return pd.Series(values, index=varpar_names(result), name="estimate")


def _resolve_which(parameters: Sequence[ProfileParameter], which) -> tuple[int, ...]:
    """Indices selected by ``which``: None (all), names, "theta_" (every variance
    parameter, sigma included, as lme4) and "beta_" (every fixed effect)."""
    if which is None:
        return tuple(range(len(parameters)))
    items = [which] if isinstance(which, str) else list(which)
    by_name = {p.name: p.index for p in parameters}
    chosen: set[int] = set()
    for item in items:
        if item == "theta_":
            chosen.update(p.index for p in parameters if p.kind != "beta")
        elif item == "beta_":
            chosen.update(p.index for p in parameters if p.kind == "beta")
        elif isinstance(item, str) and item in by_name:
            chosen.add(by_name[item])
        else:
            raise LmmSparseError(
                f"unknown parameter {item!r} in which; choose among {list(by_name)} or the "
                "groups 'theta_' (variance parameters) and 'beta_' (fixed effects)"
            )
    if not chosen:
        raise LmmSparseError(f"which={which!r} selects no parameter")
    return tuple(sorted(chosen))


def _check_level(level: float) -> float:
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise LmmSparseError(f"level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < value < 1.0:
        raise LmmSparseError(f"level must be in (0, 1), got {level!r}")
    return value


def percent_labels(level: float) -> list[str]:
    """Column labels of an interval at ``level``, as R's confint: "2.5 %", "97.5 %".

    R formats ``100 * c(a, 1 - a)`` with 3 significant digits, both with the decimals the
    one needing more uses, trailing zeros dropped (level 0.9: "5 %", "95 %").
    """
    a = (1.0 - _check_level(level)) / 2.0
    values = [100.0 * a, 100.0 * (1.0 - a)]

    def decimals(x: float) -> int:
        text = f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}"
        return len(text.split(".")[1].rstrip("0")) if "." in text else 0

    places = max(decimals(x) for x in values)
    return [f"{x:.{places}f} %" for x in values]


# --------------------------------------------------------------------------- the ML optimum


@dataclass(frozen=True)
class ProfileSetup:
    """What every parameter's profile needs: the ML optimum and the walk's settings.

    Picklable (no model): sent to the worker processes with each task.

    Fields
    ------
    parameters: all parameters (:func:`profile_parameters`).
    estimates: their ML estimates (lme4's ``opt``), in the same order.
    theta: the ML estimate of theta.
    stderr: ML standard errors of the fixed effects (the first step of their walks).
    deviance: the ML deviance at the optimum (lme4's ``basedev``).
    cutoff: |zeta| at which the walk stops (lme4: sqrt(qchisq(1 - alphamax, nptot))).
    delta: the walk's target step in zeta.
    max_points: points per direction at most (lme4's maxpts).
    max_mult: a step is at most this multiple of the previous one (lme4's maxmult).
    """

    parameters: tuple[ProfileParameter, ...]
    estimates: np.ndarray
    theta: np.ndarray
    stderr: np.ndarray
    deviance: float
    cutoff: float
    delta: float
    max_points: int
    max_mult: float


def _ml_theta(result: LmerResult, model: LinearMixedModel) -> np.ndarray:
    """The ML optimum of theta: the fit's own for an ML fit, else an ML refit from the
    REML estimate with the fit's optimizer (lme4's refitML)."""
    theta = np.asarray(result.theta, dtype=float)
    if not result.reml:
        return theta.copy()
    ws, re = model.workspace, model.re
    gradient = (lambda t: ws.objective_and_gradient(t, False)) if ws.has_gradient else None
    opt = optimize_with_restart(lambda t: ws.objective(t, False), theta, re.lower,
                                re.template_columns(), "auto", objective_gradient=gradient)
    return opt.theta


def _make_setup(result: LmerResult, model: LinearMixedModel, alpha_max: float,
                max_points: int, delta: float | None, delta_cutoff: float,
                max_mult: float) -> ProfileSetup:
    parameters = profile_parameters(model)
    theta = _ml_theta(result, model)
    ev = model.workspace.evaluate(theta)
    n, p = model.cp.n, model.cp.p
    sigma = math.sqrt(ev.pwrss / n)
    RXinv = scipy.linalg.solve_triangular(ev.RX, np.eye(p)) if p else np.zeros((0, 0))
    stderr = sigma * np.sqrt(np.sum(RXinv**2, axis=1))
    cutoff = math.sqrt(scipy.stats.chi2.ppf(1.0 - alpha_max, len(parameters)))
    return ProfileSetup(
        parameters=parameters,
        estimates=np.concatenate([sdcor_from_theta(model.re, theta, sigma), ev.beta]),
        theta=theta,
        stderr=stderr,
        deviance=profiled_deviance(ev, n, p, reml=False),
        cutoff=cutoff,
        delta=cutoff * delta_cutoff if delta is None else float(delta),
        max_points=max_points,
        max_mult=max_mult,
    )


# --------------------------------------------------------------------------- the deviance


class _Engine:
    """ML deviances of one model, evaluated on its workspace.

    ``fixed_scale_gradient`` is the theta-gradient of ``ldL2 + P(beta) / sigma^2`` with
    ``P(beta)`` the penalized residual sum of squares minimized over u at a given beta:
    [E15a] + [E15b] / sigma^2 of docs/algorithm.md, from
    :func:`lmm_sparse.gradient.gradient_parts` with u and beta those of the (possibly
    constrained) problem (envelope theorem: u and the free betas are optimal, so only
    the explicit dependence on theta counts).
    """

    def __init__(self, model: LinearMixedModel) -> None:
        self.ws, self.re, self.cp = model.workspace, model.re, model.cp
        self.n, self.p = model.cp.n, model.cp.p
        self.exact = bool(self.ws.has_gradient)
        self._ztz: ZtZOperator | None = None

    def evaluate(self, theta: np.ndarray) -> PLSEval:
        return self.ws.evaluate(theta)

    def ml(self, theta: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        """The ML criterion (sigma and beta profiled out) and its gradient."""
        if grad:
            return self.ws.objective_and_gradient(theta, False)
        return self.ws.objective(theta, False), None

    def fixed_scale_gradient(self, ev: PLSEval, beta: np.ndarray,
                             inv_sigma2: float) -> np.ndarray:
        if self._ztz is None:
            self._ztz = ZtZOperator(self.re, self.cp)
        u = self.ws.spherical_modes(replace(ev, beta=beta))  # the factor is ev's: no refactor
        logdet, dpwrss = gradient_parts(
            self.re, self.cp, self._ztz, self.re.templates(ev.theta), u, None,
            beta - self.cp.beta0, ev.RX, self.ws.kernel.inverse_blocks(),
        )
        return logdet + inv_sigma2 * dpwrss

    def fixed_scale(self, ev: PLSEval, pwrss: float, sigma2: float) -> float:
        """``ldL2 + pwrss / sigma^2 + n log(2 pi sigma^2)``: -2 log-likelihood at sigma."""
        return ev.ldL2 + pwrss / sigma2 + self.n * math.log(2.0 * math.pi * sigma2)


def _theta_positions(re: ReStructure, i: int) -> np.ndarray:
    """Index into theta of each entry T_i[r, c] (r >= c) of term i's template; -1 above."""
    k = re.terms[i].k
    pos = np.full((k, k), -1, dtype=int)
    pos.T[np.triu_indices(k)] = np.arange(re.theta_offsets[i], re.theta_offsets[i + 1])
    return pos


def _fold(re: ReStructure, theta: np.ndarray) -> np.ndarray:
    """theta with every template column whose diagonal element is negative negated.

    The deviance depends on theta only through ``Lambda Lambda'``, which does not change
    when a column of a template changes sign: theta's lower bounds of 0 only make the
    template unique. The nuisance minimizations therefore leave theta unbounded (a line
    search can then pass through a zero diagonal, a stationary point of the deviance,
    instead of stopping on the bound there) and fold the result back.
    """
    out = np.array(theta, dtype=float)
    for col in re.template_columns():
        if out[col[0]] < 0:
            out[col] = -out[col]
    return out


class _Problem(Protocol):
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
        """x with theta folded onto its bounds (see :func:`_fold`)."""

    def deviance(self, x: np.ndarray, value: float,
                 grad: bool) -> tuple[float, np.ndarray | None]:
        """The ML deviance at (x, value) and, if ``grad``, its gradient in x."""

    def point(self, x: np.ndarray, value: float) -> np.ndarray:
        """Every parameter (sds/cors, sigma, fixed effects) at (x, value)."""


class _ThetaProblem:
    """Base of the problems whose nuisance parameter is theta itself."""

    def __init__(self, engine: _Engine, setup: ProfileSetup, par: ProfileParameter) -> None:
        self.engine, self.setup, self.par = engine, setup, par
        self.exact = engine.exact
        n = engine.re.ntheta
        self.lower, self.upper = np.full(n, -np.inf), np.full(n, np.inf)  # see _fold

    def bounds(self, value: float) -> tuple[np.ndarray, np.ndarray]:
        return self.lower, self.upper

    def canonical(self, x: np.ndarray, value: float) -> np.ndarray:
        return _fold(self.engine.re, x)

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
        p, j = self.engine.p, self.par.column
        RXinv = scipy.linalg.solve_triangular(ev.RX, np.eye(p))
        s = RXinv @ RXinv[j]  # column j of S = R_X^{-1} R_X^{-T}
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


def _psd_cholesky(S: np.ndarray, tol: float = 1e-12) -> np.ndarray:
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


def _vine_cholesky(P: np.ndarray) -> np.ndarray:
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


def _vine_partials(C: np.ndarray) -> np.ndarray:
    """The C-vine partial correlations of a correlation matrix (inverse of _vine_cholesky)."""
    k = C.shape[0]
    L = _psd_cholesky(C)
    P = np.zeros((k, k))
    for j in range(1, k):
        rest = 1.0
        for i in range(j):
            P[i, j] = L[j, i] / math.sqrt(rest) if rest > 1e-12 else 0.0
            rest -= L[j, i] ** 2
    return np.clip(P, -1.0, 1.0)


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

    def __init__(self, engine: _Engine, setup: ProfileSetup, par: ProfileParameter) -> None:
        self.engine, self.setup, self.par = engine, setup, par
        self.exact = engine.exact
        re = engine.re
        pos = _theta_positions(re, par.term)[par.row]
        self.row = pos[pos >= 0]  # theta indices of T_i[a, 0..a], the diagonal last
        self.rest = np.setdiff1d(np.arange(re.ntheta), self.row)
        nr, nw = len(self.rest), len(self.row) if par.row > 0 else 0
        self.nw = nw
        # unbounded: theta's bounds only make the template unique (see _fold)
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
        theta = _fold(self.engine.re, self.theta(x, value))
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
    -1 <= other partials <= 1`` is a valid covariance (:func:`_vine_cholesky`). Nuisance:
    the other terms' theta, d, the other partials (none for a 2 x 2 term, where the
    template ``[[d_1, 0], [d_2 rho, d_2 sqrt(1 - rho^2)]]`` is smooth in d).
    """

    def __init__(self, engine: _Engine, setup: ProfileSetup, par: ProfileParameter) -> None:
        self.engine, self.setup, self.par = engine, setup, par
        self.exact = engine.exact
        re = engine.re
        self.k = k = re.terms[par.term].k
        pos = _theta_positions(re, par.term)
        self.rows, self.cols = np.nonzero(pos >= 0)
        self.term_theta = pos[self.rows, self.cols]
        self.other = np.setdiff1d(np.arange(re.ntheta), self.term_theta)
        self.order = np.array([par.col, par.row]
                              + [c for c in range(k) if c not in (par.col, par.row)])
        upper = np.triu_indices(k, 1)
        self.free = tuple((i, j) for i, j in zip(*upper, strict=True) if (i, j) != (0, 1))
        no, nf = len(self.other), len(self.free)
        # the other terms' theta unbounded (see _fold); d >= 0: a row's sign is not free
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
        Lv = _vine_cholesky(P)
        C = np.empty((self.k, self.k))
        C[np.ix_(self.order, self.order)] = Lv @ Lv.T
        return _psd_cholesky(C)

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
        P = _vine_partials(C[np.ix_(self.order, self.order)])
        partials = np.array([P[i, j] for i, j in self.free])
        return np.concatenate([theta[self.other], d, partials])

    def start(self) -> np.ndarray:
        return self.from_theta(self.setup.theta)

    def canonical(self, x, value):
        out = x.copy()
        out[: len(self.other)] = _fold(self.engine.re, self.theta(x, value))[self.other]
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


def _problem(engine: _Engine, setup: ProfileSetup, par: ProfileParameter) -> _Problem:
    kinds = {"sigma": _SigmaProblem, "sd": _SdProblem, "cor": _CorProblem,
             "beta": _BetaProblem}
    return kinds[par.kind](engine, setup, par)


def _minimize(problem: _Problem, value: float, x0: np.ndarray) -> tuple[np.ndarray, float]:
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


# --------------------------------------------------------------------------- one profile


@dataclass(frozen=True)
class ProfilePoint:
    """One point of a profile.

    Fields
    ------
    value: the profiled parameter's value.
    zeta: signed square root of the deviance increase over the optimum.
    params: every parameter at this point (sds/cors, sigma, fixed effects), lme4's row.
    x: the nuisance optimum, which warm-starts the neighbouring points.
    deviance_change: deviance minus the optimum's (negative: a lower deviance was found).
    """

    value: float
    zeta: float
    params: np.ndarray
    x: np.ndarray
    deviance_change: float


@dataclass(frozen=True)
class ProfileTask:
    """One parameter to profile (a picklable task for :func:`lmm_sparse.parallel.map_tasks`).

    Fields
    ------
    setup: the optimum and the walk's settings.
    index: the parameter (index into setup.parameters).
    targets: zeta values whose crossings are located exactly (e.g. -1.96, 1.96).
    limit: the walk stops beyond this |zeta|.
    """

    setup: ProfileSetup
    index: int
    targets: tuple[float, ...]
    limit: float


@dataclass(frozen=True)
class ParameterProfile:
    """The profile of one parameter.

    Fields
    ------
    parameter: the parameter.
    points: the points, by increasing value (the estimate, the walk, the crossings).
    lower_end, upper_end: why the walk stopped on each side: "cutoff" (|zeta| passed the
        limit), "bound" (the parameter reached its bound) or "failed".
    crossings: per target, the value where zeta crosses it (NaN if the profile does not).
    """

    parameter: ProfileParameter
    points: tuple[ProfilePoint, ...]
    lower_end: EndStatus
    upper_end: EndStatus
    crossings: tuple[float, ...]


class _Profiler:
    """Evaluates zeta along one parameter (walk and root finding)."""

    def __init__(self, model: LinearMixedModel, task: ProfileTask) -> None:
        self.setup = task.setup
        self.par = task.setup.parameters[task.index]
        self.estimate = float(task.setup.estimates[task.index])
        self.problem = _problem(_Engine(model), task.setup, self.par)
        self.x_hat = self.problem.start()

    def at(self, value: float, x0: np.ndarray) -> ProfilePoint:
        """zeta at ``value``: the nuisance minimization from the neighbouring point's
        optimum ``x0`` (lme4's "prev" start) and from the estimate's (its "global"
        start), the better kept: along a walk the previous optimum can lead into a local
        minimum that the other start avoids (measured on a 3 x 3 term, oats)."""
        x, dev = _minimize(self.problem, value, x0)
        if not np.array_equal(x0, self.x_hat):
            x2, dev2 = _minimize(self.problem, value, self.x_hat)
            if dev2 < dev:
                x, dev = x2, dev2
        change = dev - self.setup.deviance
        if not np.isfinite(change):
            return ProfilePoint(value, math.nan, np.full(len(self.setup.estimates), math.nan),
                                x, math.nan)
        zeta = math.copysign(math.sqrt(max(change, 0.0)), value - self.estimate)
        if value == self.estimate:
            zeta = 0.0
        return ProfilePoint(value, zeta, self.problem.point(x, value), x, change)

    def first_step(self) -> float:
        """lme4's first point: 1% beyond the estimate (est + delta * stderr for fixed
        effects), at least 1e-3 (times sigma for sds), moved inwards at a bound."""
        par, est = self.par, self.estimate
        if par.kind == "beta":
            std = float(self.setup.stderr[par.column])
            if not (np.isfinite(std) and std > 0):  # a degenerate fit: any positive step
                std = _SHIFT_ABS * max(abs(est), 1.0)
            return est + self.setup.delta * std
        scale = 1.0 if par.kind == "cor" else float(self.setup.estimates[self._sigma_index()])
        step = max(_SHIFT_REL * abs(est), _SHIFT_ABS * scale)
        up = est + step if est >= 0 else est - step
        if par.lower <= up <= par.upper:
            return up
        return est - (up - est)

    def _sigma_index(self) -> int:
        return next(p.index for p in self.setup.parameters if p.kind == "sigma")

    def walk(self, prev: ProfilePoint, cur: ProfilePoint,
             limit: float) -> tuple[list[ProfilePoint], EndStatus]:
        """Continue from ``cur`` away from ``prev`` until |zeta| > limit or a bound.

        Each step aims at a change of ``delta`` in zeta by the last secant (at most
        ``max_mult`` times the last step); where zeta did not grow it doubles the step.
        A bound is evaluated exactly (sigma's 0 is approached by halving, as the deviance
        is infinite there).
        """
        par, setup = self.par, self.setup
        direction = 1.0 if cur.value > prev.value else -1.0
        bound = par.upper if direction > 0 else par.lower
        out: list[ProfilePoint] = []
        while True:
            if not np.isfinite(cur.zeta):
                return out, "failed"
            if abs(cur.zeta) > limit:
                return out, "cutoff"
            if cur.value == bound:
                return out, "bound"
            if len(out) >= setup.max_points:
                return out, "failed"
            num = abs(cur.value - prev.value)
            if num == 0.0:
                return out, "failed"
            rise = (cur.zeta - prev.zeta) * direction
            step = setup.delta * num / rise if rise > 0 else 2.0 * num
            step = min(step, setup.max_mult * num)
            nxt = cur.value + direction * step
            if direction * (nxt - bound) >= 0:
                nxt = bound if par.kind in ("sd", "cor") else (cur.value + bound) / 2.0
            point = self.at(nxt, cur.x)
            out.append(point)
            prev, cur = cur, point

    def crossing(self, side: list[ProfilePoint], target: float) -> ProfilePoint | None:
        """The first crossing of ``target`` going outwards along ``side`` (the estimate
        first), located by Brent's method between the two points that bracket it."""
        for a, b in zip(side, side[1:], strict=False):
            if not (np.isfinite(a.zeta) and np.isfinite(b.zeta)):
                return None
            if (a.zeta - target) * (b.zeta - target) > 0:
                continue
            if b.zeta == target:
                return b
            found = {a.value: a, b.value: b}  # Brent starts at the ends: known

            def gap(v: float, a=a, b=b, found=found) -> float:
                if v not in found:
                    start = a.x if abs(v - a.value) <= abs(v - b.value) else b.x
                    found[v] = self.at(v, start)
                return found[v].zeta - target

            root = scipy.optimize.brentq(
                gap, a.value, b.value, xtol=_ROOT_XTOL * abs(b.value - a.value), rtol=1e-12,
                full_output=False,
            )
            return found.get(root) or self.at(root, a.x)
        return None


def _profile_task(model: LinearMixedModel, task: ProfileTask) -> ParameterProfile:
    """Profile one parameter (module level: the worker processes import it by name)."""
    prof = _Profiler(model, task)
    setup, par = task.setup, prof.par
    est = ProfilePoint(prof.estimate, 0.0, setup.estimates.copy(), prof.x_hat, 0.0)
    shift = prof.at(prof.first_step(), est.x)
    sides: dict[float, tuple[list[ProfilePoint], EndStatus]] = {}
    ahead, status = prof.walk(est, shift, task.limit)
    sign = 1.0 if shift.value > est.value else -1.0
    sides[sign] = ([est, shift, *ahead], status)
    bound = par.lower if sign > 0 else par.upper
    if est.value == bound:  # the estimate is on the bound: nothing beyond it
        sides[-sign] = ([est], "bound")
    else:
        back, status = prof.walk(shift, est, task.limit)
        sides[-sign] = ([est, *back], status)
    crossings, extra = [], []
    for target in task.targets:
        side = sides[1.0 if target > 0 else -1.0][0]
        hit = prof.crossing(side, target)
        crossings.append(hit.value if hit is not None else math.nan)
        if hit is not None:
            extra.append(hit)
    points = {p.value: p for p in [*sides[1.0][0], *sides[-1.0][0], *extra]}
    return ParameterProfile(
        parameter=par,
        points=tuple(points[v] for v in sorted(points)),
        lower_end=sides[-1.0][1],
        upper_end=sides[1.0][1],
        crossings=tuple(crossings),
    )


# --------------------------------------------------------------------------- running


def _run(result: LmerResult, which, targets: tuple[float, ...], limit: float | None,
         alpha_max: float, max_points: int, delta: float | None, delta_cutoff: float,
         max_mult: float, progress: bool, n_jobs: int | None
         ) -> tuple[ProfileSetup, list[ParameterProfile]]:
    model = _check_result(result)
    _check_settings(alpha_max, max_points, delta, delta_cutoff, max_mult)
    selected = _resolve_which(profile_parameters(model), which)
    ws = model.workspace
    theta_fit = np.asarray(result.theta, dtype=float).copy()
    try:
        # the fit's BLAS threads (one unless the evaluations have big dense products)
        with threadpool_limits(limits=ws.blas_threads(), user_api="blas"):
            setup = _make_setup(result, model, alpha_max, max_points, delta, delta_cutoff,
                                max_mult)
            reach = setup.cutoff if limit is None else limit
            reach = max([reach, *(abs(t) for t in targets)])
            tasks = [ProfileTask(setup, i, targets, reach) for i in selected]
            profiles = map_tasks(_profile_task, model, tasks, n_jobs=n_jobs,
                                 progress=progress, desc="profile")
    finally:
        ws.evaluate(theta_fit)  # leave the workspace factored at the fit's theta
    _warn_lower_deviance(profiles)
    return setup, profiles


def _check_settings(alpha_max: float, max_points: int, delta: float | None,
                    delta_cutoff: float, max_mult: float) -> None:
    if not 0.0 < float(alpha_max) < 1.0:
        raise LmmSparseError(f"alpha_max must be in (0, 1), got {alpha_max!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise LmmSparseError(f"max_points must be an integer >= 2, got {max_points!r}")
    if delta is not None and not float(delta) > 0.0:
        raise LmmSparseError(f"delta must be positive, got {delta!r}")
    if not float(delta_cutoff) > 0.0:
        raise LmmSparseError(f"delta_cutoff must be positive, got {delta_cutoff!r}")
    if not float(max_mult) > 1.0:
        raise LmmSparseError(f"max_mult must be greater than 1, got {max_mult!r}")


def _warn_lower_deviance(profiles: list[ParameterProfile]) -> None:
    worst = min((p.deviance_change for prof in profiles for p in prof.points
                 if np.isfinite(p.deviance_change)), default=0.0)
    if worst < -_LOWER_DEVIANCE_TOL:
        warnings.warn(
            f"profiling found a deviance {-worst:.3g} below the fit's optimum: the fit had "
            "not converged (zeta is set to 0 there); refit from the profile's better point",
            ConvergenceWarning, stacklevel=3,
        )


def _targets(levels: Sequence[float]) -> tuple[float, ...]:
    out = []
    for level in levels:
        z = float(scipy.stats.norm.ppf((1.0 + _check_level(level)) / 2.0))
        out += [-z, z]
    return tuple(out)


def profile(
    result: LmerResult,
    which: str | Sequence[str] | None = None,
    *,
    alpha_max: float = 0.01,
    max_points: int = 100,
    delta: float | None = None,
    delta_cutoff: float = 1 / 8,
    max_mult: float = 10.0,
    levels: Sequence[float] = (),
    progress: bool = True,
    n_jobs: int | None = 1,
) -> pd.DataFrame:
    """Profile the likelihood of a fitted model, as lme4's ``profile()``.

    Parameters
    ----------
    result: a fitted :class:`~lmm_sparse.results.LmerResult`. A REML fit is refitted by
        ML first: the profile is always the ML one (as lme4).
    which: parameters to profile: names as :func:`varpar_names` and ``result.fixef.index``,
        or the groups ``"theta_"`` (sds, correlations and sigma) and ``"beta_"`` (fixed
        effects); default all.
    alpha_max: each profile extends until ``|zeta|`` exceeds
        ``sqrt(chi2.ppf(1 - alpha_max, number of parameters))`` (lme4's alphamax).
    max_points: at most this many points on each side of the estimate (lme4's maxpts).
    delta: target step in zeta between points; default ``cutoff * delta_cutoff``.
    delta_cutoff: see ``delta`` (lme4's delta.cutoff).
    max_mult: a step is at most this multiple of the previous one (lme4's maxmult).
    levels: confidence levels whose zeta quantiles (+-z) are located exactly, by root
        finding, and added to the table (so that reading intervals off it is exact).
    progress: show a progress bar (one tick per parameter).
    n_jobs: profile the parameters on this many processes (-1: every core).

    Returns
    -------
    A long DataFrame, one row per point, parameters in lme4's order and each one's points
    by increasing value: ``parameter`` (its name), ``value`` (its value), ``zeta``, then
    one column per parameter with all parameters' values at that point (lme4's ``thpr``
    rows: sds, correlations, sigma, fixed effects). A correlation involving a zero sd is
    NaN.
    """
    setup, profiles = _run(result, which, _targets(levels), None, alpha_max, max_points,
                           delta, delta_cutoff, max_mult, progress, n_jobs)
    return _profile_table(setup, profiles)


def profile_zeta(result: LmerResult, parameter: str, values: Sequence[float]) -> np.ndarray:
    """zeta of one parameter at given values (a diagnostic: no walk).

    Each value's nuisance minimization starts from the ML estimate (and from inside the
    boundary where a variance collapses). ``profile_zeta(res, "sigma", ci.loc["sigma"])``
    is ``(-z, z)`` for an interval at level ``2 Phi(z) - 1``.
    """
    model = _check_result(result)
    parameters = profile_parameters(model)
    index = _resolve_which(parameters, [parameter])[0]
    par = parameters[index]
    values = np.asarray(values, dtype=float)
    outside = values[(values < par.lower) | (values > par.upper) | ~np.isfinite(values)]
    if outside.size:
        raise LmmSparseError(f"{parameter} must lie in [{par.lower}, {par.upper}], "
                             f"got {outside.tolist()}")
    ws = model.workspace
    theta_fit = np.asarray(result.theta, dtype=float).copy()
    try:
        with threadpool_limits(limits=ws.blas_threads(), user_api="blas"):
            setup = _make_setup(result, model, 0.01, 100, None, 1 / 8, 10.0)
            prof = _Profiler(model, ProfileTask(setup, index, (), setup.cutoff))
            return np.array([prof.at(float(v), prof.x_hat).zeta for v in values])
    finally:
        ws.evaluate(theta_fit)


def _profile_table(setup: ProfileSetup, profiles: list[ParameterProfile]) -> pd.DataFrame:
    names = [p.name for p in setup.parameters]
    clash = set(names) & set(_PROFILE_COLUMNS)
    if clash:
        raise LmmSparseError(
            f"a parameter is named {sorted(clash)}, which the profile table uses for its own "
            "columns; rename the predictor"
        )
    rows, values = [], []
    for prof in profiles:
        for point in prof.points:
            rows.append((prof.parameter.name, point.value, point.zeta))
            values.append(point.params)
    table = pd.DataFrame(rows, columns=list(_PROFILE_COLUMNS))
    params = pd.DataFrame(np.vstack(values) if values else np.zeros((0, len(names))),
                          columns=names)
    return pd.concat([table, params], axis=1)


# --------------------------------------------------------------------------- intervals


def _endpoint(crossing: float, end: EndStatus, bound: float, name: str) -> float:
    """lme4's confint.thpr rules: the crossing; else, if the profile reached the
    parameter's bound without crossing, the bound (an sd's 0, a correlation's +-1);
    else NaN (the walk failed), with a warning."""
    if np.isfinite(crossing):
        return crossing
    if end == "bound":
        return bound
    warnings.warn(f"the profile of {name} does not reach the interval's end: NaN",
                  ConvergenceWarning, stacklevel=4)
    return math.nan


def confint_profile(
    result: LmerResult,
    level: float = 0.95,
    which: str | Sequence[str] | None = None,
    *,
    profile: pd.DataFrame | None = None,
    progress: bool = True,
    n_jobs: int | None = 1,
) -> pd.DataFrame:
    """Profile-likelihood confidence intervals, as lme4's
    ``confint(m, method = "profile", oldNames = FALSE)``.

    Parameters
    ----------
    result: a fitted :class:`~lmm_sparse.results.LmerResult` (REML fits are profiled on
        the ML likelihood, as lme4).
    level: the confidence level, in (0, 1).
    which: parameters (names, "theta_", "beta_"; see :func:`profile`); default all.
    profile: a table from :func:`profile` to read the intervals off (by monotone
        interpolation of value against zeta, exact where the table holds the crossing,
        i.e. computed with ``levels=[level]``); default: profile now, locating each end
        by root finding on zeta.
    progress, n_jobs: as :func:`profile`.

    Returns
    -------
    A DataFrame indexed by parameter name (lme4's order: sds and correlations per term,
    sigma, fixed effects) with columns named as R's ("2.5 %", "97.5 %"). An end where the
    profile stays within the level up to the parameter's bound is that bound (0 for an sd,
    -1 or 1 for a correlation).
    """
    level = _check_level(level)
    labels = percent_labels(level)
    model = _check_result(result)
    parameters = profile_parameters(model)
    selected = _resolve_which(parameters, which)
    z = float(scipy.stats.norm.ppf((1.0 + level) / 2.0))
    if profile is not None:
        if which is None:  # the parameters the table holds
            present = set(profile["parameter"])
            selected = tuple(i for i in selected if parameters[i].name in present)
        rows = [_interval_from_table(profile, parameters[i], z) for i in selected]
    else:
        _, profiles = _run(result, which, (-z, z), z, 0.01, 100, None, 1 / 8, 10.0,
                           progress, n_jobs)
        rows = []
        for prof in profiles:
            par = prof.parameter
            rows.append((_endpoint(prof.crossings[0], prof.lower_end, par.lower, par.name),
                         _endpoint(prof.crossings[1], prof.upper_end, par.upper, par.name)))
    index = pd.Index([parameters[i].name for i in selected])
    return pd.DataFrame(rows, index=index, columns=labels, dtype=float)


def _interval_from_table(table: pd.DataFrame, par: ProfileParameter,
                         z: float) -> tuple[float, float]:
    """Both ends of one parameter's interval from a profile table.

    From the estimate (a zeta == 0 row) outwards, the first pair of rows bracketing -z
    (+z) gives the end by interpolation of value against zeta (PCHIP over the monotone run
    of points, as lme4's back-spline; exact at a tabulated crossing). Without a bracket:
    the bound if the table reaches it, else NaN.
    """
    rows = table[table["parameter"] == par.name].sort_values("value")
    if rows.empty:
        raise LmmSparseError(f"the profile table has no rows for {par.name!r}")
    values, zetas = rows["value"].to_numpy(float), rows["zeta"].to_numpy(float)
    centre = np.flatnonzero(zetas == 0.0)
    if centre.size == 0:
        raise LmmSparseError(f"the profile table has no estimate (zeta = 0) for {par.name!r}")
    mid = int(centre[len(centre) // 2])
    ends = []
    for sign, bound in ((-1, par.lower), (1, par.upper)):
        order = np.arange(mid, -1, -1) if sign < 0 else np.arange(mid, len(values))
        v, zz = values[order], zetas[order] * sign  # outwards: zz should increase
        run = 1
        while run < len(zz) and np.isfinite(zz[run]) and zz[run] > zz[run - 1]:
            run += 1
        v, zz = v[:run], zz[:run]
        if zz[-1] >= z:
            interp = scipy.interpolate.PchipInterpolator(zz, v) if run > 2 else None
            ends.append(float(interp(z)) if interp else float(np.interp(z, zz, v)))
        elif v[-1] == bound:
            ends.append(float(bound))
        else:
            warnings.warn(f"the profile table of {par.name} does not reach the interval's "
                          "end: NaN", ConvergenceWarning, stacklevel=3)
            ends.append(math.nan)
    return ends[0], ends[1]
