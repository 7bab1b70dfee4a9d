"""``mixedlm()`` and ``MixedLM``: statsmodels' model object on lmm_sparse's engine.

The statsmodels call is translated once (:mod:`.translate`) into an lme4 formula, shown
as ``model.lme4_formula``; ``fit()`` runs :class:`~lmm_sparse.model.LinearMixedModel` on
it and wraps the :class:`~lmm_sparse.results.LmerResult` in statsmodels' names
(:class:`~.results.MixedLMResults`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, ModelSpecError
from ..model import LinearMixedModel
from .results import MixedLMResults, make_results, term_index
from .translate import Translation, translate

__all__ = ["MixedLM", "mixedlm"]

# statsmodels fit() settings of its own optimizers: lmm_sparse always optimizes with
# L-BFGS-B on the exact gradient (docs/optimizer.md), so these change nothing here.
_IGNORED_FIT = frozenset({"method", "niter_sa", "full_output", "maxiter", "gtol", "disp"})
# Settings that would change the model or the answer: refused rather than ignored.
_REFUSED_FIT = {
    "start_params": "start values in statsmodels' parameterization are not supported",
    "fe_pen": "penalized fixed effects are not supported",
    "cov_pen": "a penalty on the covariance is not supported",
    "free": "constrained covariances are not supported (for independent random effects "
            "write (x || g) in lmm_sparse.lmer)",
}


class MixedLM:
    """A statsmodels-style linear mixed model (see :func:`mixedlm` for the arguments).

    Fields
    ------
    formula: the statsmodels formula (fixed effects).
    lme4_formula: the equivalent lme4 formula this model is fitted with.
    translation: the full translation (:class:`~.translate.Translation`).
    nobs, k_fe, k_re, k_re2, k_vc, exog_names, exog_re_names, endog_names: statsmodels'
        model attributes.
    """

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        groups: Any = None,
        re_formula: str | None = None,
        vc_formula: dict[str, str] | None = None,
        subset: Any = None,
        missing: str = "none",
    ) -> None:
        self.translation: Translation = translate(
            formula, data, groups, re_formula, vc_formula, subset, missing
        )
        self.formula = formula
        self.lme4_formula = self.translation.formula
        self.missing = missing
        self._engines: dict[bool, LinearMixedModel] = {}
        engine = self.engine(True)  # built now, so bad input fails here as in statsmodels
        self.nobs = engine.cp.n
        self.k_fe = engine.cp.p
        re = self.translation.re
        self.exog_names = [_fe_name(n) for n in engine.fixed.names]
        self.endog_names = engine.parsed.response
        self.exog_re_names = [] if re is None else [
            self.translation.group_name if n == "(Intercept)" else n
            for n in engine.re.terms[term_index(engine, re.source)].coef_names
        ]
        self.k_re = len(self.exog_re_names)
        self.k_re2 = self.k_re * (self.k_re + 1) // 2
        self.k_vc = len(self.translation.vcs)

    @classmethod
    def from_formula(
        cls,
        formula: str,
        data: pd.DataFrame,
        re_formula: str | None = None,
        vc_formula: dict[str, str] | None = None,
        subset: Any = None,
        use_sparse: bool = False,
        missing: str = "none",
        *args: Any,
        groups: Any = None,
        **kwargs: Any,
    ) -> MixedLM:
        """statsmodels' ``MixedLM.from_formula`` (``use_sparse`` is ignored: Z is always
        sparse here)."""
        if args or kwargs:
            extra = ", ".join([repr(a) for a in args] + list(kwargs))
            raise ModelSpecError(f"MixedLM.from_formula got arguments it does not support: "
                                 f"{extra}")
        return cls(formula, data, groups, re_formula, vc_formula, subset, missing)

    def engine(self, reml: bool) -> LinearMixedModel:
        """The lmm_sparse model of the translated formula (REML or ML), built once."""
        if reml not in self._engines:
            t = self.translation
            engine = LinearMixedModel(t.formula, t.data, reml=reml)
            _check_missing(engine, t, self.missing)
            self._engines[reml] = engine
        return self._engines[reml]

    def fit(self, reml: bool = True, do_cg: bool = True, **kwargs: Any) -> MixedLMResults:
        """Fit by REML (default) or ML, as statsmodels' ``MixedLM.fit``.

        statsmodels' optimizer settings (``method``, ``niter_sa``, ``full_output``,
        ``maxiter``, ``gtol``, ``disp``) are accepted and ignored; settings that would
        change the model (``start_params``, ``fe_pen``, ``cov_pen``, ``free``,
        ``do_cg=False``) raise ModelSpecError.
        """
        if do_cg is not True:
            raise ModelSpecError("do_cg=False (results at the start values, unoptimized) is "
                                 "not supported")
        for key in kwargs:
            if key in _REFUSED_FIT:
                raise ModelSpecError(f"fit({key}=...): {_REFUSED_FIT[key]}")
            if key not in _IGNORED_FIT:
                raise ModelSpecError(f"fit() got an unknown argument {key!r}")
        if not isinstance(reml, bool | np.bool_):
            raise ModelSpecError(f"reml must be True or False, got {reml!r}")
        return make_results(self, self.engine(bool(reml)).fit())

    def __repr__(self) -> str:
        return f"MixedLM({self.lme4_formula!r})"


def mixedlm(
    formula: str,
    data: pd.DataFrame,
    groups: Any = None,
    re_formula: str | None = None,
    vc_formula: dict[str, str] | None = None,
    subset: Any = None,
    use_sparse: bool = False,
    missing: str = "none",
) -> MixedLM:
    """statsmodels' ``smf.mixedlm`` on lmm_sparse's engine.

    Parameters
    ----------
    formula: the fixed effects, ``"y ~ x + C(f)"``.
    data: a pandas DataFrame; never modified.
    groups: a column name, or an array with one value per row of data (by position, as
        statsmodels). A constant array means one group: variance components are then
        crossed factors, ``(1 | a) + (1 | b)``.
    re_formula: the correlated random effects per group ("1", "~x", "0 + x"); default a
        random intercept, none when vc_formula is given (statsmodels' rule).
    vc_formula: name -> formula of a variance component: "0 + C(a)" (an effect per level
        of a within each group), "0 + x" (a random slope of a numeric x), "0 + C(a):x".
    subset: booleans (one per row) or index labels of the rows to use.
    use_sparse: ignored (Z is always sparse).
    missing: "none" (default, as statsmodels: missing values in the columns the model
        uses are an error), "raise" (the same) or "drop" (incomplete rows are dropped).

    The lme4 formula the model is fitted with is ``mixedlm(...).lme4_formula``.
    """
    return MixedLM(formula, data, groups, re_formula, vc_formula, subset, missing)


def _fe_name(name: str) -> str:
    return "Intercept" if name == "(Intercept)" else name


def _check_missing(engine: LinearMixedModel, t: Translation, missing: str) -> None:
    """statsmodels' missing="none" refuses rows with missing values; lmm_sparse drops them."""
    dropped = len(t.data) - engine.cp.n
    if dropped == 0 or missing == "drop":
        return
    counts = t.data[list(engine.frame.columns)].isna().sum()
    worst = counts[counts > 0]
    named = ", ".join(f"{c!r}{' (groups)' if c == t.group_column else ''}: {k}"
                      for c, k in worst.items())
    raise DataError(f"{dropped} row(s) have missing values in the columns the model uses "
                    f"({named}); pass missing='drop' to drop them (statsmodels' missing="
                    f"{missing!r} refuses them)")
