"""Predictions as lme4's ``predict.merMod``: ``re_form``, ``newdata``, ``allow_new_levels``.

A prediction is ``X beta + sum over the included random-effect coefficients of Z_j b_j``
(docs/bootstrap.md):

* ``re_form=None``: every random effect (conditional prediction; at the fitting data this
  is ``result.fitted``);
* ``re_form="~0"`` (or ``"NA"``, ``np.nan``, ``pd.NA``): none, ``X beta`` (population level);
* ``re_form="~(1 | g)"``: the random-effect coefficients named by the bar terms of the
  formula, matched to the model's terms by grouping factor and coefficient name, as lme4
  does: ``~(1 | Subject)`` keeps the intercepts of a ``(Days | Subject)`` term and drops
  the slopes.

With ``newdata``, a level of an included grouping factor that the fit did not see is an
error naming the factor and the levels, unless ``allow_new_levels=True``: then it gets
random effects of zero (lme4). A missing value in a predictor a row needs makes that
row's prediction NaN (lme4's ``na.action = na.pass``). The user's frame is not modified.

A fit's offset is part of its predictions: on its own rows all of it; on ``newdata`` the
formula's ``offset(...)`` terms evaluated there (as lme4), while a fit with the
``offset=`` argument refuses ``newdata`` (lme4 would drop that offset without a word).
Prior weights do not enter predictions.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from formulaic import model_matrix

from .design import intercept_name, offset_values, quote_names
from .errors import DataError, FormulaError, ModelSpecError
from .formula import parse_formula

if TYPE_CHECKING:
    from .model import LinearMixedModel
    from .results import LmerResult

__all__ = ["ReSelection", "select_random_effects", "predict"]

# Spellings of lme4's re.form = NA / ~0 (no random effects), compared without blanks and
# case-insensitively.
_NONE_FORMS = {"~0", "0", "na"}
_MAX_LISTED = 10  # levels named in an error message
# formulaic's text for "the unseen category is a missing value" (made NaN rows here)
_MISSING_SETS = {"{nan}", "{None}", "{<NA>}", "{nan, None}", "{None, nan}"}


@dataclass(frozen=True)
class ReSelection:
    """Which random-effect coefficients a prediction or simulation includes.

    Fields
    ------
    masks: per model term (lme4's order, ``model.re.terms``), a boolean array over the
        term's coefficients: True where that coefficient's random effects are included.
    """

    masks: tuple[np.ndarray, ...]

    @property
    def all(self) -> bool:
        return all(bool(m.all()) for m in self.masks)

    @property
    def none(self) -> bool:
        return not any(bool(m.any()) for m in self.masks)

    def terms(self) -> list[int]:
        """Indices of the terms with at least one included coefficient."""
        return [i for i, m in enumerate(self.masks) if m.any()]


def _is_none_form(re_form: Any) -> bool:
    if re_form is None or isinstance(re_form, str):
        return isinstance(re_form, str) and "".join(re_form.split()).lower() in _NONE_FORMS
    try:
        return bool(pd.isna(re_form))
    except (TypeError, ValueError):
        return False


def select_random_effects(model: LinearMixedModel, re_form: Any) -> ReSelection:
    """Resolve lme4's ``re.form`` against the model's terms (see the module docstring)."""
    full = [np.ones(t.k, dtype=bool) for t in model.re.terms]
    if re_form is None:
        return ReSelection(tuple(full))
    if _is_none_form(re_form):
        return ReSelection(tuple(np.zeros(t.k, dtype=bool) for t in model.re.terms))
    if not isinstance(re_form, str):
        raise FormulaError(
            f"re_form must be None (all random effects), '~0' or NA (none) or a formula "
            f"such as '~(1 | g)', got {re_form!r}"
        )
    rhs = re_form.split("~", 1)[1] if "~" in re_form else re_form
    try:
        parsed = parse_formula(f"re_form ~ {rhs}")
    except FormulaError as exc:
        raise FormulaError(f"cannot read re_form {re_form!r}: {exc}") from None
    parsed = quote_names(parsed, model.frame.columns)
    masks = [np.zeros(t.k, dtype=bool) for t in model.re.terms]
    for bar in parsed.bars:
        key = tuple(sorted(bar.factors))
        same = [i for i, t in enumerate(model.re.terms) if tuple(sorted(t.bar.factors)) == key]
        if not same:
            known = sorted({t.group for t in model.re.terms})
            raise FormulaError(
                f"re_form term {bar.source}: grouping factor {bar.group!r} is not in the "
                f"model (its grouping factors: {', '.join(known)})"
            )
        wanted = _coef_names(bar.lhs, model.frame, bar.source)
        found: set[str] = set()
        for i in same:
            names = model.re.terms[i].coef_names
            hit = np.array([name in wanted for name in names])
            masks[i] |= hit
            found |= {n for n, h in zip(names, hit, strict=True) if h}
        if wanted - found:
            have = sorted({n for i in same for n in model.re.terms[i].coef_names})
            raise FormulaError(
                f"re_form term {bar.source}: {', '.join(sorted(wanted - found))} not among "
                f"the random effects of {bar.group!r} in the model ({', '.join(have)})"
            )
    return ReSelection(tuple(masks))


def _coef_names(lhs: str, frame: pd.DataFrame, source: str) -> set[str]:
    """Column names (lme4's intercept name) of a bar term's left side on the fit's frame."""
    try:
        columns = model_matrix(lhs, frame, na_action="ignore").columns
    except Exception as exc:  # formulaic raises many types
        raise FormulaError(f"cannot build re_form term {source}: {exc}") from None
    return {intercept_name(str(c)) for c in columns}


# --------------------------------------------------------------------------- predict


def predict(
    result: LmerResult,
    newdata: pd.DataFrame | None = None,
    re_form: Any = None,
    allow_new_levels: bool = False,
) -> np.ndarray:
    """Predictions of a fitted model, as lme4's ``predict(m, newdata, re.form,
    allow.new.levels)`` (see the module docstring); one value per row of ``newdata``, or
    per observation of the fit without it."""
    model = result.model
    selection = select_random_effects(model, re_form)
    if newdata is None:
        if selection.all:
            return result.fitted.copy()
        out = model.X @ result.fixef.to_numpy()
        for i in selection.terms():
            term, mask = model.re.terms[i], selection.masks[i]
            b = result._b[i][:, mask]
            out += np.einsum("rk,rk->r", term.X[:, mask], b[term.codes])
        return model.prior.add_offset(out)
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    if model.prior.offset_argument is not None:
        # lme4 silently predicts such a model's newdata without the offset (predict.merMod
        # only evaluates offset() terms of the formula); that is rarely what is meant.
        raise ModelSpecError(
            "predict(newdata) is not supported for a fit with offset=: the offset of new "
            "rows is unknown; add it yourself to predict(newdata) of a fit, or predict the "
            "fitted rows (newdata=None), whose offset is included"
        )
    out = _fixed_part(model, newdata) @ result.fixef.to_numpy()
    for i in selection.terms():
        out += _term_part(model, i, selection.masks[i], result._b[i], newdata,
                          allow_new_levels)
    for text in model.parsed.offsets:  # the formula's offset() terms, evaluated on newdata
        out += offset_values(text, newdata)
    return out


def _design(spec: Any, newdata: pd.DataFrame, frame: pd.DataFrame, what: str) -> np.ndarray:
    """A model matrix on newdata: NaN rows where a variable it uses is missing, an error
    for factor levels the fit did not see (formulaic would silently encode them as 0)."""
    used = sorted(spec.required_variables)
    missing = [v for v in used if v not in newdata.columns and v in frame.columns]
    if missing:
        raise DataError(f"newdata lacks column(s) {missing} needed for {what}")
    for name in used:
        if name in newdata.columns and name in frame.columns:
            _check_levels(newdata[name], frame[name], name, what)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            M = np.asarray(spec.get_model_matrix(newdata, na_action="ignore"), dtype=float)
        except Exception as exc:  # formulaic raises many types
            raise DataError(f"cannot build {what} for newdata: {exc}") from None
    present = [v for v in used if v in newdata.columns]
    incomplete = newdata[present].isna().any(axis=1).to_numpy() if present else None
    if incomplete is not None and incomplete.any():
        M[incomplete] = np.nan  # lme4's na.pass: the row's prediction is NA
    for w in caught:  # a mismatch _check_levels did not see (e.g. C() of a number)
        text = str(w.message).split(". They")[0]
        only_missing = text.rsplit(": ", 1)[-1].strip() in _MISSING_SETS  # NaN rows above
        if "outside of the nominated levels" in text and not only_missing:
            raise DataError(f"newdata cannot be encoded for {what}: {text}")
    if len(M) != len(newdata):
        raise DataError(f"{what} on newdata gave {len(M)} rows for {len(newdata)}")
    return M


def _check_levels(values: pd.Series, fitted: pd.Series, name: str, what: str) -> None:
    """Values of a text or categorical column that the fit never saw: an error, as in R."""
    if pd.api.types.is_numeric_dtype(fitted) and pd.api.types.is_numeric_dtype(values):
        return
    seen = set(fitted.dropna().unique())
    new = [v for v in pd.unique(values.dropna()) if v not in seen]
    if new:
        shown = ", ".join(map(repr, new[:_MAX_LISTED]))
        raise DataError(
            f"column {name!r} has value(s) {shown}{', ...' if len(new) > _MAX_LISTED else ''}"
            f" in newdata that the fit did not see, needed for {what}"
        )


def _fixed_part(model: LinearMixedModel, newdata: pd.DataFrame) -> np.ndarray:
    X = _design(model.fixed.spec, newdata, model.frame, "the fixed effects")
    return X[:, list(model.fixed.keep)]


def _term_part(
    model: LinearMixedModel,
    i: int,
    mask: np.ndarray,
    b: np.ndarray,
    newdata: pd.DataFrame,
    allow_new_levels: bool,
) -> np.ndarray:
    """Z_i b_i on newdata for the included coefficients of term i."""
    term = model.re.terms[i]
    missing = [f for f in term.bar.factors if f not in newdata.columns]
    if missing:
        raise DataError(f"newdata lacks grouping column(s) {missing} of {term.bar.source}")
    Xi = _design(term.spec, newdata, model.frame, f"random-effects term {term.bar.source}")
    position, absent = _level_positions(term, newdata)
    new = (position < 0) & ~absent
    if new.any() and not allow_new_levels:
        labels = pd.unique(_level_labels(term, newdata)[new])
        shown = ", ".join(map(repr, labels[:_MAX_LISTED]))
        raise DataError(
            f"newdata has {len(labels)} level(s) of grouping factor {term.group!r} that the "
            f"fit did not see: {shown}{', ...' if len(labels) > _MAX_LISTED else ''}; pass "
            "allow_new_levels=True to predict them with random effects of zero"
        )
    out = np.zeros(len(newdata))
    seen = position >= 0
    out[seen] = np.einsum("rk,rk->r", Xi[seen][:, mask], b[position[seen]][:, mask])
    out[absent] = math.nan  # a missing grouping value: na.pass
    return out


def _level_labels(term: Any, newdata: pd.DataFrame) -> np.ndarray:
    """Each row's level label as the fit spelled it (``a:b`` for interactions)."""
    factors = term.bar.factors
    if len(factors) == 1:
        return newdata[factors[0]].to_numpy(dtype=object)
    parts = [newdata[f].map(str).to_numpy(dtype=object) for f in factors]
    return np.array([":".join(row) for row in zip(*parts, strict=True)], dtype=object)


def _level_positions(term: Any, newdata: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Index of each row's level among the fit's levels (-1: not seen), and which rows
    have a missing grouping value."""
    absent = newdata[list(term.bar.factors)].isna().any(axis=1).to_numpy()
    labels = pd.Index(_level_labels(term, newdata))
    position = term.levels.get_indexer(labels)
    # the same level read with another type (3 vs "3"): match the remaining rows by text
    retry = (position < 0) & ~absent
    if retry.any():
        as_text = pd.Index(term.levels.map(str))
        position[retry] = as_text.get_indexer(labels[retry].map(str))
    position[absent] = -1
    return position, absent
