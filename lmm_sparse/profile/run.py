"""Running the profiles: ``profile()`` (lme4's ``profile()``, a long table of points) and
``profile_zeta()`` (zeta at given values, no walk).

:func:`run_profiles` is the pipeline both ``profile()`` and ``confint_profile()`` share:
check the settings, select the parameters, find the ML optimum
(:mod:`lmm_sparse.profile.setup`), walk each parameter (:mod:`lmm_sparse.profile.walk`)
serially or on worker processes, with the fit's BLAS threads, and leave the workspace
factored at the fit's theta. A profile point below the optimum's deviance means the fit
had not converged: warned.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import ConvergenceWarning, ModelSpecError
from ..parallel import map_tasks
from ..parameters import fitted_model, model_parameters, resolve_which
from ..threads import blas_limit
from .levels import zeta_targets
from .setup import ProfileSetup, check_settings, make_setup
from .walk import ParameterProfile, Profiler, ProfileTask, profile_task

if TYPE_CHECKING:
    from ..results import LmerResult

__all__ = ["profile", "profile_zeta", "run_profiles"]

_PROFILE_COLUMNS = ("parameter", "value", "zeta")
# A profile point whose deviance is below the optimum's by more than this means the fit
# had not reached its optimum: warned (lme4 stops with an error beyond 1e-9). Below it
# the effect on zeta is negligible (1e-3 moves zeta by 2.6e-4 at 1.96).
_LOWER_DEVIANCE_TOL = 1e-3


def run_profiles(result: LmerResult, which, targets: tuple[float, ...],
                 limit: float | None, alpha_max: float, max_points: int,
                 delta: float | None, delta_cutoff: float, max_mult: float, progress: bool,
                 n_jobs: int | None) -> tuple[ProfileSetup, list[ParameterProfile]]:
    """The ML optimum and the profiles of the parameters ``which`` selects, each walked
    until ``|zeta|`` passes ``limit`` (default the setup's cut-off) and every target."""
    model = fitted_model(result)
    check_settings(alpha_max, max_points, delta, delta_cutoff, max_mult)
    selected = resolve_which(model_parameters(model), which)
    ws = model.workspace
    theta_fit = np.asarray(result.theta, dtype=float).copy()
    try:
        # the fit's BLAS threads (one unless the evaluations have big dense products)
        with blas_limit(ws.blas_threads()):
            setup = make_setup(result, model, alpha_max, max_points, delta, delta_cutoff,
                               max_mult)
            reach = setup.cutoff if limit is None else limit
            reach = max([reach, *(abs(t) for t in targets)])
            tasks = [ProfileTask(setup, i, targets, reach) for i in selected]
            profiles = map_tasks(profile_task, model, tasks, n_jobs=n_jobs,
                                 progress=progress, desc="profile")
    finally:
        ws.evaluate(theta_fit)  # leave the workspace factored at the fit's theta
    _warn_lower_deviance(profiles)
    return setup, profiles


def _warn_lower_deviance(profiles: list[ParameterProfile]) -> None:
    worst = min((p.deviance_change for prof in profiles for p in prof.points
                 if np.isfinite(p.deviance_change)), default=0.0)
    if worst < -_LOWER_DEVIANCE_TOL:
        warnings.warn(
            f"profiling found a deviance {-worst:.3g} below the fit's optimum: the fit had "
            "not converged (zeta is set to 0 there); refit from the profile's better point",
            ConvergenceWarning, stacklevel=3,
        )


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
    which: parameters to profile: names as :func:`~lmm_sparse.parameters.varpar_names`
        and ``result.fixef.index``, or the groups ``"theta_"`` (sds, correlations and
        sigma) and ``"beta_"`` (fixed effects); default all.
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
    setup, profiles = run_profiles(result, which, zeta_targets(levels), None, alpha_max,
                                   max_points, delta, delta_cutoff, max_mult, progress, n_jobs)
    return _profile_table(setup, profiles)


def profile_zeta(result: LmerResult, parameter: str, values: Sequence[float]) -> np.ndarray:
    """zeta of one parameter at given values (a diagnostic: no walk).

    Each value's nuisance minimization starts from the ML estimate (and from inside the
    boundary where a variance collapses). ``profile_zeta(res, "sigma", ci.loc["sigma"])``
    is ``(-z, z)`` for an interval at level ``2 Phi(z) - 1``.
    """
    model = fitted_model(result)
    parameters = model_parameters(model)
    index = resolve_which(parameters, [parameter])[0]
    par = parameters[index]
    values = np.asarray(values, dtype=float)
    outside = values[(values < par.lower) | (values > par.upper) | ~np.isfinite(values)]
    if outside.size:
        raise ModelSpecError(f"{parameter} must lie in [{par.lower}, {par.upper}], "
                             f"got {outside.tolist()}")
    ws = model.workspace
    theta_fit = np.asarray(result.theta, dtype=float).copy()
    try:
        with blas_limit(ws.blas_threads()):
            setup = make_setup(result, model, 0.01, 100, None, 1 / 8, 10.0)
            prof = Profiler(model, ProfileTask(setup, index, (), setup.cutoff))
            return np.array([prof.at(float(v), prof.x_hat).zeta for v in values])
    finally:
        ws.evaluate(theta_fit)


def _profile_table(setup: ProfileSetup, profiles: list[ParameterProfile]) -> pd.DataFrame:
    names = [p.name for p in setup.parameters]
    clash = set(names) & set(_PROFILE_COLUMNS)
    if clash:
        raise ModelSpecError(
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

