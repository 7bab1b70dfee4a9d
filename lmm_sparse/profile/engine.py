"""The ML deviance at a given theta (and sigma), on the model's own PLS workspace.

Every deviance a profile needs is one ``PLSWorkspace.evaluate`` (no n-sized work) plus a
closed form. With beta profiled out by the PLS solution, the deviance at theta and sigma
is ``ldL2 + pwrss / sigma^2 + n log(2 pi sigma^2)`` (docs/profile.md, [P2]);
:class:`Engine` evaluates it, the ML criterion with sigma profiled out, and the exact
theta-gradient of the fixed-sigma one where the kernel has the selected inverse.

Two helpers about theta's layout serve the constrained problems: :func:`theta_positions`
(where a template entry sits in theta) and :func:`fold_theta` (theta's sign symmetry,
which lets the nuisance minimizations leave theta unbounded).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..gradient import gradient_parts, kernel_logdet_sums
from ..pls import PLSEval
from ..terms import ReStructure

if TYPE_CHECKING:
    from ..model import LinearMixedModel

__all__ = ["Engine", "theta_positions", "fold_theta"]


class Engine:
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

    def evaluate(self, theta: np.ndarray) -> PLSEval:
        return self.ws.evaluate(theta)

    def ml(self, theta: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        """The ML criterion (sigma and beta profiled out) and its gradient."""
        if grad:
            return self.ws.objective_and_gradient(theta, False)
        return self.ws.objective(theta, False), None

    def fixed_scale_gradient(self, ev: PLSEval, beta: np.ndarray,
                             inv_sigma2: float) -> np.ndarray:
        u = self.ws.spherical_modes(replace(ev, beta=beta))  # the factor is ev's: no refactor
        templates = self.re.templates(ev.theta)
        logdet, dpwrss = gradient_parts(
            self.re, self.cp, self.ws.ztz(), templates, u, None, self.cp.to_y0(beta),
            self.cp.centred_RX(ev.RX), kernel_logdet_sums(self.ws.kernel, self.cp, templates),
        )
        return logdet + inv_sigma2 * dpwrss

    def fixed_scale(self, ev: PLSEval, pwrss: float, sigma2: float) -> float:
        """``ldL2 + pwrss / sigma^2 + n log(2 pi sigma^2)``: -2 log-likelihood at sigma."""
        return ev.ldL2 + pwrss / sigma2 + self.n * math.log(2.0 * math.pi * sigma2)


def theta_positions(re: ReStructure, i: int) -> np.ndarray:
    """Index into theta of each entry T_i[r, c] (r >= c) of term i's template; -1 above."""
    k = re.terms[i].k
    pos = np.full((k, k), -1, dtype=int)
    pos.T[np.triu_indices(k)] = np.arange(re.theta_offsets[i], re.theta_offsets[i + 1])
    return pos


def fold_theta(re: ReStructure, theta: np.ndarray) -> np.ndarray:
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
