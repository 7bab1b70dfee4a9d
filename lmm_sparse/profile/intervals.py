"""Profile-likelihood confidence intervals, as lme4's ``confint(method = "profile")``.

The interval at level ``1 - alpha`` is ``{phi : |zeta(phi)| <= z}``. Computed afresh
(:func:`confint_profile` without a table), each end is the root of ``zeta = +-z`` that
the walk located by Brent's method (:mod:`lmm_sparse.profile.walk`); read off a table
from ``profile()``, it is the monotone (PCHIP) interpolation of value against zeta,
exact where the table holds the crossing. Where the profile stays below the quantile up
to a bound (a standard deviation at 0, a correlation at +-1) the end is that bound, as
in lme4's ``confint.thpr``; where the walk failed it is NaN, with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.interpolate
import scipy.stats

from ..errors import ConvergenceWarning, ModelSpecError
from ..parameters import Parameter, fitted_model, model_parameters, resolve_which
from .levels import check_level, percent_labels
from .run import run_profiles
from .walk import EndStatus

if TYPE_CHECKING:
    from ..results import LmerResult

__all__ = ["confint_profile"]


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
    which: parameters (names, "theta_", "beta_"; see :func:`~lmm_sparse.profile.profile`);
        default all.
    profile: a table from :func:`~lmm_sparse.profile.profile` to read the intervals off
        (by monotone interpolation of value against zeta, exact where the table holds the
        crossing, i.e. computed with ``levels=[level]``); default: profile now, locating
        each end by root finding on zeta.
    progress, n_jobs: as :func:`~lmm_sparse.profile.profile`.

    Returns
    -------
    A DataFrame indexed by parameter name (lme4's order: sds and correlations per term,
    sigma, fixed effects) with columns named as R's ("2.5 %", "97.5 %"). An end where the
    profile stays within the level up to the parameter's bound is that bound (0 for an sd,
    -1 or 1 for a correlation).
    """
    level = check_level(level)
    labels = percent_labels(level)
    model = fitted_model(result)
    parameters = model_parameters(model)
    selected = resolve_which(parameters, which)
    z = float(scipy.stats.norm.ppf((1.0 + level) / 2.0))
    if profile is not None:
        if which is None:  # the parameters the table holds
            present = set(profile["parameter"])
            selected = tuple(i for i in selected if parameters[i].name in present)
        rows = [_interval_from_table(profile, parameters[i], z) for i in selected]
    else:
        _, profiles = run_profiles(result, which, (-z, z), z, 0.01, 100, None, 1 / 8, 10.0,
                                   progress, n_jobs)
        rows = []
        for prof in profiles:
            par = prof.parameter
            rows.append((_endpoint(prof.crossings[0], prof.lower_end, par.lower, par.name),
                         _endpoint(prof.crossings[1], prof.upper_end, par.upper, par.name)))
    index = pd.Index([parameters[i].name for i in selected])
    return pd.DataFrame(rows, index=index, columns=labels, dtype=float)


def _interval_from_table(table: pd.DataFrame, par: Parameter,
                         z: float) -> tuple[float, float]:
    """Both ends of one parameter's interval from a profile table.

    From the estimate (a zeta == 0 row) outwards, the first pair of rows bracketing -z
    (+z) gives the end by interpolation of value against zeta (PCHIP over the monotone run
    of points, as lme4's back-spline; exact at a tabulated crossing). Without a bracket:
    the bound if the table reaches it, else NaN.
    """
    rows = table[table["parameter"] == par.name].sort_values("value")
    if rows.empty:
        raise ModelSpecError(f"the profile table has no rows for {par.name!r}")
    values, zetas = rows["value"].to_numpy(float), rows["zeta"].to_numpy(float)
    centre = np.flatnonzero(zetas == 0.0)
    if centre.size == 0:
        raise ModelSpecError(f"the profile table has no estimate (zeta = 0) for {par.name!r}")
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
