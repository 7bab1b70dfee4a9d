"""Pass 1 over the chunks: the global state every chunk's cross-products must share.

A chunk alone does not know the levels of a grouping factor (a chunk may miss some), nor
the columns of X (formulaic encodes a text column with the levels it sees), nor how many
rows survive the removal of incomplete rows. :func:`scan_chunk` summarises one chunk in a
few distinct values; :func:`merge_summaries` unions two summaries; :func:`make_plan` turns
the union into a :class:`ChunkPlan`: formulaic specs built once on a small prototype frame
holding every distinct value, so every chunk gets the same columns in the same order as the
in-memory fit, and the global level codes of every grouping factor.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from formulaic import model_matrix
from formulaic.errors import DataMismatchWarning

from ..design import (
    RawTerm,
    _check_magnitude,
    check_frame_values,
    dependency_message,
    group_codes,
    intercept_name,
)
from ..errors import DataError, FormulaError, ModelSpecError
from ..formula import ParsedFormula

__all__ = [
    "ChunkSummary",
    "TermCoding",
    "ChunkPlan",
    "complete_rows",
    "scan_chunk",
    "merge_summaries",
    "make_plan",
]

# Distinct values kept per numeric column: enough for any number used as a factor (C(x));
# a continuous column has more and needs none (formulaic keeps no state for it).
MAX_DISTINCT = 10_000
# Complete rows kept from the first chunks: real rows for the prototype frame (so that
# transforms such as np.log see valid values) and for the pilot centre of X.
SAMPLE_ROWS = 1_000


def complete_rows(chunk: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The used columns of a chunk's complete rows (lme4's na.omit), values checked; the
    chunk's own index is kept (it names the rows in errors and in lazy fitted values)."""
    frame = chunk.loc[:, list(columns)].dropna(how="any")
    check_frame_values(frame)
    return frame


@dataclass(frozen=True)
class ChunkSummary:
    """What pass 1 keeps of one chunk (or of several, merged).

    Fields
    ------
    rows: rows of the chunk; complete: rows without a missing value in the used columns.
    missing: per used column, its number of missing values.
    values: per used column its distinct values among the complete rows, or None for a
        numeric column with more than MAX_DISTINCT of them.
    combos: per set of grouping factors, their distinct combinations (a frame).
    sample: up to SAMPLE_ROWS complete rows.
    """

    rows: int
    complete: int
    missing: pd.Series
    values: dict[str, pd.Series | None]
    combos: dict[tuple[str, ...], pd.DataFrame]
    sample: pd.DataFrame


def _is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _distinct(values: pd.Series) -> pd.Series | None:
    out = values.drop_duplicates().reset_index(drop=True)
    return None if _is_number(out) and len(out) > MAX_DISTINCT else out


def scan_chunk(
    chunk: pd.DataFrame, columns: tuple[str, ...], factor_sets: tuple[tuple[str, ...], ...]
) -> ChunkSummary:
    """Pass 1's map step: one chunk's summary."""
    frame = complete_rows(chunk, columns)
    return ChunkSummary(
        rows=len(chunk),
        complete=len(frame),
        missing=chunk.loc[:, list(columns)].isna().sum(),
        values={c: _distinct(frame[c]) for c in columns},
        combos={f: frame.loc[:, list(f)].drop_duplicates().reset_index(drop=True)
                for f in factor_sets},
        sample=frame.iloc[:SAMPLE_ROWS],
    )


def _union(a: pd.Series | None, b: pd.Series | None) -> pd.Series | None:
    if a is None or b is None:
        return None
    return _distinct(pd.concat([a, b], ignore_index=True))


def merge_summaries(a: ChunkSummary, b: ChunkSummary) -> ChunkSummary:
    """Pass 1's reduce step (associative, so any tree of merges gives the same union)."""
    sample = pd.concat([a.sample, b.sample]) if len(a.sample) < SAMPLE_ROWS else a.sample
    return ChunkSummary(
        rows=a.rows + b.rows,
        complete=a.complete + b.complete,
        missing=a.missing + b.missing,
        values={c: _union(v, b.values[c]) for c, v in a.values.items()},
        combos={f: pd.concat([u, b.combos[f]], ignore_index=True).drop_duplicates()
                .reset_index(drop=True) for f, u in a.combos.items()},
        sample=sample.iloc[:SAMPLE_ROWS],
    )


@dataclass(frozen=True)
class TermCoding:
    """Global level codes of one grouping factor (or interaction of factors).

    ``lookup`` holds every distinct combination of the factors' values, ``codes`` their
    codes, computed by the in-memory path's own :func:`~lmm_sparse.design.group_codes` on
    the distinct combinations: same levels, same order as on the whole frame.
    """

    factors: tuple[str, ...]
    lookup: pd.Index
    codes: np.ndarray
    levels: pd.Index

    @classmethod
    def from_combos(cls, factors: tuple[str, ...], combos: pd.DataFrame) -> TermCoding:
        combos = combos.reset_index(drop=True)
        codes, levels = group_codes(combos, factors)
        lookup = (pd.Index(combos[factors[0]]) if len(factors) == 1
                  else pd.MultiIndex.from_frame(combos.loc[:, list(factors)]))
        return cls(factors=factors, lookup=lookup, codes=codes, levels=levels)

    def codes_of(self, frame: pd.DataFrame) -> np.ndarray:
        keys = (frame[self.factors[0]] if len(self.factors) == 1
                else pd.MultiIndex.from_frame(frame.loc[:, list(self.factors)]))
        # Looked up once per distinct value: a lookup per row of text values costs a
        # conversion of every row to Python strings (measured 0.9 s per million rows).
        local, distinct = pd.factorize(keys)
        where = self.lookup.get_indexer(distinct)
        if (where < 0).any():  # cannot happen when the plan was made from the same data
            raise DataError(f"grouping factor {':'.join(self.factors)!r} has a level the "
                            "first pass over the data did not see (did the data change?)")
        return self.codes[where][local]


def _refuse_stateful(spec: Any, what: str) -> None:
    """formulaic's stateful transforms (center, scale, poly, splines) learn from all rows;
    a chunk would learn from its own rows only, so they are refused, not approximated."""
    state = getattr(spec, "transform_state", None) or {}
    if state:
        raise ModelSpecError(
            f"{what} uses stateful transform(s) {', '.join(map(repr, state))}, whose state "
            "(a mean, a scale, polynomial coefficients) would have to be computed over all "
            "rows: not supported for chunked (Dask) data; compute the column first, e.g. "
            "ddf.assign(x_c=ddf.x - ddf.x.mean())"
        )


def _mismatch(exc: Warning | Exception, what: str) -> DataError:
    return DataError(
        f"{what}: a chunk holds factor values the first pass did not keep "
        f"({dependency_message(exc)}); a numeric column used as a factor (C(x)) may have "
        f"at most {MAX_DISTINCT} distinct values in a chunked fit"
    )


def _build(spec_or_formula: Any, frame: pd.DataFrame, what: str) -> Any:
    """A formulaic model matrix on a chunk: mismatched levels become a DataError."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("error", DataMismatchWarning)
            return model_matrix(spec_or_formula, frame, na_action="ignore")
    except DataMismatchWarning as exc:
        raise _mismatch(exc, what) from None


@dataclass(frozen=True)
class ChunkPlan:
    """Everything a chunk needs to build its part of the design consistently.

    Fields
    ------
    parsed: the parsed formula; columns: the columns it reads.
    fixed_spec: formulaic specs of ``response ~ fixed`` (lhs and rhs).
    names_all: names of all columns of the full X (before aliased ones are dropped).
    term_specs, coef_names, codings: per bar term in formula order, the spec of its
        model matrix, its column names and its grouping factor's global codes.
    shift, y_shift: a pilot centre of X's columns and of y (means over the sample rows),
        subtracted before the sums so that uncentred columns (a year, x + 1e6) do not make
        the sums huge; :mod:`~lmm_sparse.chunked.finish` removes them exactly.
    """

    parsed: ParsedFormula
    columns: tuple[str, ...]
    fixed_spec: Any = field(repr=False)
    names_all: tuple[str, ...]
    term_specs: tuple[Any, ...] = field(repr=False)
    coef_names: tuple[tuple[str, ...], ...]
    codings: tuple[TermCoding, ...] = field(repr=False)
    shift: np.ndarray
    y_shift: float

    def fixed_matrices(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """y and the full X of a chunk's complete rows, magnitudes checked."""
        mm = _build(self.fixed_spec, frame, "the fixed effects")
        y = np.asarray(mm.lhs, dtype=float).ravel()
        X = np.asarray(mm.rhs, dtype=float)
        _check_magnitude(y, self.parsed.response)
        for j, name in enumerate(self.names_all):
            _check_magnitude(X[:, j], name)
        return y, X

    def raw_terms(self, frame: pd.DataFrame) -> list[RawTerm]:
        """The bar terms on a chunk's complete rows, with the global level codes."""
        out, matrices = [], {}
        for bar, spec, names, coding in zip(self.parsed.bars, self.term_specs,
                                            self.coef_names, self.codings, strict=True):
            X = matrices.get(bar.lhs)
            if X is None:
                mm = _build(spec, frame, f"random-effects term {bar.source}")
                X = matrices[bar.lhs] = np.ascontiguousarray(np.asarray(mm, dtype=float))
                for j, name in enumerate(names):
                    _check_magnitude(X[:, j], f"{name} in {bar.source}")
            out.append(RawTerm(bar=bar, X=X, coef_names=names, codes=coding.codes_of(frame),
                               levels=coding.levels, spec=spec))
        return out

    def empty_terms(self) -> list[RawTerm]:
        """The bar terms without rows: what the structure (levels, k, layout) needs."""
        return [
            RawTerm(bar=bar, X=np.empty((0, len(names))), coef_names=names,
                    codes=np.empty(0, dtype=np.int64), levels=coding.levels, spec=spec)
            for bar, spec, names, coding in zip(self.parsed.bars, self.term_specs,
                                                self.coef_names, self.codings, strict=True)
        ]


def _prototype(summary: ChunkSummary) -> pd.DataFrame:
    """A small frame holding every kept distinct value of every column, padded with sample
    rows: formulaic learns the same levels from it as from the whole data. The dtypes are
    the partitions' own (a Dask frame read from Parquet may only know at run time the
    categories of a categorical column)."""
    sample = summary.sample.reset_index(drop=True)
    length = max([len(sample)] + [len(v) for v in summary.values.values() if v is not None])
    extra = {}
    for column, values in summary.values.items():
        source = sample[column] if values is None or len(values) == 0 else values
        extra[column] = pd.Series(np.resize(source.to_numpy(dtype=object), length)).astype(
            source.dtype)
    return pd.concat([sample, pd.DataFrame(extra)], ignore_index=True)


def _no_complete_rows(summary: ChunkSummary) -> DataError:
    worst = summary.missing.idxmax()
    return DataError(
        f"no complete rows: every row has a missing value in the columns the formula uses "
        f"(e.g. {worst!r} is missing in {summary.missing[worst]} of {summary.rows} rows)"
    )


def factor_sets(parsed: ParsedFormula) -> tuple[tuple[str, ...], ...]:
    """The distinct sets of grouping factors of the bar terms."""
    return tuple(dict.fromkeys(tuple(bar.factors) for bar in parsed.bars))


def make_plan(parsed: ParsedFormula, columns: tuple[str, ...], summary: ChunkSummary
              ) -> ChunkPlan:
    """The plan of pass 2 from pass 1's merged summary (raises the in-memory path's
    errors for empty data, no complete rows, a bad response or term)."""
    if summary.rows == 0:
        raise DataError("data has no rows")
    if summary.complete == 0:
        raise _no_complete_rows(summary)
    proto = _prototype(summary)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", DataMismatchWarning)
            fixed = model_matrix(f"{parsed.response} ~ {parsed.fixed}", proto,
                                 na_action="ignore")
    except Exception as exc:
        raise FormulaError(
            f"cannot build the fixed effects of {parsed.text!r}: {dependency_message(exc)}"
        ) from None
    if fixed.lhs.shape[1] != 1:
        raise DataError(f"response {parsed.response!r} must be one numeric column; it "
                        f"encodes to {fixed.lhs.shape[1]} columns")
    _refuse_stateful(fixed.model_spec.lhs, f"response {parsed.response!r}")
    _refuse_stateful(fixed.model_spec.rhs, f"the fixed part {parsed.fixed!r}")
    term_specs, coef_names = [], []
    for bar in parsed.bars:
        try:
            with np.errstate(all="ignore"):
                mm = model_matrix(bar.lhs, proto, na_action="ignore")
        except Exception as exc:
            raise FormulaError(f"cannot build random-effects term {bar.source}: "
                               f"{dependency_message(exc)}") from None
        if mm.shape[1] == 0:
            raise FormulaError(f"random-effects term {bar.source} has no columns")
        _refuse_stateful(mm.model_spec, f"random-effects term {bar.source}")
        term_specs.append(mm.model_spec)
        coef_names.append(tuple(intercept_name(str(c)) for c in mm.columns))
    codings = tuple(TermCoding.from_combos(tuple(bar.factors), summary.combos[tuple(bar.factors)])
                    for bar in parsed.bars)
    plan = ChunkPlan(
        parsed=parsed, columns=columns, fixed_spec=fixed.model_spec,
        names_all=tuple(intercept_name(str(c)) for c in fixed.rhs.columns),
        term_specs=tuple(term_specs), coef_names=tuple(coef_names), codings=codings,
        shift=np.zeros(fixed.rhs.shape[1]), y_shift=0.0,
    )
    y, X = plan.fixed_matrices(summary.sample)
    return dataclasses.replace(plan, shift=X.mean(axis=0), y_shift=float(y.mean()))
