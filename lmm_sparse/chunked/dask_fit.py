"""lmer() on a Dask DataFrame: two map/reduce passes, then the unchanged engine.

Pass 1 (:mod:`~lmm_sparse.chunked.scan`) and pass 2 (:mod:`~lmm_sparse.chunked.partial`)
run as Dask tasks, one per partition, reduced by a binary tree of merges, on whatever
scheduler is active (a ``distributed`` Client if one exists, else Dask's default). The
client then holds only the merged summaries, whose size depends on the numbers of levels
and columns, not on n; the optimization runs locally on the small PLS system.

The result is a :class:`DaskLmerResult`: every estimate as in memory; ``fitted`` and
``residuals`` are lazy Dask Series (one more pass when computed), indexed by the rows of
the data that were used; methods that need the n data rows in memory (simulate, refit,
bootstrap, Kenward-Roger, anova's contrasts, predict on new data) raise a DataError.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..design import FixedDesign, model_columns, quote_names
from ..errors import DataError
from ..formula import parse_formula
from ..hypothesis import resolve_ddf
from ..model import (
    LinearMixedModel,
    _check_identifiable,
    _check_residual_left,
    check_options,
)
from ..pls import PLSWorkspace
from ..results import LmerResult
from ..summary import format_summary
from ..terms import lme4_term_order, make_re_structure
from ..weights import PriorWeights
from .finish import finish_cross_products
from .partial import chunk_sums, merge_sums
from .scan import ChunkPlan, complete_rows, factor_sets, make_plan, merge_summaries, scan_chunk

__all__ = ["DaskLinearMixedModel", "DaskLmerResult", "map_reduce"]


def _not_in_memory(what: str) -> DataError:
    return DataError(
        f"{what} needs the data rows in memory, which a fit on a Dask DataFrame does not "
        "keep; fit the pandas frame (ddf.compute()) if it fits in memory"
    )


def map_reduce(frame: Any, mapper: Any, merger: Any, *args: Any) -> Any:
    """``mapper(partition, *args)`` for every partition, merged pairwise in a tree of
    tasks; the client receives only the final merge."""
    import dask

    shared = [dask.delayed(a, traverse=False) for a in args]  # one graph node each
    level = [dask.delayed(mapper)(part, *shared) for part in frame.to_delayed()]
    while len(level) > 1:
        pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
        level = [dask.delayed(merger)(*pair) if len(pair) == 2 else pair[0] for pair in pairs]
    return level[0].compute()


class DaskLinearMixedModel(LinearMixedModel):
    """A linear mixed model whose data are a Dask DataFrame (see the module docstring).

    Holds what :class:`~lmm_sparse.model.LinearMixedModel` holds except n-long arrays:
    ``fixed.X`` and ``fixed.y`` have no rows, the terms of ``re`` no codes; ``frame``,
    ``X``, ``y``, ``Z`` and :meth:`with_response` raise a DataError. ``data`` is the Dask
    frame of the used columns and ``plan`` the :class:`~lmm_sparse.chunked.scan.ChunkPlan`.
    """

    def __init__(self, formula: str, data: Any, reml: bool = True, kernel: str = "auto"
                 ) -> None:
        start = time.perf_counter()
        check_options(reml, kernel)
        self.formula, self.reml, self.kernel_name = formula, bool(reml), kernel
        meta = data._meta  # the empty pandas frame with the data's columns and dtypes
        self.parsed = quote_names(parse_formula(formula), meta.columns)
        columns = tuple(model_columns(self.parsed, meta))
        self.data = data[list(columns)]
        summary = map_reduce(self.data, scan_chunk, merge_summaries, columns,
                             factor_sets(self.parsed))
        self.plan = make_plan(self.parsed, columns, summary)
        done = finish_cross_products(map_reduce(self.data, chunk_sums, merge_sums, self.plan),
                                     self.plan)
        p = len(done.keep)
        self.fixed = FixedDesign(y=np.empty(0), X=np.empty((0, p)), names=done.names,
                                 dropped=done.dropped, spec=self.plan.fixed_spec.rhs,
                                 keep=done.keep)
        self.re = make_re_structure(self.plan.empty_terms())
        _check_identifiable(self.re, p, done.cp.n)
        self.cp = done.cp
        self.prior = PriorWeights()  # no prior weights or offset on this path (lmer refuses them)
        # The check reads only |y|: a one-element array of that norm stands for y.
        _check_residual_left(self.cp, np.array([done.y_norm]), self.parsed.response)
        self.workspace = PLSWorkspace(self.re, self.cp, kernel=kernel)
        self.setup_seconds = time.perf_counter() - start

    @property
    def frame(self) -> pd.DataFrame:
        raise _not_in_memory("the model frame")

    @property
    def X(self) -> np.ndarray:
        raise _not_in_memory("the fixed-effects matrix X")

    @property
    def y(self) -> np.ndarray:
        raise _not_in_memory("the response vector y")

    @property
    def Z(self) -> sp.csc_matrix:
        raise _not_in_memory("the random-effects matrix Z")

    def with_response(self, y: np.ndarray) -> LinearMixedModel:
        raise _not_in_memory("a refit with a new response")

    def fit(self, *args: Any, **kwargs: Any) -> DaskLmerResult:
        """Optimize theta locally (arguments as :meth:`LinearMixedModel.fit`)."""
        # Re-issued one frame up, so that they point at the caller of lmer() as in memory.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = super().fit(*args, **kwargs)
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=3)
        fitted, residuals = self.lazy_fitted(result)
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        return DaskLmerResult(**{**values, "fitted": fitted, "residuals": residuals})

    def lazy_fitted(self, result: LmerResult) -> tuple[Any, Any]:
        """Conditional fitted values and residuals as lazy Dask Series."""
        # result._b is in lme4's term order; the plan builds the terms in formula order.
        order = lme4_term_order([t.nlevels for t in self.plan.empty_terms()])
        b = [np.empty(0)] * len(order)
        for position, bar in enumerate(order):
            b[bar] = result._b[position]
        beta = result.fixef.to_numpy()
        out = []
        for name in ("fitted", "residuals"):
            out.append(self.data.map_partitions(
                _chunk_fitted, self.plan, self.fixed.keep, beta, tuple(b), name,
                meta=pd.Series(dtype=float, name=name),
            ))
        return out[0], out[1]


def _chunk_fitted(chunk: pd.DataFrame, plan: ChunkPlan, keep: tuple[int, ...],
                  beta: np.ndarray, b: tuple[np.ndarray, ...], name: str) -> pd.Series:
    """One partition's fitted values X beta + Z b (or residuals y - fitted)."""
    frame = complete_rows(chunk, plan.columns)
    if len(frame) == 0:
        return pd.Series(np.empty(0), index=frame.index, name=name)
    y, X = plan.fixed_matrices(frame)
    fitted = X[:, list(keep)] @ beta
    for term, bi in zip(plan.raw_terms(frame), b, strict=True):
        fitted += np.einsum("rk,rk->r", term.X, bi[term.codes])
    return pd.Series(y - fitted if name == "residuals" else fitted, index=frame.index,
                     name=name)


@dataclasses.dataclass(frozen=True)
class DaskLmerResult(LmerResult):
    """A fit on a Dask DataFrame: :class:`~lmm_sparse.results.LmerResult` with ``fitted``
    and ``residuals`` as lazy Dask Series; what needs the data rows in memory raises."""

    def coef_table(self, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        if resolve_ddf(ddf) == "kenward-roger":
            raise _not_in_memory("Kenward-Roger's adjustment")
        return super().coef_table(ddf)

    def anova(self, type: int | str = 3, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        raise _not_in_memory("anova()'s hypothesis matrices")

    def confint(self, method: str = "profile", level: float = 0.95, **options: Any
                ) -> pd.DataFrame:
        if method == "boot":
            raise _not_in_memory("the parametric bootstrap")
        return super().confint(method, level, **options)

    def predict(self, newdata: Any = None, re_form: Any = None,
                allow_new_levels: bool = False) -> Any:
        """Without arguments the lazy fitted values; anything else raises."""
        if newdata is None and re_form is None:
            return self.fitted
        raise _not_in_memory("predict() with newdata or re_form")

    def simulate(self, nsim: int = 1, seed: Any = None, **options: Any) -> np.ndarray:
        raise _not_in_memory("simulate()")

    def refit(self, y: Any, **options: Any) -> LmerResult:
        raise _not_in_memory("refit()")

    def bootstrap(self, *args: Any, **kwargs: Any):
        raise _not_in_memory("bootstrap()")

    def summary(self) -> str:
        """As lme4's summary(); computes the residuals (n floats) for their quartiles."""
        residuals = np.asarray(self.residuals.compute(), dtype=float)
        return format_summary(dataclasses.replace(self, residuals=residuals))
