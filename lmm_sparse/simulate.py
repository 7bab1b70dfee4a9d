"""Simulated responses and refits with a new response: lme4's ``simulate()`` and ``refit()``.

``simulate`` draws responses from the fitted model (docs/bootstrap.md):

    y* = X beta + Z_c b_c + sigma (Z_s Lambda_s(theta) u + eps),   u ~ N(0, I), eps ~ N(0, I_n)

at the estimates (beta, theta, sigma); ``Z_c b_c`` holds the random effects the simulation
is conditioned on (their conditional modes: lme4's ``use.u = TRUE`` or ``re.form``) and
``Z_s Lambda_s u`` the ones drawn anew (all of them by default, lme4's ``use.u = FALSE``,
``re.form = NA``). ``refit`` fits the same model to a new response, reusing everything that
does not depend on y (:meth:`LinearMixedModel.with_response`) and starting from the fitted
theta, as lme4's ``refit()`` does.

A fit with prior weights w and an offset o draws ``y* = o + ... + sigma (Z_s Lambda_s u +
W^-1/2 eps)``: row i's residual has sd sigma / sqrt(w_i), its variance in the model. (lme4
1.1's ``simulate`` for a linear mixed model draws every residual with sd sigma, ignoring the
weights; a refit keeps the weights and offset, so lme4's draws would not come from the
fitted model.)

Draws come from a NumPy ``Generator`` seeded by ``seed``: for each simulation in turn the
values of u (q_s, the columns of the drawn terms), then its n residuals. So
``simulate(res, 1, seed=s)`` is the first column of ``simulate(res, nsim, seed=s)``, and a
bootstrap replicate is reproducible from its own seed alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import FormulaError, ModelSpecError
from .predict import select_random_effects

if TYPE_CHECKING:
    from .model import LinearMixedModel
    from .results import LmerResult

__all__ = ["SimulationPlan", "make_plan", "draw_responses", "simulate", "refit"]

# Normal draws held at once (32 MiB).
_CHUNK_VALUES = 2**22
_UNSET: Any = object()  # re_form not given: it follows use_u


@dataclass(frozen=True)
class SimulationPlan:
    """What a simulation needs besides the model, small and picklable (bootstrap workers).

    Fields
    ------
    mean: X beta plus the conditioned random effects, (n,).
    theta: relative covariance parameters of the drawn random effects.
    sigma: residual standard deviation.
    drawn: indices of the terms whose random effects are drawn anew (lme4's order).
    noise_scale: 1 / sqrt(w) per row for prior weights w (residual sd sigma / sqrt(w_i)),
        or None without weights. The mean includes the offset.
    """

    mean: np.ndarray
    theta: np.ndarray
    sigma: float
    drawn: tuple[int, ...]
    noise_scale: np.ndarray | None = None


def make_plan(result: LmerResult, use_u: bool = False, re_form: Any = _UNSET) -> SimulationPlan:
    """The plan for simulating from a fit; ``use_u``/``re_form`` as lme4's ``simulate``.

    ``re_form`` names the random effects the simulation is conditioned on: "~0" or NA
    (none, the default, lme4's ``use.u = FALSE``), None (all, ``use.u = TRUE``) or a
    formula of whole terms such as "~(1 | g)"; the others are drawn.
    """
    if re_form is _UNSET:
        re_form = None if use_u else "~0"
    elif use_u:
        raise ModelSpecError("give either use_u=True or re_form, not both (as lme4's simulate)")
    model = result.model
    selection = select_random_effects(model, re_form)
    mean = model.X @ result.fixef.to_numpy()
    drawn = []
    for i, (term, mask) in enumerate(zip(model.re.terms, selection.masks, strict=True)):
        if not mask.any():
            drawn.append(i)
        elif not mask.all():
            raise FormulaError(
                f"re_form {re_form!r} names only some coefficients of {term.bar.source}: a "
                "simulation conditions on whole terms"
            )
        else:
            mean = mean + np.einsum("rk,rk->r", term.X, result._b[i][term.codes])
    weights = model.prior.weights
    return SimulationPlan(mean=model.prior.add_offset(mean), theta=result.theta.copy(),
                          sigma=float(result.sigma), drawn=tuple(drawn),
                          noise_scale=None if weights is None else 1.0 / np.sqrt(weights))


def draw_responses(
    model: LinearMixedModel, plan: SimulationPlan, nsim: int, rng: np.random.Generator
) -> np.ndarray:
    """``nsim`` simulated responses, (n, nsim): for each in turn its u, then its residuals.

    Each simulation goes through the same operations whatever ``nsim`` is, so a column is
    bitwise the same drawn alone or among others (what makes bootstrap replicates
    identical in serial and parallel runs); draws are taken in chunks of rows.
    """
    n = model.cp.n
    terms = [model.re.terms[i] for i in plan.drawn]
    templates = [model.re.template(plan.theta, i).T for i in plan.drawn]
    sizes = [t.nlevels * t.k for t in terms]
    qs = sum(sizes)
    out = np.empty((n, nsim))
    per = max(1, _CHUNK_VALUES // (qs + n))
    for start in range(0, nsim, per):
        noise = rng.standard_normal((min(per, nsim - start), qs + n))  # row: u (qs), eps (n)
        for j, row in enumerate(noise, start=start):
            eps = row[qs:]
            sim = eps.copy() if plan.noise_scale is None else eps * plan.noise_scale
            offset = 0
            for term, Tt, size in zip(terms, templates, sizes, strict=True):
                b = row[offset : offset + size].reshape(term.nlevels, term.k) @ Tt  # (T u)'
                sim += np.einsum("rk,rk->r", term.X, b[term.codes])  # Z_i b
                offset += size
            out[:, j] = plan.mean + plan.sigma * sim
    return out


def simulate(
    result: LmerResult,
    nsim: int = 1,
    seed: int | np.random.SeedSequence | np.random.Generator | None = None,
    *,
    use_u: bool = False,
    re_form: Any = _UNSET,
) -> np.ndarray:
    """Responses simulated from the fitted model, (n, nsim): lme4's ``simulate(m, nsim,
    seed, use.u, re.form)`` for a linear mixed model (see the module docstring).

    ``seed``: anything ``numpy.random.default_rng`` accepts; the same seed gives the same
    draws. Rows are the observations used in the fit.
    """
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ModelSpecError(f"nsim must be a positive integer, got {nsim!r}")
    plan = make_plan(result, use_u=use_u, re_form=re_form)
    return draw_responses(result.model, plan, int(nsim), np.random.default_rng(seed))


def refit(result: LmerResult, y: Any, *, calc_derivs: bool = True,
          optimizer: str = "auto") -> LmerResult:
    """The same model fitted to a new response ``y``, as lme4's ``refit(m, newresp)``.

    ``y`` holds one value per observation used in the fit. The structure, Z'Z, Z'X and the
    kernel's symbolic analysis are reused; the optimization starts at the fitted theta.
    Warnings (singular fit, convergence) are raised as by ``lmer``.
    """
    model = result.model.with_response(y)
    return model.fit(optimizer=optimizer, start=result.theta, calc_derivs=calc_derivs)
