"""The lme4 formula parser: bar terms, expansion of / and ||, and errors naming the fault."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmm_sparse
from lmm_sparse.errors import FormulaError, LmmSparseError
from lmm_sparse.formula import BarTerm, ParsedFormula, parse_formula


def bars(text: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(b.lhs, b.factors) for b in parse_formula(text).bars]


# --------------------------------------------------------------------------- parsing


def test_simple_slope_term():
    parsed = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert isinstance(parsed, ParsedFormula)
    assert parsed.response == "Reaction"
    assert parsed.fixed == "Days"
    assert len(parsed.bars) == 1
    bar = parsed.bars[0]
    assert isinstance(bar, BarTerm)
    assert bar.lhs == "Days"
    assert bar.factors == ("Subject",)
    assert bar.source == "(Days | Subject)"


def test_nested_slash_expands_like_lme4():
    assert bars("y ~ x + (1 | a/b)") == [("1", ("a",)), ("1", ("b", "a"))]
    assert [b.group for b in parse_formula("y ~ x + (1 | a/b)").bars] == ["a", "b:a"]


def test_three_level_nesting():
    assert bars("y ~ (1 | a/b/c)") == [("1", ("a",)), ("1", ("b", "a")), ("1", ("c", "b", "a"))]


def test_double_bar_splits_into_uncorrelated_terms():
    assert bars("y ~ x + (x || g)") == [("1", ("g",)), ("0 + x", ("g",))]
    assert bars("y ~ (1 + x + z || g)") == [
        ("1", ("g",)),
        ("0 + x", ("g",)),
        ("0 + z", ("g",)),
    ]
    # every piece keeps the user's text for error messages
    assert {b.source for b in parse_formula("y ~ (x || g)").bars} == {"(x || g)"}


def test_interaction_grouping_factor():
    parsed = parse_formula("y ~ 1 + (1 | a:b)")
    assert bars("y ~ 1 + (1 | a:b)") == [("1", ("a", "b"))]
    assert parsed.bars[0].group == "a:b"


def test_crossed_and_several_terms_on_one_factor():
    assert bars("y ~ x + (1 | a) + (1 | b) + (0 + x | a)") == [
        ("1", ("a",)),
        ("1", ("b",)),
        ("0 + x", ("a",)),
    ]


@pytest.mark.parametrize(
    ("text", "fixed"),
    [
        ("y ~ (1 | g)", "1"),
        ("y ~ 1 + (1 | g)", "1"),
        ("y ~ 0 + x + (1 | g)", "0 + x"),
        ("y ~ x - 1 + (1 | g)", "x - 1"),
        ("y ~ (1 | g) + x * z", "x * z"),
        ("y ~ log(x) + I(x**2) + (1 | g)", "log(x) + I(x**2)"),
    ],
)
def test_fixed_part(text, fixed):
    assert parse_formula(text).fixed == fixed


def test_transformed_response():
    assert parse_formula("log(y) ~ x + (1 | g)").response == "log(y)"


def test_whitespace_does_not_matter():
    assert bars("y~x+(1|a/b)+(x||g)") == bars("y ~ x + ( 1 | a / b ) + ( x || g )")


# --------------------------------------------------------------------------- errors


def _message(text: str) -> str:
    with pytest.raises(FormulaError) as excinfo:
        parse_formula(text)
    assert isinstance(excinfo.value, LmmSparseError)
    assert isinstance(excinfo.value, ValueError)
    return str(excinfo.value)


@pytest.mark.parametrize("text", ["y ~ x + ((1 | g)", "y ~ x + (1 | g))", "y ~ log(x + (1 | g)"])
def test_unbalanced_parentheses(text):
    message = _message(text)
    assert "parenthes" in message
    assert text in message


def test_bar_without_parentheses():
    message = _message("y ~ x | g")
    assert "x | g" in message
    assert "parenthes" in message


def test_empty_left_of_bar():
    message = _message("y ~ x + (|g)")
    assert "(|g)" in message


def test_empty_right_of_bar():
    message = _message("y ~ x + (1|)")
    assert "(1|)" in message


def test_no_random_term():
    message = _message("y ~ x + z")
    assert "y ~ x + z" in message
    assert "random" in message


def test_duplicated_term():
    message = _message("y ~ x + (1 | g) + (1|g)")
    assert "(1|g)" in message
    assert "twice" in message or "duplicate" in message


def test_duplicated_term_from_double_bar():
    # (x || g) already contains (1 | g)
    message = _message("y ~ (1 | g) + (x || g)")
    assert "(x || g)" in message


def test_bad_grouping_factor():
    message = _message("y ~ (1 | g + h)")
    assert "g + h" in message


def test_no_response():
    assert "~ x + (1 | g)" in _message("~ x + (1 | g)")


def test_not_a_string():
    with pytest.raises(FormulaError):
        parse_formula(None)


# --------------------------------------------------------------------------- with data


@pytest.fixture
def small_data():
    rng = np.random.default_rng(1)
    n = 60
    x = rng.normal(size=n)
    effect = np.repeat(rng.normal(0, 2, 6), 10)  # a real group effect: no singular fit
    return pd.DataFrame(
        {
            "y": 1 + 0.5 * x + effect + rng.normal(size=n),
            "x": x,
            "g": np.repeat([f"g{i}" for i in range(6)], 10),
        }
    )


@pytest.mark.parametrize(
    ("formula", "missing"),
    [
        ("y ~ x + w + (1 | g)", "w"),  # fixed part
        ("yy ~ x + (1 | g)", "yy"),  # response
        ("y ~ x + (1 | grp)", "grp"),  # grouping factor
        ("y ~ x + (1 + slope | g)", "slope"),  # random-effects term
        ("y ~ x + (1 | g/cell)", "cell"),  # nested factor
    ],
)
def test_missing_column_is_named(small_data, formula, missing):
    with pytest.raises(FormulaError) as excinfo:
        lmm_sparse.lmer(formula, small_data)
    assert repr(missing) in str(excinfo.value) or f"'{missing}'" in str(excinfo.value)


@pytest.mark.parametrize(
    "formula", ["Informed.liking ~ x.1 + (1 | g)", "`Informed.liking` ~ `x.1` + (1 | g)"]
)
def test_column_names_with_dots(small_data, formula):
    # R data often has dotted names (lmerTest's ham: Informed.liking); formulaic's
    # model_matrix reads them, plain or in backticks
    data = small_data.rename(columns={"y": "Informed.liking", "x": "x.1"})
    res = lmm_sparse.lmer(formula, data)
    ref = lmm_sparse.lmer("y ~ x + (1 | g)", small_data)
    assert res.objective == pytest.approx(ref.objective, rel=1e-10)
    np.testing.assert_allclose(res.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=1e-8)
