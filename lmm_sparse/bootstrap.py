"""Parametric bootstrap: lme4's ``bootMer(type = "parametric")`` and ``confint(method = "boot")``.

Each replicate simulates a response from the fitted model (:mod:`lmm_sparse.simulate`),
refits the model to it and records a statistic of the refit (default: the parameters named
as lme4's ``confint(oldNames = FALSE)``: ``sd_``/``cor_`` of each term, ``sigma``, the fixed
effects). :func:`boot_confint` turns the replicates into percentile (or normal, basic)
intervals computed as R's ``boot.ci``. Formulas and references: docs/bootstrap.md.

Reproducibility: replicate i draws its response from its own generator, seeded by child i
of ``numpy.random.SeedSequence(seed).spawn(nsim)``, so its response equals
``simulate(result, 1, seed=child_i)`` whichever process runs it: serial and parallel runs
give identical replicates.

Speed: a refit shares everything but the response with the fit
(:meth:`LinearMixedModel.with_response`), starts at the fitted theta (as lme4's refit()),
computes no convergence-check derivatives, and, with the default statistic, builds no
LmerResult: beta and sigma come from one evaluation at the optimum. For small models the
criterion and gradient come from :class:`~lmm_sparse.pls.DensePLS`, whose evaluations cost
tens of microseconds instead of a sparse kernel's ~1 ms of per-call overhead.
"""

from __future__ import annotations

import math
import pickle
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import ndtri  # the standard normal quantile (R's qnorm)

from .errors import ModelSpecError
from .optimize import (
    DERIV_STEP,
    OptSummary,
    check_convergence,
    is_singular_theta,
    optimize_theta,
    restart_point,
    with_blas_threads,
)
from .parallel import map_tasks, resolve_jobs
from .parameters import model_parameters, sdcor_from_theta
from .profile.levels import check_level, percent_labels
from .results import make_result
from .simulate import SimulationPlan, draw_responses, make_plan
from .threads import blas_limit

if TYPE_CHECKING:
    from .model import LinearMixedModel
    from .results import LmerResult

__all__ = ["BootstrapResult", "bootstrap", "boot_confint", "lme4_parameters"]

BOOT_TYPES = ("perc", "norm", "basic")
_TASKS_PER_JOB = 8  # chunks per worker process: balances load, few round trips


@dataclass(frozen=True)
class BootstrapResult:
    """The replicates of a parametric bootstrap (lme4's ``bootMer`` object).

    Fields
    ------
    replicates: nsim x statistics (lme4's ``$t``); a failed refit gives a row of NaN.
    t0: the statistics of the original fit (lme4's ``$t0``).
    nsim: number of replicates.
    seed: the root seed: ``bootstrap(result, nsim, seed=seed)`` repeats the run.
    n_failed: replicates whose refit or statistic raised an error.
    failures: "replicate i: error" for each of them.
    messages: warning or convergence message -> number of replicates that gave it
        (lme4's ``boot.all.msgs``), e.g. singular refits.
    seconds: wall time of the replicates.
    """

    replicates: pd.DataFrame
    t0: pd.Series
    nsim: int
    seed: int
    n_failed: int
    failures: tuple[str, ...] = field(repr=False)
    messages: Mapping[str, int]
    seconds: float

    def confint(self, level: float = 0.95, type: str = "perc") -> pd.DataFrame:  # noqa: A002
        """Bootstrap confidence intervals (see :func:`boot_confint`)."""
        return boot_confint(self, level=level, type=type)


# --------------------------------------------------------------------------- parameters


def _parameter_names(model: LinearMixedModel) -> list[str]:
    """lme4's confint(oldNames = FALSE) names: sd_/cor_ per term, sigma, fixed effects."""
    return [p.name for p in model_parameters(model)]


def _parameter_values(
    model: LinearMixedModel, theta: np.ndarray, beta: np.ndarray, sigma: float
) -> np.ndarray:
    """The values in :func:`_parameter_names`' order (sds, correlations, sigma, beta)."""
    return np.concatenate([sdcor_from_theta(model.re, theta, sigma), beta])


def lme4_parameters(result: LmerResult) -> pd.Series:
    """The parameters as lme4's ``confint(oldNames = FALSE)`` names them: the default
    statistic of :func:`bootstrap`."""
    model = result.model
    values = _parameter_values(model, result.theta, result.fixef.to_numpy(), result.sigma)
    return pd.Series(values, index=_parameter_names(model), name="estimate")


# --------------------------------------------------------------------------- one refit


@dataclass(frozen=True)
class _Job:
    """A chunk of replicates: what a worker needs besides its model (picklable)."""

    plan: SimulationPlan
    start: np.ndarray
    scale: np.ndarray
    func: Callable[[Any], Any] | None
    names: tuple[str, ...]
    seeds: tuple[np.random.SeedSequence, ...]
    blas_threads: int


@dataclass(frozen=True)
class _Replicate:
    values: np.ndarray | None
    messages: tuple[str, ...]
    error: str | None


def _evaluator(model: LinearMixedModel, blas_threads: int):
    """The criterion, its gradient (None without one) and the object that evaluates them:
    DensePLS for small q, else the model's workspace."""
    dense = model.dense_pls()
    reml = model.reml
    if dense is not None:
        return (dense, partial(dense.objective, reml=reml),
                partial(dense.objective_and_gradient, reml=reml))
    ws = model.workspace
    objective = with_blas_threads(partial(ws.objective, reml=reml), blas_threads)
    gradient = (with_blas_threads(partial(ws.objective_and_gradient, reml=reml), blas_threads)
                if ws.has_gradient else None)
    return ws, objective, gradient


def _theta_scale(model: LinearMixedModel, theta: np.ndarray, blas_threads: int) -> np.ndarray:
    """Diagonal preconditioner of the refits: s_i = sqrt(d2 f / d theta_i^2) at the fit,
    divided by its largest value, from central differences (lme4's deriv12 step).

    The optimizer then works on x = s * theta, where the criterion's curvature is about
    the same along every axis, so its first quasi-Newton steps are nearly the right
    length (sleepstudy: 10 to 12 instead of 14 evaluations per refit). Since s <= 1, the
    gradient in x is never smaller than in theta: the stopping rule is not looser.
    Where a curvature is not positive (a fit on the boundary), that axis keeps 1.
    """
    _, objective, _ = _evaluator(model, blas_threads)
    f0, h = objective(theta), DERIV_STEP
    curv = np.empty(len(theta))
    for i in range(len(theta)):
        e = np.zeros(len(theta))
        e[i] = h
        curv[i] = (objective(theta + e) - 2 * f0 + objective(theta - e)) / h**2
    ok = np.isfinite(curv) & (curv > 0)
    if not ok.any():
        return np.ones(len(theta))
    root = np.sqrt(np.where(ok, curv, 0.0))
    return np.where(ok, np.maximum(root / root[ok].max(), 1e-3), 1.0)


def _refit_theta(model: LinearMixedModel, start: np.ndarray, scale: np.ndarray,
                 blas_threads: int):
    """Optimize a with_response model's theta from ``start``, as ``fit`` does (L-BFGS-B
    on the exact gradient, a second run from inside the boundary after a singular
    optimum) but in the scaled coordinates x = scale * theta, and with lme4's singular
    check only (no derivative checks). Returns the evaluator and the optimum in theta."""
    engine, objective, gradient = _evaluator(model, blas_threads)

    def f(x: np.ndarray) -> float:
        return objective(x / scale)

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = gradient(x / scale)
        return value, grad / scale

    lower = model.re.lower
    xlower = lower * scale  # 0 stays 0, -inf stays -inf

    def run(theta0: np.ndarray) -> OptSummary:
        opt = optimize_theta(f, theta0 * scale, xlower, "auto", 100_000, 1,
                             fg if gradient is not None else None)
        return replace(opt, theta0=theta0, theta=np.maximum(opt.theta / scale, lower))

    opt = run(start)
    if is_singular_theta(opt.theta, lower):
        second = run(restart_point(opt.theta, lower, model.re.template_columns()))
        best = second if second.fval < opt.fval else opt
        opt = replace(best, theta0=start, feval=opt.feval + second.feval)
    if not np.isfinite(opt.fval):
        raise ModelSpecError(f"the refit's criterion is not finite at theta = {opt.theta}")
    return engine, check_convergence(objective, opt, lower, calc_derivs=False)


def _statistic(model: LinearMixedModel, engine: Any, opt: OptSummary, job: _Job) -> np.ndarray:
    if job.func is None:
        ev = engine.evaluate(opt.theta)
        n, p = model.cp.n, model.cp.p
        sigma = math.sqrt(ev.pwrss / (n - p if model.reml else n))
        return _parameter_values(model, opt.theta, ev.beta, sigma)
    return _as_vector(job.func(make_result(model, opt)), len(job.names))


def _one_replicate(model: LinearMixedModel, y: np.ndarray, job: _Job) -> _Replicate:
    """Refit to y; errors and warnings are recorded, not raised (lme4's bootMer)."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            refit_model = model.with_response(y)
            engine, opt = _refit_theta(refit_model, job.start, job.scale, job.blas_threads)
            values = _statistic(refit_model, engine, opt, job)
            messages.extend(opt.messages)
        except Exception as exc:  # noqa: BLE001 - lme4's bootMer records any refit error
            return _Replicate(None, (), f"{type(exc).__name__}: {exc}")
    messages.extend(str(w.message).split(". ")[0] for w in caught)
    return _Replicate(values, tuple(messages), None)


def _run_job(model: LinearMixedModel, job: _Job) -> list[_Replicate]:
    """The replicates of one chunk (module level: worker processes import it by name)."""
    out = []
    for seed in job.seeds:
        y = draw_responses(model, job.plan, 1, np.random.default_rng(seed))[:, 0]
        out.append(_one_replicate(model, y, job))
    return out


def _as_vector(value: Any, size: int | None = None) -> np.ndarray:
    values = np.atleast_1d(np.asarray(
        value.to_numpy() if isinstance(value, pd.Series) else
        list(value.values()) if isinstance(value, Mapping) else value, dtype=float))
    if values.ndim != 1 or (size is not None and len(values) != size):
        raise ModelSpecError(
            f"the bootstrap statistic must return {size or 'a fixed number of'} numbers, "
            f"got shape {values.shape}"
        )
    return values


def _statistic_names(value: Any, size: int) -> tuple[str, ...]:
    if isinstance(value, pd.Series):
        return tuple(map(str, value.index))
    if isinstance(value, Mapping):
        return tuple(map(str, value))
    return tuple(f"t{j + 1}" for j in range(size))


# --------------------------------------------------------------------------- bootstrap


def bootstrap(
    result: LmerResult,
    nsim: int,
    seed: int | None = None,
    func: Callable[[LmerResult], Any] | None = None,
    *,
    use_u: bool = False,
    n_jobs: int | None = 1,
    progress: bool = True,
) -> BootstrapResult:
    """Parametric bootstrap of a fit: lme4's ``bootMer(m, FUN, nsim, seed,
    type = "parametric", use.u)``.

    Parameters
    ----------
    nsim: number of replicates.
    seed: root seed (an integer); None draws one, recorded in the result's ``seed``.
    func: statistic of a refit, ``func(LmerResult)`` -> number, array, Series or dict
        (Series index or dict keys name the columns); default :func:`lme4_parameters`,
        computed without building an LmerResult. With n_jobs != 1 it must be a
        module-level function (worker processes import it).
    use_u: simulate conditional on the fitted random effects (lme4's use.u = TRUE).
    n_jobs: worker processes (-1: one per core); the replicates do not depend on it.
    progress: show a progress bar (tqdm) on stderr.
    """
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ModelSpecError(f"nsim must be a positive integer, got {nsim!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ModelSpecError(f"seed must be a non-negative integer or None, got {seed!r}")
    if func is not None and not callable(func):
        raise ModelSpecError(f"func must be callable, got {type(func).__name__}")
    model = result.model
    t0_value = lme4_parameters(result) if func is None else func(result)
    t0 = pd.Series(_as_vector(t0_value), name="t0")
    t0.index = pd.Index(_statistic_names(t0_value, len(t0)))
    root = np.random.SeedSequence(seed)
    seeds = root.spawn(int(nsim))
    jobs = resolve_jobs(n_jobs)
    if jobs > 1 and func is not None:
        _check_picklable(func)
    size = 1 if jobs == 1 else max(1, math.ceil(nsim / (jobs * _TASKS_PER_JOB)))
    threads = model.workspace.blas_threads() if jobs == 1 else 1
    plan = make_plan(result, use_u=use_u)
    with blas_limit(1):
        scale = _theta_scale(model, result.theta, threads)
    tasks = [
        _Job(plan=plan, start=result.theta.copy(), scale=scale, func=func,
             names=tuple(t0.index), seeds=tuple(seeds[i : i + size]), blas_threads=threads)
        for i in range(0, nsim, size)
    ]
    start = time.perf_counter()
    # one BLAS thread but in the evaluations (as in fit), set once for all refits
    with blas_limit(1):
        chunks = map_tasks(_run_job, model, tasks, n_jobs=n_jobs, progress=progress,
                           desc="bootstrap")
    seconds = time.perf_counter() - start
    return _collect([r for chunk in chunks for r in chunk], t0, int(nsim),
                    int(root.entropy), seconds)


def _check_picklable(func: Callable[..., Any]) -> None:
    """Worker processes receive func by pickling (by name): fail early and clearly."""
    try:
        pickle.dumps(func)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ModelSpecError(
            f"with n_jobs != 1, func must be a module-level function (worker processes "
            f"import it by name); {getattr(func, '__qualname__', func)!r} cannot be sent: {exc}"
        ) from None


def _collect(reps: list[_Replicate], t0: pd.Series, nsim: int, seed: int,
             seconds: float) -> BootstrapResult:
    table = np.full((nsim, len(t0)), np.nan)
    failures, messages = [], Counter()
    for i, rep in enumerate(reps):
        if rep.error is not None:
            failures.append(f"replicate {i}: {rep.error}")
            continue
        table[i] = rep.values
        messages.update(set(rep.messages))
    return BootstrapResult(
        replicates=pd.DataFrame(table, columns=t0.index),
        t0=t0,
        nsim=nsim,
        seed=seed,
        n_failed=len(failures),
        failures=tuple(failures),
        messages=dict(messages),
        seconds=seconds,
    )


# --------------------------------------------------------------------------- intervals


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """R's boot:::norm.inter: order statistic (R + 1) alpha of the finite values, or
    between two order statistics interpolated on the normal quantile scale (Davison &
    Hinkley 1997, eq. 5.8); the extreme ones when (R + 1) alpha is outside [1, R]."""
    t = np.sort(t[np.isfinite(t)])
    R = len(t)
    if R == 0:
        return np.full(len(alpha), np.nan)
    out = np.empty(len(alpha))
    for j, a in enumerate(alpha):
        rk = (R + 1) * a
        k = int(math.trunc(rk))
        if k == rk and 1 <= k <= R:
            out[j] = t[k - 1]
        elif k <= 0:
            out[j] = t[0]
        elif k >= R:
            out[j] = t[R - 1]
        else:
            z, z0, z1 = ndtri(a), ndtri(k / (R + 1)), ndtri((k + 1) / (R + 1))
            out[j] = t[k - 1] + (z - z0) / (z1 - z0) * (t[k] - t[k - 1])
    return out


def boot_confint(boot: BootstrapResult, level: float = 0.95,
                 type: str = "perc") -> pd.DataFrame:  # noqa: A002 - lme4's argument name
    """Bootstrap confidence intervals, as lme4's ``confint(m, method = "boot",
    boot.type = type)`` (``boot::boot.ci`` per statistic), one row per statistic.

    "perc" (default): the (1 -+ level)/2 quantiles of the replicates (norm.inter);
    "basic": 2 t0 minus the (1 +- level)/2 quantiles; "norm": t0 - bias -+ z sd with
    bias = mean - t0 and sd the replicates' standard deviation. Failed replicates (NaN)
    are left out, as boot.ci does.
    """
    if type not in BOOT_TYPES:
        raise ModelSpecError(f"type must be one of {BOOT_TYPES}, got {type!r}")
    level = check_level(level)
    alpha = np.array([(1 - level) / 2, (1 + level) / 2])
    rows = []
    for name in boot.replicates.columns:
        t = boot.replicates[name].to_numpy(dtype=float)
        t0 = float(boot.t0[name])
        if type == "perc":
            rows.append(_norm_inter(t, alpha))
        elif type == "basic":
            rows.append(2 * t0 - _norm_inter(t, alpha[::-1]))
        else:
            finite = t[np.isfinite(t)]
            if len(finite) < 2:
                rows.append(np.full(2, np.nan))
                continue
            merr = np.std(finite, ddof=1) * ndtri((1 + level) / 2)
            centre = 2 * t0 - finite.mean()  # t0 - bias
            rows.append(np.array([centre - merr, centre + merr]))
    return pd.DataFrame(np.array(rows).reshape(-1, 2), index=boot.replicates.columns,
                        columns=percent_labels(level))
