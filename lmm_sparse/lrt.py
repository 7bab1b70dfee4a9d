"""Likelihood-ratio tests between nested models, as lme4's ``anova(m0, m1, ...)``.

Models are sorted by their number of parameters ``npar = p + len(theta) + 1``; each is
tested against the one before it with ``Chisq = 2 max(0, logLik_i - logLik_{i-1})`` on
``npar_i - npar_{i-1}`` degrees of freedom (Wilks 1938). REML criteria of models with
different fixed effects are not comparable, so, as lme4 does by default, REML fits are
refitted by maximum likelihood first (starting from their theta). The chi-square
reference is conservative when the smaller model puts a variance on its boundary (zero):
the test of a variance component is then a mixture of chi-squares (Self & Liang 1987);
like lme4, the table reports the plain chi-square p-value.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .errors import DataError, ModelSpecError

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["anova", "likelihood_ratio_table", "ml_refit"]


def ml_refit(result: LmerResult) -> LmerResult:
    """The same model fitted by maximum likelihood (itself if it already is)."""
    if not result.reml:
        return result
    from .model import LinearMixedModel

    model = result.model
    refit = LinearMixedModel(model.formula, model.frame, reml=False, kernel=model.kernel_name,
                             weights=model.prior.weights, offset=model.prior.offset_argument)
    return refit.fit(start=result.theta)


def _npar(result: LmerResult) -> int:
    return len(result.fixef) + len(result.theta) + 1


def likelihood_ratio_table(
    *results: LmerResult, names: list[str] | None = None, refit: bool = True
) -> pd.DataFrame:
    """The table of lme4's ``anova(m0, m1, ...)``: npar, aic, bic, loglik, deviance,
    chisq, df, p_value, one row per model (sorted by npar)."""
    from .results import LmerResult

    if len(results) < 2:
        raise ModelSpecError("a likelihood-ratio test needs at least two fitted models")
    for i, r in enumerate(results):
        if not isinstance(r, LmerResult):
            raise ModelSpecError(f"model {i + 1} is a {type(r).__name__}, not a fitted model "
                                 "(an LmerResult from lmer())")
    names = list(names) if names is not None else [f"m{i}" for i in range(len(results))]
    if len(names) != len(results) or len(set(names)) != len(names):
        raise ModelSpecError(f"names must be {len(results)} distinct labels, got {names!r}")
    nobs = {r.nobs for r in results}
    if len(nobs) > 1:
        raise DataError(
            f"models were fitted to different numbers of observations ({sorted(nobs)}): "
            "likelihood-ratio tests need the same rows (check missing values in the "
            "variables only some models use)"
        )
    first = results[0].model.fixed.y
    for i, r in enumerate(results[1:], start=1):
        if not np.array_equal(r.model.fixed.y, first):
            raise DataError(
                f"model {i + 1} ({r.model.parsed.response!r}) and model 1 "
                f"({results[0].model.parsed.response!r}) have different responses (or "
                "rows): their likelihoods cannot be compared"
            )
    if any(r.reml for r in results):
        if not refit:
            raise ModelSpecError("REML fits cannot be compared by likelihood ratio; "
                                 "use refit=True (refit by ML) or fit with reml=False")
        warnings.warn("refitting model(s) with ML (instead of REML)", UserWarning, stacklevel=3)
        results = tuple(ml_refit(r) for r in results)
    npar = np.array([_npar(r) for r in results])
    order = np.argsort(npar, kind="stable")
    rows, previous = [], None
    for i in order:
        r = results[i]
        loglik = -r.deviance / 2
        row = {"npar": int(npar[i]), "aic": r.deviance + 2 * npar[i],
               "bic": r.deviance + math.log(r.nobs) * npar[i], "loglik": loglik,
               "deviance": r.deviance, "chisq": math.nan, "df": math.nan, "p_value": math.nan}
        if previous is not None:
            df = int(npar[i] - previous[0])
            chisq = 2 * max(0.0, loglik - previous[1])
            row.update(chisq=chisq, df=df,
                       p_value=float(stats.chi2.sf(chisq, df)) if df > 0 else math.nan)
        rows.append(row)
        previous = (npar[i], loglik)
    table = pd.DataFrame(rows, index=pd.Index([names[i] for i in order], name="model"))
    table["df"] = table["df"].astype("Int64")
    return table


def anova(
    *results: LmerResult,
    type: int | str = 3,
    ddf: str | None = "satterthwaite",
    names: list[str] | None = None,
    refit: bool = True,
) -> pd.DataFrame:
    """lme4/lmerTest's ``anova()``: F tests of one model's fixed terms (``type``, ``ddf``),
    or a likelihood-ratio table for two or more models (``names``, ``refit``)."""
    if len(results) == 1:
        from .hypothesis import anova_table
        from .results import LmerResult

        if not isinstance(results[0], LmerResult):
            raise ModelSpecError(f"anova() needs fitted models (LmerResult), got "
                                 f"{results[0].__class__.__name__}")
        return anova_table(results[0], type, ddf)
    return likelihood_ratio_table(*results, names=names, refit=refit)
