"""The model's parameters in lme4's "sd/cor" parameterization, and their names.

lme4 reports the random-effect part of a fit not as theta but as the standard deviations
and correlations of each term's effects, then the residual standard deviation, then the
fixed effects, named by ``confint(oldNames = FALSE)`` (``sd_Days|Subject``,
``cor_Days.(Intercept)|Subject``, ``sigma``, ``Days``). Profiles, Wald and bootstrap
intervals and the bootstrap's default statistic all use this list, so it lives here, in
one place:

* :class:`Parameter` and :func:`model_parameters`: every parameter with its kind, position
  and range;
* :func:`varpar_names`, :func:`varpar_estimates`: the variance parameters' names and the
  fit's values;
* :func:`sdcor_from_theta`: theta and sigma to sds and correlations (lme4's Cv_to_Sv);
* :func:`resolve_which`: a user's selection (names, "theta_", "beta_") to indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from .errors import ModelSpecError
from .terms import ReStructure

if TYPE_CHECKING:
    from .model import LinearMixedModel
    from .results import LmerResult

__all__ = [
    "Parameter",
    "ParameterKind",
    "model_parameters",
    "fitted_model",
    "varpar_names",
    "varpar_estimates",
    "sdcor_from_theta",
    "resolve_which",
]

ParameterKind = Literal["sd", "cor", "sigma", "beta"]


@dataclass(frozen=True)
class Parameter:
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


def _term_parameters(re: ReStructure, start: int) -> list[Parameter]:
    out: list[Parameter] = []
    for i, term in enumerate(re.terms):
        names, group = term.coef_names, term.group
        for col in range(term.k):  # theta's order: the lower triangle column by column
            for row in range(col, term.k):
                index = start + len(out)
                if row == col:
                    out.append(Parameter(f"sd_{names[col]}|{group}", "sd", index, i,
                                         row, col, lower=0.0))
                else:
                    out.append(Parameter(f"cor_{names[row]}.{names[col]}|{group}", "cor",
                                         index, i, row, col, lower=-1.0, upper=1.0))
    return out


def model_parameters(model: LinearMixedModel) -> tuple[Parameter, ...]:
    """All parameters of the profile, in lme4's order: per term its sds and correlations
    (theta's order), then ``sigma``, then the fixed effects (``model.fixed.names``)."""
    pars = _term_parameters(model.re, 0)
    m = len(pars)
    pars.append(Parameter("sigma", "sigma", m, lower=0.0))
    for j, name in enumerate(model.fixed.names):
        pars.append(Parameter(str(name), "beta", m + 1 + j, column=j))
    return tuple(pars)


def fitted_model(result: LmerResult) -> LinearMixedModel:
    """The model behind a fitted result, or an error naming what was passed instead."""
    model = getattr(result, "model", None)
    if model is None or not hasattr(model, "workspace"):
        raise ModelSpecError(
            f"a fitted LmerResult (from lmer) is needed, got {type(result).__name__}"
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
    model = fitted_model(result)
    return [p.name for p in model_parameters(model) if p.kind != "beta"]


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
    model = fitted_model(result)
    values = sdcor_from_theta(model.re, np.asarray(result.theta, dtype=float), result.sigma)
    return pd.Series(values, index=varpar_names(result), name="estimate")


def resolve_which(parameters: Sequence[Parameter], which) -> tuple[int, ...]:
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
            raise ModelSpecError(
                f"unknown parameter {item!r} in which; choose among {list(by_name)} or the "
                "groups 'theta_' (variance parameters) and 'beta_' (fixed effects)"
            )
    if not chosen:
        raise ModelSpecError(f"which={which!r} selects no parameter")
    return tuple(sorted(chosen))
