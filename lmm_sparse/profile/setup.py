"""Before any walk: the ML optimum every profile is centred on, and the walk's settings.

The profile is always of the ML deviance (lme4's ``devfun2`` calls ``refitML``): a REML
fit is first refitted by maximum likelihood from its own theta with the fit's optimizer.
:func:`make_setup` gathers what each parameter's profile needs into one picklable
:class:`ProfileSetup` (the ML estimates of every parameter, theta, the fixed effects'
standard errors, the deviance, the cut-off and step of the walk), which is sent with each
task to the worker processes; :func:`check_settings` rejects bad walk settings first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.stats

from ..crossprod import inverse_gram
from ..errors import ModelSpecError
from ..optimize import optimize_with_restart
from ..parameters import Parameter, model_parameters, sdcor_from_theta
from ..pls import profiled_deviance

if TYPE_CHECKING:
    from ..model import LinearMixedModel
    from ..results import LmerResult

__all__ = ["ProfileSetup", "make_setup", "check_settings"]


@dataclass(frozen=True)
class ProfileSetup:
    """What every parameter's profile needs: the ML optimum and the walk's settings.

    Picklable (no model): sent to the worker processes with each task.

    Fields
    ------
    parameters: all parameters (:func:`lmm_sparse.parameters.model_parameters`).
    estimates: their ML estimates (lme4's ``opt``), in the same order.
    theta: the ML estimate of theta.
    stderr: ML standard errors of the fixed effects (the first step of their walks).
    deviance: the ML deviance at the optimum (lme4's ``basedev``).
    cutoff: |zeta| at which the walk stops (lme4: sqrt(qchisq(1 - alphamax, nptot))).
    delta: the walk's target step in zeta.
    max_points: points per direction at most (lme4's maxpts).
    max_mult: a step is at most this multiple of the previous one (lme4's maxmult).
    """

    parameters: tuple[Parameter, ...]
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


def make_setup(result: LmerResult, model: LinearMixedModel, alpha_max: float,
               max_points: int, delta: float | None, delta_cutoff: float,
               max_mult: float) -> ProfileSetup:
    """The ML optimum of ``result`` and the walk's settings (see :class:`ProfileSetup`)."""
    parameters = model_parameters(model)
    theta = _ml_theta(result, model)
    ev = model.workspace.evaluate(theta)
    n, p = model.cp.n, model.cp.p
    sigma = math.sqrt(ev.pwrss / n)
    stderr = sigma * np.sqrt(np.diag(inverse_gram(ev.RX)))
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


def check_settings(alpha_max: float, max_points: int, delta: float | None,
                   delta_cutoff: float, max_mult: float) -> None:
    """An error naming the first of the walk's settings that is out of its range."""
    if not 0.0 < float(alpha_max) < 1.0:
        raise ModelSpecError(f"alpha_max must be in (0, 1), got {alpha_max!r}")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ModelSpecError(f"max_points must be an integer >= 2, got {max_points!r}")
    if delta is not None and not float(delta) > 0.0:
        raise ModelSpecError(f"delta must be positive, got {delta!r}")
    if not float(delta_cutoff) > 0.0:
        raise ModelSpecError(f"delta_cutoff must be positive, got {delta_cutoff!r}")
    if not float(max_mult) > 1.0:
        raise ModelSpecError(f"max_mult must be greater than 1, got {max_mult!r}")
