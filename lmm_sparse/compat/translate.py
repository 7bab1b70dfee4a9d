"""statsmodels' MixedLM arguments -> one lme4 formula and a copy of the data.

statsmodels describes a model by a fixed-effects formula, a ``groups`` vector, a
``re_formula`` (correlated random effects per group) and ``vc_formula`` (variance
components: all columns of one formula, evaluated within a group, get independent effects
with one shared variance). Each of these is one lme4 bar term:

    re_formula "1 + x"           -> (1 + x | g)
    vc "0 + C(a)"                -> (1 | g:a)          (a crossed (1 | a) when g is constant)
    vc "0 + x"  (numeric x)      -> (0 + x | g)
    vc "0 + C(a):x"              -> (0 + x | g:a)

A variance component whose columns are not the indicator columns of one factor (times at
most one numeric expression) shares one variance among unrelated columns, which no lme4
term expresses: it is refused, naming the argument.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from formulaic import Formula

from ..design import as_pandas, dependency_message
from ..errors import DataError, FormulaError, ModelSpecError

__all__ = ["Component", "Translation", "translate"]

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # usable in an lme4 term as it is
_CATEGORICAL = re.compile(r"^C\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)$")
_MISSING = ("none", "drop", "raise")


@dataclass(frozen=True)
class Component:
    """One random-effects term of the translated formula, with statsmodels' naming.

    Fields
    ------
    kind: "re" (from re_formula: one correlated block) or "vc" (a variance component).
    name: the vc_formula key ("" for the re term).
    lhs: the lme4 term's left side, e.g. "1 + Time" or "0 + z".
    factors: its grouping columns, e.g. ("Pig",) or ("batch", "cask").
    parts: the vc formula's factors as written, each with its column when it is
        categorical (None for a numeric expression): how statsmodels labels the effects.
    """

    kind: str
    name: str
    lhs: str
    factors: tuple[str, ...]
    parts: tuple[tuple[str, str | None], ...] = ()

    @property
    def source(self) -> str:
        """The bar term as written in the lme4 formula (matches the engine's term)."""
        return f"({self.lhs} | {':'.join(self.factors)})"

    def label(self, row: Mapping[str, Any]) -> str:
        """statsmodels' label of this vc's effect for the level found in ``row``, e.g.
        ``cask[C(cask)[a]]`` (the patsy column name inside the vc name)."""
        pieces = [expr if column is None else f"{expr}[{row[column]}]"
                  for expr, column in self.parts]
        return f"{self.name}[{':'.join(pieces) or 'Intercept'}]"


@dataclass(frozen=True)
class Translation:
    """A statsmodels MixedLM specification as an lme4 model.

    Fields
    ------
    formula: the lme4 formula.
    data: a copy of the rows used (subset applied) with the groups column added.
    group_column: the column of ``data`` that holds the groups.
    group_name: statsmodels' label for the groups ("Group" for an array, else its name).
    crossed: the groups are constant (one group: the variance components are crossed).
    components: the re term (if any) first, then the variance components by name.
    """

    formula: str
    data: pd.DataFrame
    group_column: str
    group_name: str
    crossed: bool
    components: tuple[Component, ...]

    @property
    def re(self) -> Component | None:
        return next((c for c in self.components if c.kind == "re"), None)

    @property
    def vcs(self) -> tuple[Component, ...]:
        return tuple(c for c in self.components if c.kind == "vc")


def translate(
    formula: Any,
    data: Any,
    groups: Any,
    re_formula: Any = None,
    vc_formula: Any = None,
    subset: Any = None,
    missing: str = "none",
) -> Translation:
    """Map a statsmodels ``MixedLM.from_formula`` call onto an lme4 formula."""
    if not isinstance(formula, str):
        raise ModelSpecError(
            f"formula must be a string such as 'y ~ x', got {type(formula).__name__}; "
            "statsmodels' array interface MixedLM(endog, exog, groups) is not supported: "
            "use mixedlm(formula, data, groups=...)"
        )
    if "|" in formula:
        raise ModelSpecError(
            f"formula {formula!r} contains '|': in a statsmodels call the formula holds the "
            "fixed effects only (random effects go in groups, re_formula and vc_formula); "
            "for an lme4 formula call lmm_sparse.lmer directly"
        )
    if missing not in _MISSING:
        raise ModelSpecError(f"missing must be one of {_MISSING}, got {missing!r}")
    data = as_pandas(data)
    values, group_name, column = _group_values(groups, data)
    data, values = _apply_subset(data, values, subset)
    data, values = _missing_groups(data, values, missing)
    if column is None:
        column = _free_name(data.columns, "group")
        data = data.assign(**{column: values})  # a new frame: the caller's is untouched
    else:
        data = data.copy()
    crossed = pd.Series(values).nunique() == 1
    components = []
    re_lhs = _re_lhs(re_formula, vc_formula is None)
    if re_lhs is not None:
        if crossed:
            what = ("the default random intercept (re_formula=None)" if re_formula is None
                    else f"re_formula {re_formula!r}")
            raise ModelSpecError(
                f"{what} with a constant groups array: one group has one "
                "draw of its random effects, which cannot be told apart from the fixed "
                "effects; use re_formula='0' and vc_formula for crossed effects"
            )
        components.append(Component("re", "", re_lhs, (column,)))
    for name in _vc_names(vc_formula):
        components.append(_vc_component(name, vc_formula[name], data, column, crossed))
    if not components:
        raise ModelSpecError(
            f"no random effects: re_formula={re_formula!r} and no vc_formula; statsmodels' "
            "default is a random intercept (re_formula=None)"
        )
    _check_distinct(components)
    terms = " + ".join(c.source for c in components)
    return Translation(
        formula=f"{formula.strip()} + {terms}",
        data=data,
        group_column=column,
        group_name=group_name,
        crossed=bool(crossed),
        components=tuple(components),
    )


def _group_values(groups: Any, data: pd.DataFrame) -> tuple[np.ndarray, str, str | None]:
    """The groups as an array aligned with data's rows, statsmodels' label for them and
    the data column to use in the formula (None: add the values as a new column)."""
    if groups is None:
        raise ModelSpecError("groups is required: a column name or an array with one "
                             "value per row of data (statsmodels' groups=...)")
    if isinstance(groups, str):
        if groups not in data.columns:
            hint = ("; it looks like a re_formula: statsmodels' third positional argument is "
                    "re_formula, here it is groups, so pass both by keyword"
                    if "~" in groups else "")
            raise DataError(f"groups {groups!r} is not a column of the data (columns: "
                            f"{', '.join(map(str, data.columns[:20]))}){hint}")
        usable = groups if _COLUMN.match(groups) else None
        return data[groups].to_numpy(), groups, usable
    values = np.asarray(groups)  # by position, as statsmodels does
    if values.ndim != 1 or len(values) != len(data):
        raise DataError(f"groups must be a column name or one value per row of data "
                        f"({len(data)} rows), got shape {values.shape}")
    name = getattr(groups, "name", None)
    # groups=data["Pig"], as in statsmodels' examples: the formula can name the column.
    same = (isinstance(name, str) and _COLUMN.match(name) is not None and name in data.columns
            and pd.Series(values).equals(pd.Series(data[name].to_numpy())))
    return values, "Group", name if same else None


def _apply_subset(data: pd.DataFrame, values: np.ndarray, subset: Any):
    """statsmodels' subset: booleans (one per row) or index labels of data."""
    if subset is None:
        return data, values
    chosen = np.asarray(subset)
    if chosen.dtype == bool:
        if chosen.shape != (len(data),):
            raise DataError(f"subset of booleans must have one value per row of data "
                            f"({len(data)}), got shape {chosen.shape}")
        positions = np.flatnonzero(chosen)
    else:
        positions = data.index.get_indexer(pd.Index(chosen.ravel()))
        if (positions < 0).any():
            raise DataError(f"subset holds {int((positions < 0).sum())} value(s) that are not "
                            f"index labels of data, e.g. {chosen.ravel()[positions < 0][0]!r}")
    if len(positions) == 0:
        raise DataError("subset selects no rows")
    return data.iloc[positions], values[positions]


def _missing_groups(data: pd.DataFrame, values: np.ndarray, missing: str):
    """Rows without a group: dropped with missing="drop", else an error (statsmodels)."""
    absent = pd.isna(values)
    if not absent.any():
        return data, values
    if missing != "drop":
        raise DataError(f"groups has {int(absent.sum())} missing value(s), first at row "
                        f"{data.index[np.argmax(absent)]!r}; pass missing='drop' to drop "
                        "those rows")
    if absent.all():
        raise DataError("groups has no non-missing values")
    return data.iloc[~absent], values[~absent]


def _free_name(columns: pd.Index, base: str) -> str:
    name = base
    while name in columns:
        name += "_"
    return name


def _terms(text: str, where: str) -> list:
    try:
        parsed = Formula(text.strip().lstrip("~"))
        return list(getattr(parsed, "rhs", parsed))
    except Exception as exc:  # formulaic raises several types
        raise FormulaError(f"cannot parse {where} {text!r}: {dependency_message(exc)}") from None


def _re_lhs(re_formula: Any, default_intercept: bool) -> str | None:
    """The re term's left side, or None for no re term (statsmodels: re_formula=None means
    a random intercept unless variance components are given)."""
    if re_formula is None:
        return "1" if default_intercept else None
    if not isinstance(re_formula, str):
        raise ModelSpecError(f"re_formula must be a string such as '1' or '~x', got "
                             f"{type(re_formula).__name__}")
    if "|" in re_formula:
        raise ModelSpecError(f"re_formula {re_formula!r} contains '|': it lists the random "
                             "effects' columns only; the grouping comes from groups")
    if not _terms(re_formula, "re_formula"):
        return None  # "0" or "-1": no correlated random effects
    return re_formula.strip().lstrip("~").strip()


def _vc_names(vc_formula: Any) -> list[str]:
    if vc_formula is None:
        return []
    if not isinstance(vc_formula, Mapping):
        raise ModelSpecError(f"vc_formula must be a dict of name -> formula, e.g. "
                             f"{{'cask': '0 + C(cask)'}}, got {type(vc_formula).__name__}")
    for name, text in vc_formula.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise ModelSpecError(f"vc_formula entries must be name (str) -> formula (str), "
                                 f"got {name!r}: {text!r}")
    return sorted(vc_formula)  # statsmodels orders the components by name


def _vc_component(name: str, text: str, data: pd.DataFrame, group: str,
                  crossed: bool) -> Component:
    where = f"vc_formula[{name!r}] = {text!r}"
    terms = _terms(text, f"vc_formula[{name!r}]")
    names = [str(t) for t in terms]
    if "1" in names and len(names) > 1:
        raise ModelSpecError(
            f"{where} has an intercept besides other columns, and statsmodels would give "
            "them all one variance; write '0 + ...' (statsmodels' documentation: always use "
            "'0 +' in a variance component)"
        )
    if len(names) != 1:
        raise ModelSpecError(
            f"{where} has {len(names)} terms ({', '.join(names) or 'none'}): statsmodels "
            "gives all their columns one shared variance, which an lme4 formula cannot "
            "express; give each term its own vc_formula entry (one variance each) or write "
            "the model for lmm_sparse.lmer"
        )
    parts = [] if names == ["1"] else [_classify(f.expr, data, where) for f in terms[0].factors]
    categorical = tuple(column for _, column in parts if column is not None)
    numeric = [expr for expr, column in parts if column is None]
    if crossed and not categorical:
        raise ModelSpecError(
            f"{where} with a constant groups array is one random coefficient for all rows, "
            "which cannot be told apart from the fixed effects; a variance component needs "
            "a factor such as '0 + C(a)' when groups is constant"
        )
    lhs = f"0 + {':'.join(numeric)}" if numeric else "1"
    factors = categorical if crossed else (group, *categorical)
    return Component("vc", name, lhs, factors, tuple(parts))


def _classify(expr: str, data: pd.DataFrame, where: str) -> tuple[str, str | None]:
    """A factor of a vc term: (expr, its column) when categorical, (expr, None) when a
    numeric expression."""
    match = _CATEGORICAL.match(expr)
    column = match.group(1) if match else expr
    if column in data.columns:
        values = data[column]
        numeric = (pd.api.types.is_numeric_dtype(values)
                   and not pd.api.types.is_bool_dtype(values))
        if match or not numeric:
            if not _COLUMN.match(column):
                raise ModelSpecError(f"{where}: factor column {column!r} must be a plain name "
                                     "(letters, digits, _) to be a grouping factor")
            return expr, column
        return expr, None
    if match:
        raise FormulaError(f"{where}: column {column!r} not found in the data")
    if expr.startswith("C("):
        raise ModelSpecError(f"{where}: {expr} is not supported; write C(column) (the "
                             "contrasts do not matter with '0 +': every level gets an effect)")
    return expr, None  # a numeric transform such as np.log(x); formulaic checks its columns


def _check_distinct(components: list[Component]) -> None:
    seen: dict[tuple[str, tuple[str, ...]], str] = {}
    for comp in components:
        key = (comp.lhs.replace(" ", ""), comp.factors)
        what = "re_formula" if comp.kind == "re" else f"vc_formula[{comp.name!r}]"
        if key in seen:
            raise ModelSpecError(f"{what} and {seen[key]} give the same random-effects term "
                                 f"{comp.source}: its variance would not be identifiable")
        seen[key] = what
