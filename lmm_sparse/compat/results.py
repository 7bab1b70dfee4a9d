"""A fitted statsmodels-style model: statsmodels' names and conventions over an LmerResult.

statsmodels' conventions, kept here so that code written for ``MixedLMResults`` runs:

* ``cov_re`` (DataFrame) and ``vcomp`` are in the units of the data (lme4's ``VarCorr``),
  ``scale`` is the residual variance sigma^2;
* ``params`` packs the fixed effects, the lower triangle of ``cov_re / scale`` (row by
  row) and ``vcomp / scale``, named "Group Var", "Group x Time Cov", "cask Var", ...;
* ``bse`` (and ``tvalues``, ``pvalues``, ``conf_int()``) are for those packed parameters,
  from minus the inverse Hessian of the profiled log-likelihood (:mod:`.hessian`); the
  fixed-effects part therefore includes the covariance parameters' uncertainty and differs
  slightly from lme4's ``vcov``. ``summary()`` shows ``sqrt(scale) * bse`` beside each
  variance parameter, as statsmodels does;
* ``llf`` is the REML log-likelihood for REML fits; ``aic`` and ``bic`` are NaN for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..results import LmerResult
from .hessian import CovBlock, psi_of_theta, statsmodels_pcov

if TYPE_CHECKING:
    from .model import MixedLM

__all__ = ["MixedLMResults", "make_results"]


@dataclass(frozen=True)
class MixedLMResults:
    """statsmodels' ``MixedLMResults`` names for a fit by lmm_sparse.

    Fields
    ------
    model: the :class:`~.model.MixedLM`.
    lmer_result: lmm_sparse's own :class:`~lmm_sparse.results.LmerResult` of the fit.
    fe_params: fixed effects (Series; intercept named "Intercept").
    cov_re: random-effects covariance of the re_formula effects, in the data's units.
    cov_re_unscaled: ``cov_re / scale`` (ndarray).
    vcomp: variance of each variance component, ordered by name (ndarray).
    scale: residual variance.
    llf: log-likelihood (REML for REML fits).
    method: "REML" or "ML".
    converged: no convergence doubt (a boundary fit counts as converged).
    params: packed parameters (see the module docstring).
    nobs, k_fe, k_re, k_re2, k_vc, df_resid: counts as statsmodels defines them.
    fittedvalues, resid: conditional fitted values and residuals, indexed as the data.
    groups: the group of every row used.
    """

    model: MixedLM = field(repr=False)
    lmer_result: LmerResult = field(repr=False)
    fe_params: pd.Series
    cov_re: pd.DataFrame
    cov_re_unscaled: np.ndarray = field(repr=False)
    vcomp: np.ndarray
    scale: float
    llf: float
    method: str
    converged: bool
    params: pd.Series = field(repr=False)
    nobs: int
    k_fe: int
    k_re: int
    k_re2: int
    k_vc: int
    df_resid: int
    fittedvalues: pd.Series = field(repr=False)
    resid: pd.Series = field(repr=False)
    groups: np.ndarray = field(repr=False)

    @property
    def reml(self) -> bool:
        return self.method == "REML"

    @property
    def lme4_formula(self) -> str:
        return self.model.lme4_formula

    @cached_property
    def _pcov(self) -> np.ndarray:
        engine = self.lmer_result.model
        return statsmodels_pcov(engine, _cov_blocks(self.model, engine),
                                self.lmer_result.theta, self.fe_params.to_numpy())

    def cov_params(self) -> pd.DataFrame:
        """Covariance of the packed parameters, minus the inverse Hessian."""
        names = self.params.index
        return pd.DataFrame(self._pcov, index=names, columns=names)

    @cached_property
    def bse(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._pcov)), index=self.params.index)

    @property
    def bse_fe(self) -> pd.Series:
        return self.bse.iloc[: self.k_fe]

    @property
    def bse_re(self) -> pd.Series:
        """Standard errors of the variance parameters in the data's units, statsmodels'
        ``sqrt(scale) * bse`` (the factor is statsmodels' convention, kept as is)."""
        return np.sqrt(self.scale) * self.bse.iloc[self.k_fe:]

    @property
    def tvalues(self) -> pd.Series:
        return self.params / self.bse

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(2 * norm.sf(np.abs(self.tvalues)), index=self.params.index)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals of the packed parameters (normal quantiles), columns 0 and 1."""
        q = norm.ppf(1 - alpha / 2)
        return pd.DataFrame({0: self.params - q * self.bse, 1: self.params + q * self.bse})

    @property
    def aic(self) -> float:
        """-2 llf + 2 df, df = number of params + 1 (the scale); NaN for REML fits."""
        return np.nan if self.reml else -2 * self.llf + 2 * (len(self.params) + 1)

    @property
    def bic(self) -> float:
        return np.nan if self.reml else -2 * self.llf + np.log(self.nobs) * (len(self.params) + 1)

    @cached_property
    def random_effects(self) -> dict[Any, pd.Series]:
        """Group label -> conditional modes of its effects: the re_formula effects (named
        as cov_re), then each variance component's, named ``name[column]`` as statsmodels."""
        t = self.model.translation
        engine = self.lmer_result.model
        frame, groups = engine.frame, self.groups
        labels = sorted(pd.unique(groups))
        pieces: dict[Any, tuple[list[str], list[float]]] = {g: ([], []) for g in labels}
        for comp in t.components:
            i = term_index(engine, comp.source)
            term, b = engine.re.terms[i], self.lmer_result._b[i]
            first = _first_rows(term.codes, term.nlevels)
            records = frame.iloc[first].to_dict("records")
            for level, (row, values) in enumerate(zip(first, records, strict=True)):
                names, vals = pieces[groups[row]]
                if comp.kind == "re":
                    names.extend(self.cov_re.columns)
                    vals.extend(b[level])
                else:
                    names.append(comp.label(values))
                    vals.append(float(b[level, 0]))
        return {g: pd.Series(vals, index=names, dtype=float)
                for g, (names, vals) in pieces.items()}

    def predict(self, exog: pd.DataFrame | None = None) -> pd.Series:
        """Fixed-effects predictions X beta (statsmodels' ``predict``): of the fitted rows,
        or of new data through the formula (lmm_sparse's ``predict(re_form="~0")``)."""
        if exog is None:
            X = self.lmer_result.model.fixed.X
            return pd.Series(X @ self.fe_params.to_numpy(), index=self.fittedvalues.index)
        values = self.lmer_result.predict(exog, re_form="~0")
        return pd.Series(values, index=exog.index if len(exog) == len(values) else None)

    def summary(self, alpha: float = 0.05):
        """The fit laid out as statsmodels' ``summary()`` (print it, or ``.tables``)."""
        from .summary import make_summary

        return make_summary(self, alpha)

    def __str__(self) -> str:
        return str(self.summary())


def _first_rows(codes: np.ndarray, nlevels: int) -> np.ndarray:
    """For every level code, the first row holding it (every level occurs: unused levels
    are dropped when the engine builds the term)."""
    present, first = np.unique(codes, return_index=True)
    assert len(present) == nlevels
    return first


def term_index(engine, source: str) -> int:
    """Position of the bar term written ``source`` among the engine's (lme4-ordered) terms."""
    return next(i for i, t in enumerate(engine.re.terms) if t.bar.source == source)


def _cov_blocks(model: MixedLM, engine) -> list[CovBlock]:
    """The covariance parameter blocks in statsmodels' order (re first, then the vcs)."""
    blocks = []
    for comp in model.translation.components:
        i = term_index(engine, comp.source)
        offsets = engine.re.theta_offsets
        blocks.append(CovBlock(i, engine.re.terms[i].k, slice(offsets[i], offsets[i + 1])))
    return blocks


def make_results(model: MixedLM, res: LmerResult) -> MixedLMResults:
    """statsmodels' view of a fit of ``model.engine(reml)``."""
    t = model.translation
    engine = res.model
    scale = res.sigma**2
    fe = pd.Series(res.fixef.to_numpy(), index=model.exog_names)
    psi = psi_of_theta(engine.re, _cov_blocks(model, engine), res.theta)  # cov_re, vcomp / scale
    k = model.k_re
    cov_unscaled = np.zeros((k, k))
    rows, cols = np.tril_indices(k)
    cov_unscaled[rows, cols] = cov_unscaled[cols, rows] = psi[: model.k_re2]
    vc_unscaled = psi[model.k_re2 :]
    names = model.exog_re_names
    param_names = list(model.exog_names)
    param_names += [f"{names[a]} Var" if a == b else f"{names[b]} x {names[a]} Cov"
                    for a, b in zip(rows, cols, strict=True)]
    param_names += [f"{c.name} Var" for c in t.vcs]
    params = pd.Series(np.concatenate([fe.to_numpy(), psi]), index=param_names)
    used = _used_rows(t.data, engine)
    index = t.data.index[used]
    return MixedLMResults(
        model=model,
        lmer_result=res,
        fe_params=fe,
        cov_re=pd.DataFrame(scale * cov_unscaled, index=names, columns=names),
        cov_re_unscaled=cov_unscaled,
        vcomp=scale * vc_unscaled,
        scale=scale,
        llf=res.loglik,
        method="REML" if res.reml else "ML",
        converged=res.converged,
        params=params,
        nobs=res.nobs,
        k_fe=model.k_fe,
        k_re=model.k_re,
        k_re2=model.k_re2,
        k_vc=model.k_vc,
        df_resid=res.nobs - len(fe),
        fittedvalues=pd.Series(res.fitted, index=index),
        resid=pd.Series(res.residuals, index=index),
        groups=t.data[t.group_column].to_numpy()[used],
    )


def _used_rows(data: pd.DataFrame, engine) -> np.ndarray:
    """Which rows of the data the fit used (complete in every column of the engine's model
    frame, which keeps the data's order)."""
    return data[list(engine.frame.columns)].notna().all(axis=1).to_numpy()
