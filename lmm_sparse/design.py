"""From a data frame to model matrices: the response, X and the raw random-effects terms.

Three steps, each a small function:
  * :func:`make_model_frame` keeps the columns the formula uses and drops incomplete rows
    (a copy: the caller's frame is never modified);
  * :func:`make_fixed_design` builds y and X through formulaic and drops aliased columns;
  * :func:`make_raw_terms` builds, per bar term, its dense n x k model matrix and the
    integer level codes of its grouping factor. The sparse Z is assembled from these in
    :mod:`lmm_sparse.terms`.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from formulaic import Formula, model_matrix

from .errors import DataError, FormulaError, RankDeficiencyWarning
from .formula import BarTerm, ParsedFormula

__all__ = [
    "FixedDesign",
    "RawTerm",
    "make_model_frame",
    "model_columns",
    "check_frame_values",
    "quote_names",
    "make_fixed_design",
    "make_raw_terms",
    "make_formula_offset",
    "intercept_name",
    "as_pandas",
    "dependency_message",
]

# lme4 names the intercept "(Intercept)"; formulaic names it "Intercept".
_INTERCEPT = "(Intercept)"
_RANK_TOL = 1e-7  # relative tolerance of R's qr(), which lme4 uses to drop aliased columns


def intercept_name(name: str) -> str:
    """Translate formulaic's intercept label to lme4's."""
    return _INTERCEPT if name == "Intercept" else name


@dataclass(frozen=True)
class FixedDesign:
    """Response and fixed-effects matrix.

    Fields
    ------
    y: response, shape (n,).
    X: fixed-effects model matrix after dropping aliased columns, shape (n, p).
    names: column names of X (lme4 style intercept name).
    dropped: names of aliased columns that were dropped.
    spec: formulaic model spec of the full X, to rebuild it on new data.
    keep: indices of the kept columns of the spec's matrix.
    """

    y: np.ndarray
    X: np.ndarray
    names: tuple[str, ...]
    dropped: tuple[str, ...]
    spec: Any
    keep: tuple[int, ...]


@dataclass(frozen=True)
class RawTerm:
    """One random-effects term before its structure is laid out in Z and Lambda.

    Fields
    ------
    bar: the parsed bar term.
    X: the term's own model matrix (n, k): the columns multiplying each level's effects.
    coef_names: names of the k columns ("(Intercept)", "Days", ...).
    codes: 0-based level index of every row, shape (n,).
    levels: level labels, in code order (sorted, as R's factor()).
    spec: formulaic model spec of X, to rebuild it on new data.
    """

    bar: BarTerm
    X: np.ndarray
    coef_names: tuple[str, ...]
    codes: np.ndarray
    levels: pd.Index
    spec: Any

    @property
    def group(self) -> str:
        return self.bar.group

    @property
    def k(self) -> int:
        return self.X.shape[1]

    @property
    def nlevels(self) -> int:
        return len(self.levels)


def quote_names(parsed: ParsedFormula, columns) -> ParsedFormula:
    """Backtick the column names formulaic would misread, such as R's ``Re.action``.

    R allows dots in names; in formulaic's Python grammar ``a.b`` is attribute access.
    Only names that are columns of the data and not Python identifiers are quoted.
    """
    odd = sorted(
        (str(c) for c in columns if isinstance(c, str) and not c.isidentifier()),
        key=len,
        reverse=True,  # longest first, so "a.b.c" is quoted before "a.b"
    )
    odd = [c for c in odd if re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]*", c)]
    if not odd:
        return parsed

    def quote(text: str) -> str:
        for name in odd:
            text = re.sub(rf"(?<![\w.`]){re.escape(name)}(?![\w.`])", f"`{name}`", text)
        return text

    bars = tuple(dataclasses.replace(bar, lhs=quote(bar.lhs)) for bar in parsed.bars)
    return dataclasses.replace(
        parsed, response=quote(parsed.response), fixed=quote(parsed.fixed), bars=bars,
        offsets=tuple(quote(text) for text in parsed.offsets),
    )


def _required_columns(parsed: ParsedFormula, data: pd.DataFrame) -> list[str]:
    """Columns the formula reads, in data order, after checking that each exists."""
    # formulaic's formula tokens, which also catch columns whose names shadow its transforms.
    # A name directly followed by "(" is a function call (C(x), log(z)): a column of that
    # name is not read, and must not enter the frame, where it would shadow the function.
    tokens = set(re.findall(
        r"(?<![A-Za-z0-9_.])[A-Za-z_.][A-Za-z0-9_.]*(?![A-Za-z0-9_.]|\s*\()"
        r"|(?<=`)[^`]+(?=`)", parsed.text))
    if tokens <= set(data.columns):
        # Every name in the formula is a column: none can be missing, and the variables
        # formulaic would report are among them, so its parse (about a millisecond) is
        # not needed; a syntax error is reported when the design is built.
        return [c for c in data.columns if c in tokens]
    pieces = [(parsed.response, "response"), (parsed.fixed, "fixed part")]
    pieces += [(bar.lhs, bar.source) for bar in parsed.bars]
    pieces += [(f"I({text})", f"offset({text})") for text in parsed.offsets]
    try:  # one parse of all parts (each parse costs about a millisecond)...
        joined = " + ".join(f"({text})" for text, _ in pieces[1:])
        needed = set(Formula(f"{parsed.response} ~ {joined}").required_variables)
    except Exception:  # ...and on failure one per part, to name the part that fails
        needed = set()
        for text, where in pieces:
            try:
                needed |= set(Formula(text).required_variables)
            except Exception as exc:  # formulaic's parser raises several types
                raise FormulaError(
                    f"cannot parse {where} {text!r}: {dependency_message(exc)}"
                ) from None
    for bar in parsed.bars:
        needed |= set(bar.factors)
    missing = sorted(name for name in needed if name not in data.columns)
    # Names formulaic resolves from the environment (np, log, ...) are not columns, and
    # for a quoted dotted column such as `Re.action` it reports the prefix "Re".
    dotted = [str(c) for c in data.columns if str(c) in tokens and "." in str(c)]
    missing = [
        name
        for name in missing
        if not _is_known_function(name) and not any(c.startswith(name + ".") for c in dotted)
    ]
    if missing:
        raise FormulaError(
            f"column(s) {', '.join(map(repr, missing))} used in {parsed.text!r} "
            f"not found in the data (columns: {', '.join(map(str, data.columns[:20]))}"
            f"{', ...' if len(data.columns) > 20 else ''})"
        )
    return [c for c in data.columns if c in needed or c in tokens]


def _is_known_function(name: str) -> bool:
    import builtins

    import numpy

    return hasattr(builtins, name) or name in {"np", "numpy"} or hasattr(numpy, name)


def as_pandas(data: Any) -> pd.DataFrame:
    """The data as a pandas DataFrame: pandas as is (never modified), polars and pyarrow
    tables (anything with ``to_pandas()``) converted; anything else refused by name."""
    if isinstance(data, pd.DataFrame):
        return data
    to_pandas = getattr(data, "to_pandas", None)
    if callable(to_pandas):
        try:
            converted = to_pandas()
        except Exception as exc:
            raise DataError(
                f"cannot convert the {type(data).__name__} data to pandas: {exc}"
            ) from None
        if isinstance(converted, pd.DataFrame):
            return converted
    hint = " (pandas.DataFrame(data) converts it)" if isinstance(data, dict | list) else ""
    raise DataError(
        f"data must be a pandas DataFrame (or a polars/pyarrow table), got "
        f"{type(data).__name__}{hint}"
    )


def _check_kind(values: pd.Series, column: object) -> None:
    """Refuse column types a linear model cannot use as they are, naming the column."""
    dtype = values.dtype
    if pd.api.types.is_complex_dtype(dtype):
        raise DataError(f"column {column!r} holds complex numbers: a linear mixed model needs "
                        "real values")
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        raise DataError(f"column {column!r} holds dates or durations ({dtype}): convert it to "
                        "a number first (e.g. days since a reference date)")


def make_model_frame(
    parsed: ParsedFormula, data: pd.DataFrame, extra: dict[str, np.ndarray] | None = None
) -> pd.DataFrame:
    """Copy of the used columns with incomplete rows dropped (lme4's na.omit).

    ``extra``: per-row arrays over ``data`` (lme4's ``(weights)``, ``(offset)``) added as
    columns, so that a row missing one of them is dropped too; their values are checked by
    whoever takes them back out (:func:`lmm_sparse.weights.take_prior_weights`).
    """
    data = as_pandas(data)
    if len(data) == 0:
        raise DataError("data has no rows")
    columns = model_columns(parsed, data)
    frame = data[columns]  # a new frame: the caller's is never changed through it
    if extra:
        frame = frame.assign(**extra)
    full = frame
    if frame.isna().to_numpy().any():  # dropna copies even when nothing is missing
        frame = frame.dropna(how="any")
    if len(frame) == 0:
        counts = full.isna().sum()
        worst = counts.idxmax()
        raise DataError(
            f"no complete rows: every row has a missing value in the columns the formula "
            f"uses (e.g. {worst!r} is missing in {counts[worst]} of {len(data)} rows)"
        )
    check_frame_values(frame, columns)  # the extra columns' owner checks them, by name
    return frame.reset_index(drop=True)


def model_columns(parsed: ParsedFormula, data: pd.DataFrame) -> list[str]:
    """The columns of ``data`` the formula reads (only ``data.columns`` is looked at, so an
    empty frame with the data's columns, such as a Dask frame's meta, will do)."""
    columns = _required_columns(parsed, data)
    repeated = sorted({str(c) for c in data.columns[data.columns.duplicated()]} &
                      {str(c) for c in columns})
    if repeated:
        raise DataError(f"column name(s) {repeated} appear more than once in the data: "
                        "rename or drop the copies")
    return columns


def drop_aliased(names_all, keep, stacklevel: int) -> tuple[str, ...]:
    """The names of the columns not in ``keep``, with lme4's rank-deficiency warning
    ("fixed-effect model matrix is rank deficient so dropping ...") when there are any."""
    kept = set(keep)
    dropped = tuple(name for j, name in enumerate(names_all) if j not in kept)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {', '.join(dropped)}",
            RankDeficiencyWarning,
            stacklevel=stacklevel,
        )
    return dropped


def check_frame_values(frame: pd.DataFrame, columns: list[str] | None = None) -> None:
    """Refuse unusable column types and infinite values in ``columns`` (default: all) of a
    frame of complete rows."""
    for column in frame.columns if columns is None else columns:
        values = frame[column]
        _check_kind(values, column)
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            bad = ~np.isfinite(values.to_numpy(dtype=float))
            if bad.any():
                raise DataError(
                    f"column {column!r} has {int(bad.sum())} infinite value(s), "
                    f"first at row {frame.index[np.argmax(bad)]!r}"
                )


def _model_matrix(formula: str, frame: pd.DataFrame, what: str, output: str = "pandas") -> Any:
    """formulaic's model matrix, its failure a FormulaError "cannot <what>: <reason>".

    Incomplete rows are gone already, so a missing value here comes from a transform (np.log
    of a negative number): kept ("ignore") for _check_magnitude to name it.
    """
    try:
        with np.errstate(all="ignore"):
            return model_matrix(formula, frame, na_action="ignore", output=output)
    except Exception as exc:  # formulaic's parser and evaluator raise many types
        raise FormulaError(f"cannot {what}: {dependency_message(exc)}") from None


def make_fixed_design(parsed: ParsedFormula, frame: pd.DataFrame) -> FixedDesign:
    """y and the fixed-effects matrix X, aliased columns dropped as lme4 does."""
    # numpy output: a pandas frame of X would cost more than half a millisecond of the
    # few that a small model's set-up takes; the names come from the model spec
    mm = _model_matrix(f"{parsed.response} ~ {parsed.fixed}", frame,
                       f"build the fixed effects of {parsed.text!r}", output="numpy")
    lhs = mm.lhs
    if lhs.shape[1] != 1:
        stored = frame[parsed.response].dtype if parsed.response in frame.columns else None
        hint = (f"; the column is stored as {stored}: convert it with pandas.to_numeric"
                if stored is not None and not pd.api.types.is_numeric_dtype(stored) else "")
        encoded = lhs.model_spec.column_names
        shown = ", ".join(map(str, encoded[:5])) + (", ..." if lhs.shape[1] > 5 else "")
        raise DataError(
            f"response {parsed.response!r} must be one numeric column; it encodes to "
            f"{lhs.shape[1]} columns ({shown}){hint}"
        )
    y = np.asarray(lhs, dtype=float).ravel()
    names_all = [intercept_name(str(c)) for c in mm.rhs.model_spec.column_names]
    X_all = np.asarray(mm.rhs, dtype=float)
    if X_all.shape[0] <= X_all.shape[1]:
        raise DataError(f"{X_all.shape[0]} observations cannot estimate {X_all.shape[1]} "
                        f"fixed-effects columns ({', '.join(names_all[:6])}"
                        f"{', ...' if len(names_all) > 6 else ''})")
    _check_magnitude(y, parsed.response)
    for j, name in enumerate(names_all):
        _check_magnitude(X_all[:, j], name)
    if len(y) > 1 and np.all(y == y[0]):
        raise DataError(
            f"response {parsed.response!r} is constant (every value is {y[0]:g}): there is "
            "no variation for the model to explain (lme4: response is constant)"
        )
    keep = _independent_columns(X_all)
    dropped = drop_aliased(names_all, keep, stacklevel=5)
    return FixedDesign(
        y=y,
        X=np.ascontiguousarray(X_all if len(keep) == X_all.shape[1] else X_all[:, keep]),
        names=tuple(names_all[j] for j in keep),
        dropped=dropped,
        spec=mm.rhs.model_spec,
        keep=tuple(keep),
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\u29da\u29db]")


def dependency_message(exc: BaseException) -> str:
    """A dependency's error message on one line, without terminal colour codes and
    formulaic's highlight markers (they would garble our message in a log)."""
    text = _ANSI.sub("", str(exc))
    return " ".join(text.split()) or type(exc).__name__


# Beyond this, sums of squares of a few thousand values overflow double precision; values
# this large are a unit error, not data.
_MAX_MAGNITUDE = 1e100


def _check_magnitude(values: np.ndarray, name: str) -> None:
    """Refuse values whose squares would overflow the cross-products, naming the column."""
    if not np.isfinite(values).all():  # e.g. a transform such as np.log(0)
        bad = int(np.sum(~np.isfinite(values)))
        raise DataError(f"{name!r} has {bad} infinite or undefined value(s) after its "
                        "transform (e.g. the log of zero or of a negative number)")
    biggest = float(np.max(np.abs(values))) if values.size else 0.0
    if biggest > _MAX_MAGNITUDE:
        raise DataError(f"{name!r} has values up to {biggest:.3g}: their squares overflow "
                        "double precision; rescale it (e.g. divide by a power of ten)")


def _independent_columns(X: np.ndarray) -> list[int]:
    """Indices of a maximal set of linearly independent columns, earliest first.

    Like R's qr() used by lme4: a column that is (numerically) a combination of the
    columns before it is dropped; the rest keep their order. A Cholesky factorization
    of the scaled cross-product settles the usual, clearly full-rank case in O(n p^2)
    BLAS work; only when a column comes close to dependence is the slower but exact
    column-by-column QR test run.
    """
    p = X.shape[1]
    if p == 0:
        return []
    gram = X.T @ X
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    if np.all(norms > 0):
        try:  # the Gram matrix of the unit-scaled columns, without scaling X
            R = np.linalg.cholesky(gram / np.outer(norms, norms))
        except np.linalg.LinAlgError:
            R = None
        # diag(R)^2 is the part of each unit column left after projecting out the
        # earlier ones: 1e-10 is far above the 1e-14 that R's tolerance corresponds to.
        if R is not None and np.min(np.diag(R)) ** 2 > 1e-10:
            return list(range(p))
    keep = list(range(p))
    while keep:
        R = scipy.linalg.qr(X[:, keep], mode="r", check_finite=False)[0]
        diag = np.abs(np.diag(R))
        tiny = _RANK_TOL * np.maximum(norms[keep], np.finfo(float).tiny)
        bad = np.flatnonzero(diag <= tiny)
        if bad.size == 0:
            break
        del keep[bad[0]]
    return keep


def offset_values(text: str, frame: pd.DataFrame) -> np.ndarray:
    """The values of one ``offset(text)`` term on ``frame`` (NaN where a variable is
    missing): the expression evaluated as formulaic's ``I(text)``, one numeric column."""
    mm = _model_matrix(f"0 + I({text})", frame, f"evaluate offset({text})")
    if mm.shape[1] != 1:
        raise FormulaError(f"offset({text}) must be one numeric value per row; it encodes to "
                           f"{mm.shape[1]} columns")
    return np.asarray(mm, dtype=float)[:, 0]


def make_formula_offset(parsed: ParsedFormula, frame: pd.DataFrame) -> np.ndarray | None:
    """The sum of the formula's ``offset(...)`` terms on the model frame, or None."""
    if not parsed.offsets:
        return None
    total = np.zeros(len(frame))
    for text in parsed.offsets:
        values = offset_values(text, frame)
        _check_magnitude(values, f"offset({text})")
        total += values
    return total


def make_raw_terms(parsed: ParsedFormula, frame: pd.DataFrame) -> list[RawTerm]:
    """Per bar term: its model matrix and the level codes of its grouping factor.

    Terms with the same left-hand side (``(1 | subj) + (1 | item)``) share one formulaic
    model matrix: building it costs milliseconds of formulaic overhead, which is most of
    a small model's set-up.
    """
    matrices: dict[str, Any] = {}
    return [_make_raw_term(bar, frame, matrices) for bar in parsed.bars]


class InterceptSpec:
    """The model spec of a term whose left-hand side is ``1``: a column of ones, made
    without formulaic, whose model matrix costs about a millisecond (a crossed-intercepts
    model's set-up is a few milliseconds)."""

    required_variables: frozenset[str] = frozenset()

    def get_model_matrix(self, data: pd.DataFrame, na_action: str = "ignore") -> pd.DataFrame:
        return pd.DataFrame({"Intercept": np.ones(len(data))}, index=data.index)


def _term_matrix(bar: BarTerm, frame: pd.DataFrame) -> tuple[np.ndarray, tuple[str, ...], Any]:
    """A bar term's model matrix, its column names (lme4's) and its model spec."""
    if bar.lhs.strip() == "1":
        return np.ones((len(frame), 1)), (_INTERCEPT,), InterceptSpec()
    mm = _model_matrix(bar.lhs, frame, f"build random-effects term {bar.source}")
    X = np.ascontiguousarray(np.asarray(mm, dtype=float))
    names = tuple(intercept_name(str(c)) for c in mm.columns)
    for j, name in enumerate(names):
        _check_magnitude(X[:, j], f"{name} in {bar.source}")
    return X, names, mm.model_spec


def _make_raw_term(bar: BarTerm, frame: pd.DataFrame, matrices: dict[str, Any]) -> RawTerm:
    matrix = matrices.get(bar.lhs)
    if matrix is None:
        matrix = matrices[bar.lhs] = _term_matrix(bar, frame)
    X, names, spec = matrix
    if X.shape[1] == 0:
        raise FormulaError(f"random-effects term {bar.source} has no columns")
    codes, levels = group_codes(frame, bar.factors)
    return RawTerm(bar=bar, X=X, coef_names=names, codes=codes, levels=levels, spec=spec)


def _factor_codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes of one column treated as a factor (numbers too), unused levels dropped."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.cat.remove_unused_categories()
        return values.cat.codes.to_numpy(dtype=np.int64), pd.Index(values.cat.categories)
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # mixed types cannot be sorted: sort their text instead
        codes, uniques = pd.factorize(values.astype(str), sort=True)
    return codes.astype(np.int64), pd.Index(uniques)


def group_codes(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes of the interaction of ``factors`` (labels joined by ':').

    Combinations are ordered with the first factor varying slowest, as lme4's interaction
    levels. They are found by factorizing the tuples of codes, not a mixed-radix number,
    which would overflow when the product of the numbers of levels passes 2**63.
    """
    parts = [_factor_codes(frame[name]) for name in factors]
    if len(parts) == 1:
        return parts[0]
    keys = pd.MultiIndex.from_arrays([codes for codes, _ in parts])
    codes, uniques = pd.factorize(keys, sort=True)
    labels = [
        ":".join(str(levels[k]) for k, (_, levels) in zip(combo, parts, strict=True))
        for combo in uniques
    ]
    return codes.astype(np.int64), pd.Index(labels)
