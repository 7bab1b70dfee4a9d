"""Every bad input gets a specific error of our own that names the culprit, raised before
any expensive work; the caller's data are never modified; lme4's warnings are given.

The table in docs/errors.md lists the same errors and warnings with causes and remedies.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import SLEEP_FORMULA

import lmm_sparse
from lmm_sparse import model as model_module
from lmm_sparse.errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    LmmSparseError,
    ModelSpecError,
    RankDeficiencyWarning,
    SingularFitWarning,
)


def _sleep() -> pd.DataFrame:
    return lmm_sparse.datasets.load("sleepstudy")


def _with(**columns):
    """sleepstudy with columns replaced or added (functions of the frame or values)."""
    def make():
        df = _sleep()
        for name, value in columns.items():
            df[name] = value(df) if callable(value) else value
        return df
    return make


_N = 180
FORMULA_CASES = [
    # (id, formula, data maker, error class, fragments the message must contain)
    ("unbalanced-open", "Reaction ~ Days + ((Days | Subject)", _sleep, FormulaError,
     ["unbalanced parentheses", "never closed"]),
    ("unbalanced-close", "Reaction ~ Days + (Days | Subject))", _sleep, FormulaError,
     ["unbalanced parentheses", "')'"]),
    ("empty-left-of-bar", "Reaction ~ Days + ( | Subject)", _sleep, FormulaError,
     ["( | Subject)", "nothing left of '|'"]),
    ("empty-right-of-bar", "Reaction ~ Days + (Days | )", _sleep, FormulaError,
     ["(Days | )", "no grouping factor"]),
    ("bar-without-group", "Reaction ~ Days + (Days | Subject:)", _sleep, FormulaError,
     ["(Days | Subject:)"]),
    ("unknown-column", "Reaction ~ Dayz + (1 | Subject)", _sleep, FormulaError, ["'Dayz'"]),
    ("unknown-group", "Reaction ~ Days + (1 | Subj)", _sleep, FormulaError, ["'Subj'"]),
    ("slope-not-in-data", "Reaction ~ Days + (Slope | Subject)", _sleep, FormulaError,
     ["'Slope'"]),
    ("no-random-term", "Reaction ~ Days", _sleep, FormulaError,
     ["no random-effects terms", "least squares"]),
    ("duplicated-term", "Reaction ~ Days + (1 | Subject) + (1 | Subject)", _sleep,
     FormulaError, ["(1 | Subject)", "twice"]),
    ("no-tilde", "Reaction Days + (1 | Subject)", _sleep, FormulaError, ["'~'"]),
    ("trailing-operator", "Reaction ~ Days + (1 | Subject) +", _sleep, FormulaError,
     ["ends with the operator '+'"]),
    ("empty-formula", "", _sleep, FormulaError, ["'~'"]),
    ("zero-columns-term", "Reaction ~ Days + (0 | Subject)", _sleep, FormulaError,
     ["(0 | Subject)", "no columns"]),
    ("text-response", "Subject ~ Days + (1 | Days)", _with(Subject=lambda d: "s" +
     d["Subject"].astype(str)), DataError, ["response 'Subject'", "numeric"]),
]
DATA_CASES = [
    ("empty-frame", SLEEP_FORMULA, lambda: _sleep().iloc[:0], DataError, ["no rows"]),
    ("all-rows-missing", SLEEP_FORMULA, _with(Days=np.nan), DataError,
     ["no complete rows", "'Days'"]),
    ("infinite-value", SLEEP_FORMULA,
     _with(Reaction=lambda d: d["Reaction"].where(d.index != 3, np.inf)), DataError,
     ["'Reaction'", "infinite", "row 3"]),
    ("infinite-after-transform", "Reaction ~ np.log(z) + (1 | Subject)",
     _with(z=lambda d: d["Days"].astype(float)), DataError, ["np.log(z)", "infinite"]),
    ("overflowing-values", SLEEP_FORMULA, _with(Reaction=lambda d: d["Reaction"] * 1e200),
     DataError, ["'Reaction'", "rescale"]),
    ("single-level", "Reaction ~ Days + (1 | g)", _with(g="only"), ModelSpecError,
     ["'g'", "only one level", "'only'"]),
    ("levels-equal-rows", "Reaction ~ Days + (1 | g)", _with(g=np.arange(_N)),
     ModelSpecError, ["(1 | g)", "180 random effects", "180 observations"]),
    ("more-coefficients-than-rows", "Reaction ~ Days + (Days | g)",
     _with(g=np.arange(_N) // 2), ModelSpecError,
     ["(Days | g)", "90 levels x 2 coefficients", "180 observations"]),
    ("constant-response", SLEEP_FORMULA, _with(Reaction=250.0), DataError,
     ["'Reaction'", "constant", "250"]),
    ("response-fitted-exactly", SLEEP_FORMULA, _with(Reaction=lambda d: 2.0 * d["Days"] + 5),
     DataError, ["'Reaction'", "exactly"]),
    ("repeated-column-name", SLEEP_FORMULA,
     lambda: pd.concat([_sleep(), _sleep()[["Days"]]], axis=1), DataError,
     ["'Days'", "more than once"]),
    ("undefined-after-transform", "Reaction ~ np.log(Days - 5) + (1 | Subject)", _sleep,
     DataError, ["np.log(Days - 5)", "undefined", "negative"]),
    ("text-numbers-response", SLEEP_FORMULA, _with(Reaction=lambda d: d["Reaction"].astype(str)),
     DataError, ["'Reaction'", "pandas.to_numeric"]),
    ("fewer-rows-than-fixed-effects", "y ~ C(d) + (1 | g)",
     lambda: pd.DataFrame({"y": [1.0, 3, 2, 5, 4, 7], "d": range(6), "g": list("aabbcc")}),
     DataError, ["6 observations", "6 fixed-effects columns"]),
]


def _check(formula, make, error, fragments, **kwargs):
    data = make()
    before = copy.deepcopy(data)
    with pytest.raises(error) as info:
        lmm_sparse.lmer(formula, data, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if isinstance(data, pd.DataFrame):
        pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("formula,make,error,fragments",
                         [c[1:] for c in FORMULA_CASES], ids=[c[0] for c in FORMULA_CASES])
def test_formula_errors_name_the_culprit(formula, make, error, fragments):
    _check(formula, make, error, fragments)


@pytest.mark.parametrize("formula,make,error,fragments",
                         [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_data_errors_name_the_culprit(formula, make, error, fragments):
    _check(formula, make, error, fragments)


# The O(n) cross-products are the first expensive step; no bad input may reach them,
# except the one check that is made from them (the response's least-squares residual).
EARLY = [c for c in FORMULA_CASES + DATA_CASES if c[0] != "response-fitted-exactly"]


@pytest.mark.parametrize("formula,make,error,fragments", [c[1:] for c in EARLY],
                         ids=[c[0] for c in EARLY])
def test_errors_come_before_the_cross_products(monkeypatch, formula, make, error, fragments):
    def refuse(*args, **kwargs):
        raise AssertionError("cross-products computed for bad input")

    monkeypatch.setattr(model_module, "make_cross_products", refuse)
    with pytest.raises(error):
        lmm_sparse.lmer(formula, make())


@pytest.mark.parametrize("kwargs,fragment", [
    ({"reml": "yes"}, "reml must be True or False"),
    ({"kernel": "dense"}, "kernel must be one of"),
    ({"optimizer": "bobyqa"}, "optimizer must be one of"),
    ({"blas_threads": 0}, "blas_threads must be a positive integer"),
    ({"start": np.ones(2)}, "start must have 3 elements"),
    ({"start": np.array([np.nan, 0.0, 1.0])}, "start must be finite"),
    ({"maxfev": 0}, "maxfev must be a positive integer"),
])
def test_bad_arguments_are_model_spec_errors(kwargs, fragment):
    with pytest.raises(ModelSpecError, match=fragment):
        lmm_sparse.lmer(SLEEP_FORMULA, _sleep(), **kwargs)


@pytest.mark.parametrize("data,fragment", [
    ({"Reaction": [1.0]}, "got dict (pandas.DataFrame(data) converts it)"),
    (np.zeros((3, 3)), "got ndarray"),
    (None, "got NoneType"),
])
def test_data_that_is_not_a_table_is_refused(data, fragment):
    with pytest.raises(DataError) as info:
        lmm_sparse.lmer(SLEEP_FORMULA, data)
    assert fragment in str(info.value)


class _ArrowLikeTable:
    """Stands for a polars DataFrame or a pyarrow Table: both have to_pandas()."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame

    def to_pandas(self) -> pd.DataFrame:
        return self._frame.copy()


def test_tables_with_to_pandas_are_converted(sleep_fit):
    res = lmm_sparse.lmer(SLEEP_FORMULA, _ArrowLikeTable(_sleep()))
    assert res.objective == pytest.approx(sleep_fit.objective, rel=1e-12)


def test_numeric_grouping_columns_are_factors():
    df = _sleep()
    as_text = df.assign(Subject=df["Subject"].astype(str))
    as_float = df.assign(Subject=df["Subject"].astype(float) + 0.5)
    fits = [lmm_sparse.lmer(SLEEP_FORMULA, d) for d in (df, as_text, as_float)]
    assert all(f.ngroups == {"Subject": 18} for f in fits)
    for f in fits[1:]:
        assert f.objective == pytest.approx(fits[0].objective, rel=1e-10)


def test_dependency_messages_lose_colour_codes():
    with pytest.raises(FormulaError) as info:
        lmm_sparse.lmer("Reaction ~ Days + () + (1 | Subject)", _sleep())
    message = str(info.value)
    assert "Days + ()" in message
    assert "\x1b[" not in message and "\n" not in message


def test_every_error_is_a_value_error_of_ours():
    for cls in (FormulaError, DataError, ModelSpecError):
        assert issubclass(cls, LmmSparseError) and issubclass(cls, ValueError)


# ------------------------------------------------------------------------------ warnings


def test_aliased_columns_are_dropped_and_named():
    df = _sleep().assign(Days2=lambda d: 2 * d["Days"])
    with pytest.warns(RankDeficiencyWarning, match="dropping 1 column.*Days2"):
        res = lmm_sparse.lmer("Reaction ~ Days + Days2 + (Days | Subject)", df)
    assert res.dropped == ("Days2",)
    plain = lmm_sparse.lmer(SLEEP_FORMULA, df)
    assert res.objective == pytest.approx(plain.objective, rel=1e-10)


def test_singular_fits_are_flagged():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"g": np.repeat(np.arange(20), 5), "x": rng.normal(size=100)})
    df["y"] = 1 + df["x"] + rng.normal(size=100)  # no group effect at all
    with pytest.warns(SingularFitWarning, match="boundary"):
        res = lmm_sparse.lmer("y ~ x + (1 | g)", df)
    assert res.is_singular and res.theta[0] == 0.0


def test_an_evaluation_limit_is_reported_with_the_gradient_and_a_remedy():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = lmm_sparse.lmer(SLEEP_FORMULA, _sleep(), maxfev=3)
    texts = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any("evaluation limit" in t and "raise maxfev" in t for t in texts), texts
    assert all("res.optinfo.gradient" in t for t in texts)
    assert not res.converged and res.optinfo.gradient is not None
