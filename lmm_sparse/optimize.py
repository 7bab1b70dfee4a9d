"""Optimize the profiled criterion over theta and check the optimum as lme4 does.

Only theta is optimized; beta and sigma are profiled out by the PLS kernel. The bounds
are lme4's (0 below on template diagonals, none elsewhere), the start is lme4's
(1 on diagonals, 0 off them).

The method is chosen by measurement (docs/optimizer.md): scipy's COBYQA, a
derivative-free trust-region method with bounds (the successor of Powell's BOBYQA, which
lme4 uses), reached lme4's criterion or a lower one on every reference model, in fewer
evaluations and less time than L-BFGS-B with a finite-difference gradient, which also
stopped at a worse boundary point on one of them (eeg_n400).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.optimize

from .errors import ModelSpecError
from .threads import blas_limit

__all__ = [
    "OptSummary",
    "optimize_theta",
    "optimize_with_restart",
    "check_convergence",
    "gradient_check_failed",
    "OPTIMIZERS",
]

OPTIMIZERS = ("auto", "L-BFGS-B", "cobyqa", "Nelder-Mead", "Powell")
SINGULAR_TOL = 1e-4  # lme4's isSingular() tolerance on theta's diagonal elements
GRAD_TOL = 2e-3  # lme4's check.conv.grad tolerance
HESS_TOL = 1e-6  # lme4's check.conv.hess tolerance (smallest / largest eigenvalue)
DERIV_STEP = 1e-4  # lme4's deriv12() step
RESTART_DIAGONAL = 0.1  # where a collapsed template column restarts (theta is sd / sigma)


@dataclass(frozen=True)
class OptSummary:
    """What the optimizer did.

    Fields
    ------
    method: the scipy.optimize method.
    theta0: start values.
    theta: the optimum found.
    fval: criterion at the optimum.
    feval: number of criterion evaluations by the optimizer (derivative checks excluded).
    seconds: wall time of the optimization.
    optimizer_message: what the optimizer said when it stopped.
    optimizer_converged: False when the optimizer stopped at its evaluation limit.
    messages: lme4-style convergence messages (empty when all checks passed).
    gradient, hessian: derivatives at the optimum for the convergence checks (the exact
        gradient and differences of it when there is one, else finite differences; None if
        not computed).
    """

    method: str
    theta0: np.ndarray
    theta: np.ndarray
    fval: float
    feval: int
    seconds: float
    optimizer_message: str
    optimizer_converged: bool = True
    messages: tuple[str, ...] = ()
    gradient: np.ndarray | None = field(default=None, repr=False)
    hessian: np.ndarray | None = field(default=None, repr=False)


def _options(method: str, maxfev: int) -> dict:
    if method == "L-BFGS-B":
        # ftol 1e-12: near lme4's precision on flat ridges (kwdyz11 moves 1e-5 in the
        # criterion over a factor 3 in an sd); usable because the criterion's rounding
        # noise is kept well below it (CrossProducts.beta0)
        # maxcor 30: 15-20% fewer evaluations than the default 10 on models with 9 to 20
        # thetas (d3 95 -> 77, kb07 82 -> 69, kwdyz11 49 -> 41), same optima
        return {"maxfun": maxfev, "ftol": 1e-12, "gtol": 1e-6, "maxls": 20, "maxcor": 30}
    if method == "cobyqa":
        return {"maxfev": maxfev, "final_tr_radius": 1e-7}
    if method == "Nelder-Mead":
        return {"maxfev": maxfev, "xatol": 1e-7, "fatol": 1e-9, "adaptive": True}
    return {"maxfev": maxfev, "xtol": 1e-7, "ftol": 1e-12}


Objective = Callable[[np.ndarray], float]
ObjectiveGradient = Callable[[np.ndarray], tuple[float, np.ndarray]]


def with_blas_threads(objective, threads: int):
    """The function evaluated with ``threads`` BLAS threads (unchanged for one)."""
    if threads <= 1:
        return objective

    def threaded(theta: np.ndarray):
        with blas_limit(threads):
            return objective(theta)

    return threaded


def resolve_method(method: str, has_gradient: bool) -> str:
    """"auto": L-BFGS-B on the exact gradient when there is one, else COBYQA."""
    if method not in OPTIMIZERS:
        raise ModelSpecError(f"optimizer must be one of {OPTIMIZERS}, got {method!r}")
    if method == "auto":
        return "L-BFGS-B" if has_gradient else "cobyqa"
    return method


def optimize_theta(
    objective: Objective,
    theta0: np.ndarray,
    lower: np.ndarray,
    method: str = "auto",
    maxfev: int = 100_000,
    eval_threads: int = 1,
    objective_gradient: ObjectiveGradient | None = None,
) -> OptSummary:
    """Minimize the profiled criterion over theta within lme4's bounds.

    With ``objective_gradient`` (the criterion and its exact gradient), L-BFGS-B uses that
    gradient; without it, L-BFGS-B uses central differences.

    Call it with the BLAS limited to one thread (``LinearMixedModel.fit`` does): the
    optimizer's own linear algebra works on matrices of the size of theta, where a
    multi-threaded BLAS only adds synchronisation (measured: COBYQA on 36 parameters ran
    60 times slower with two OpenBLAS threads on a busy 2-core machine). Each evaluation
    of the criterion then runs with ``eval_threads``.
    """
    method = resolve_method(method, objective_gradient is not None)
    exact = method == "L-BFGS-B" and objective_gradient is not None
    count = 0
    threaded = with_blas_threads(objective_gradient if exact else objective, eval_threads)

    def counted(theta: np.ndarray):
        nonlocal count
        count += 1
        if not exact:
            value = threaded(theta)
            return value if np.isfinite(value) else 1e300
        value, grad = threaded(theta)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            # an infeasible point: a huge value makes the line search step back
            return 1e300, np.zeros_like(theta)
        return value, grad

    bounds = scipy.optimize.Bounds(lower, np.full(len(lower), np.inf))
    start = time.perf_counter()
    # exact: fun returns (value, gradient); else central differences, accurate near flat optima
    jac = {"jac": True if exact else "3-point"} if method == "L-BFGS-B" else {}
    result = scipy.optimize.minimize(
        counted, theta0, method=method, bounds=bounds, options=_options(method, maxfev), **jac
    )
    theta = np.maximum(np.asarray(result.x, dtype=float), lower)
    return OptSummary(
        method=f"{method} (exact gradient)" if exact else method,
        theta0=np.asarray(theta0, dtype=float).copy(),
        theta=theta,
        fval=float(objective(theta)),
        feval=count,
        seconds=time.perf_counter() - start,
        optimizer_message=str(result.message),
        # Only the evaluation limit is reported: L-BFGS-B also "fails" a line search at an
        # optimum whose criterion has rounding noise, which the derivative checks judge.
        optimizer_converged=bool(result.success) or count < maxfev,
    )


def restart_point(theta: np.ndarray, lower: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """A start away from the boundary: zero template columns set back to (0.1, 0, ...).

    ``columns[j]`` holds the indices into theta of template column j (diagonal first).
    """
    start = theta.copy()
    for col in columns:
        if start[col[0]] < SINGULAR_TOL:
            start[col] = 0.0
            start[col[0]] = RESTART_DIAGONAL
    return start


def optimize_with_restart(
    objective: Objective,
    theta0: np.ndarray,
    lower: np.ndarray,
    columns: list[np.ndarray],
    method: str = "auto",
    maxfev: int = 100_000,
    eval_threads: int = 1,
    objective_gradient: ObjectiveGradient | None = None,
) -> OptSummary:
    """Optimize; if the optimum is on the boundary, optimize again from inside it.

    A derivative-free search can stop on the boundary where a variance collapsed on its
    way, although a better optimum lies inside (lme4's restart_edge addresses the same
    problem with a one-sided derivative test, which misses optima beyond a flat region).
    The second run starts with the collapsed template columns reset; the better of the
    two optima is kept and the evaluations of both are counted. A singular optimum that
    is a saddle (:func:`boundary_descent` finds lower points just off the boundary) is
    optimized again from the lowest of them.
    """
    first = optimize_theta(
        objective, theta0, lower, method, maxfev, eval_threads, objective_gradient
    )
    if not is_singular_theta(first.theta, lower):
        return first
    second = optimize_theta(
        objective, restart_point(first.theta, lower, columns), lower, method, maxfev,
        eval_threads, objective_gradient,
    )
    best = second if second.fval < first.fval else first
    feval, seconds = first.feval + second.feval, first.seconds + second.seconds
    for _ in range(_SADDLE_RESTARTS):
        start = boundary_descent(objective, best.theta, best.fval, columns)
        if start is None:
            break
        nxt = optimize_theta(
            objective, start, lower, method, maxfev, eval_threads, objective_gradient
        )
        feval, seconds = feval + nxt.feval, seconds + nxt.seconds
        if not nxt.fval < best.fval:
            break
        best = nxt
    return replace(best, theta0=first.theta0, feval=feval, seconds=seconds)


# A boundary point where a template column collapsed is often a saddle, not a minimum: the
# criterion is even in that column's diagonal, so its derivative there is zero and a
# gradient method stops. Small steps off the boundary tell (the restart above steps to 0.1,
# which can be beyond the dip: y ~ x + (x | a) with an uncentred x, measured).
_SADDLE_STEPS = (1e-3, 1e-2)
_SADDLE_RESTARTS = 3


def boundary_descent(
    objective: Objective, theta: np.ndarray, fval: float, columns: list[np.ndarray]
) -> np.ndarray | None:
    """A point just off the boundary with a lower criterion, or None if there is none.

    For every collapsed template column (diagonal below SINGULAR_TOL) the diagonal is set to
    each of _SADDLE_STEPS; the lowest point found is returned if it beats ``fval`` by more
    than rounding.
    """
    best, best_value = None, fval - 1e-10 * max(1.0, abs(fval))
    for col in columns:
        if theta[col[0]] >= SINGULAR_TOL:
            continue
        for step in _SADDLE_STEPS:
            probe = theta.copy()
            probe[col[0]] = step
            value = objective(probe)
            if value < best_value:
                best, best_value = probe, value
    return best


def _derivatives(objective: Objective, theta: np.ndarray, fval: float):
    """Central-difference gradient and Hessian with lme4's deriv12 step.

    Steps may cross theta's lower bound: flipping the sign of a column of a template
    leaves Lambda Lambda' unchanged, so the criterion is defined (and even) there.
    """
    m, h = len(theta), DERIV_STEP
    grad, hess = np.empty(m), np.empty((m, m))
    plus, minus = np.empty(m), np.empty(m)
    for i in range(m):
        e = np.zeros(m)
        e[i] = h
        plus[i], minus[i] = objective(theta + e), objective(theta - e)
        grad[i] = (plus[i] - minus[i]) / (2 * h)
        hess[i, i] = (plus[i] - 2 * fval + minus[i]) / h**2
        for j in range(i):
            e2 = e.copy()
            e2[j] = h
            hess[i, j] = hess[j, i] = (objective(theta + e2) - plus[i] - plus[j] + fval) / h**2
    return grad, hess


def _derivatives_from_gradient(objective_gradient: ObjectiveGradient, theta: np.ndarray):
    """The exact gradient and a Hessian by forward differences of it, symmetrized.

    m + 1 gradient evaluations instead of the m (m + 1) / 2 + 2 m criterion evaluations of
    :func:`_derivatives`; the O(h) error (h = 1e-4) is far below what the definiteness and
    scaled-gradient checks can see.
    """
    m, h = len(theta), DERIV_STEP
    _, grad = objective_gradient(theta)
    hess = np.empty((m, m))
    for i in range(m):
        e = np.zeros(m)
        e[i] = h
        hess[:, i] = (objective_gradient(theta + e)[1] - grad) / h
    return grad, (hess + hess.T) / 2


def is_singular_theta(theta: np.ndarray, lower: np.ndarray, tol: float = SINGULAR_TOL) -> bool:
    """lme4's isSingular(): a template diagonal element within tol of zero."""
    return bool(np.any(theta[lower == 0] < tol))


def check_convergence(
    objective: Objective,
    opt: OptSummary,
    lower: np.ndarray,
    calc_derivs: bool = True,
    objective_gradient: ObjectiveGradient | None = None,
) -> OptSummary:
    """lme4's checkConv: singular fit, scaled gradient, Hessian definiteness.

    The derivatives are lme4's finite differences of the criterion, or, with
    ``objective_gradient``, the exact gradient and differences of it.
    """
    messages: list[str] = []
    if not opt.optimizer_converged:  # lme4: "convergence code 1 from bobyqa: ..."
        messages.append(
            f"the optimizer ({opt.method}) stopped at its evaluation limit after "
            f"{opt.feval} evaluations without converging (raise maxfev): "
            f"{opt.optimizer_message}"
        )
    if is_singular_theta(opt.theta, lower):
        messages.append("boundary (singular) fit: see is_singular")
        return _with(opt, messages, None, None)
    if not calc_derivs:
        return _with(opt, messages, None, None)
    if objective_gradient is not None:
        grad, hess = _derivatives_from_gradient(objective_gradient, opt.theta)
    else:
        grad, hess = _derivatives(objective, opt.theta, opt.fval)
    mingrad = _min_scaled_gradient(grad, hess)
    if mingrad is None:
        messages.append("unable to evaluate scaled gradient")
    elif mingrad.max() > GRAD_TOL:
        messages.append(
            f"Model failed to converge with max|grad| = {mingrad.max():.6g} "
            f"(tol = {GRAD_TOL}, component {int(np.argmax(mingrad)) + 1})"
        )
    eigen = np.linalg.eigvalsh(hess)
    if np.any(eigen < 0):
        messages.append(
            f"Model failed to converge: degenerate Hessian with {int(np.sum(eigen < 0))} "
            "negative eigenvalues"
        )
    elif eigen.max() > 0 and eigen.min() / eigen.max() < HESS_TOL:
        messages.append(
            "Model is nearly unidentifiable: very large eigenvalue - Rescale variables?"
        )
    return _with(opt, messages, grad, hess)


def _min_scaled_gradient(grad: np.ndarray, hess: np.ndarray) -> np.ndarray | None:
    """lme4's gradient check statistic: min(|H^{-1/2} g|, |g|) elementwise (H = R'R), or
    None where the Hessian is not positive definite."""
    try:
        R = np.linalg.cholesky(hess).T  # hess = R'R, as R's chol()
        scaled = np.linalg.solve(R, grad)
    except np.linalg.LinAlgError:
        return None
    return np.minimum(np.abs(scaled), np.abs(grad))


def gradient_check_failed(opt: OptSummary) -> bool:
    """Whether the optimum failed lme4's scaled-gradient check (False when the check was
    not made: singular fits, calc_derivs=False)."""
    if opt.gradient is None or opt.hessian is None:
        return False
    mingrad = _min_scaled_gradient(opt.gradient, opt.hessian)
    return mingrad is None or bool(mingrad.max() > GRAD_TOL)


def _with(opt: OptSummary, messages: list[str], grad, hess) -> OptSummary:
    return replace(opt, messages=tuple(messages), gradient=grad, hessian=hess)
