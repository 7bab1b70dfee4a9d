"""One parameter's profile: zeta along a walk from the estimate, and its exact crossings.

zeta at a value of the profiled parameter is ``sign(value - estimate) sqrt(D(value) -
D_hat)``, with ``D(value)`` the nuisance optimum of its problem
(:mod:`lmm_sparse.profile.problems`) and ``D_hat`` the ML deviance. The walk follows
lme4's ``profile.merMod``: steps of about ``delta`` in zeta, from the estimate outwards in
both directions, until ``|zeta|`` exceeds the limit or the parameter reaches its bound.
The crossings of given zeta values (the quantiles of the requested levels) are then
found by Brent's root finding on zeta itself between the two walk points that bracket
them, instead of lme4's interpolating splines.

:func:`profile_task` does one parameter; it is module level because
:func:`lmm_sparse.parallel.map_tasks` sends it to the worker processes by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.optimize

from ..parameters import Parameter
from .engine import Engine
from .problems import make_problem, minimize_nuisance
from .setup import ProfileSetup

if TYPE_CHECKING:
    from ..model import LinearMixedModel

__all__ = ["EndStatus", "ProfilePoint", "ProfileTask", "ParameterProfile", "Profiler",
           "profile_task"]

EndStatus = Literal["cutoff", "bound", "failed"]

# Brent's method stops when the bracket is this fraction of the walk step that
# bracketed the root (the step is ~1/8 of the half-interval: ~1e-5 of its width).
_ROOT_XTOL = 1e-4
_SHIFT_REL = 0.01  # first step from the estimate: 1% of it (lme4's pw * 1.01) ...
_SHIFT_ABS = 1e-3  # ... but at least this, times sigma for sds, absolute for correlations


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

    parameter: Parameter
    points: tuple[ProfilePoint, ...]
    lower_end: EndStatus
    upper_end: EndStatus
    crossings: tuple[float, ...]


class Profiler:
    """Evaluates zeta along one parameter (walk and root finding)."""

    def __init__(self, model: LinearMixedModel, task: ProfileTask) -> None:
        self.setup = task.setup
        self.par = task.setup.parameters[task.index]
        self.estimate = float(task.setup.estimates[task.index])
        self.problem = make_problem(Engine(model), task.setup, self.par)
        self.x_hat = self.problem.start()

    def at(self, value: float, x0: np.ndarray) -> ProfilePoint:
        """zeta at ``value``: the nuisance minimization from the neighbouring point's
        optimum ``x0`` (lme4's "prev" start) and from the estimate's (its "global"
        start), the better kept: along a walk the previous optimum can lead into a local
        minimum that the other start avoids (measured on a 3 x 3 term, oats)."""
        x, dev = minimize_nuisance(self.problem, value, x0)
        if not np.array_equal(x0, self.x_hat):
            x2, dev2 = minimize_nuisance(self.problem, value, self.x_hat)
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


def profile_task(model: LinearMixedModel, task: ProfileTask) -> ParameterProfile:
    """Profile one parameter (module level: the worker processes import it by name)."""
    prof = Profiler(model, task)
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
