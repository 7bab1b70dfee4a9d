"""Formula fuzz run and parser round-trips (hypothesis, derandomized, fixed example budgets).

* Random strings, biased toward formula syntax and the fixed data frame's column names:
  ``parse_formula`` and ``lmer`` either succeed or raise an ``LmmSparseError`` subclass,
  never another exception type.
* Formulas generated from a grammar (response ~ fixed terms + bar terms with ``|``/``||``,
  nested ``/`` and interaction ``:`` factors, random spacing): parsing gives the expected
  expanded terms (lme4's expansion of ``||`` and ``/``), rendering the parsed terms and
  parsing again is a fixed point, and the model built from them has the expected
  random-effects structure.
* Messy data frames: only our error types.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import (
    INTERCEPT,
    MESSY_FORMULAS,
    formula_texts,
    fuzz_frame,
    grammar_formulas,
    lme4_refuses,
    messy_frames,
)

import lmm_sparse
from lmm_sparse.errors import DataError, FormulaError, LmmSparseError, ModelSpecError
from lmm_sparse.formula import BarTerm, ParsedFormula, parse_formula


def hsettings(max_examples: int, **kwargs):
    return settings(max_examples=max_examples, deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow], **kwargs)


FUZZ_FRAME = fuzz_frame()


# --------------------------------------------------------------------------- random strings


def check_parsed(parsed: ParsedFormula, text: str) -> None:
    """What any successful parse must satisfy."""
    assert isinstance(parsed, ParsedFormula)
    assert parsed.text == text
    assert parsed.response.strip() and parsed.response == parsed.response.strip()
    assert parsed.fixed.strip()
    assert parsed.bars, "a parsed formula has random-effects terms"
    for bar in parsed.bars:
        assert isinstance(bar, BarTerm)
        assert bar.lhs.strip()
        assert bar.factors and all(isinstance(f, str) and f.strip() for f in bar.factors)
        assert bar.source and bar.source in text
    keys = [(re.sub(r"\s+", "", b.lhs), b.factors) for b in parsed.bars]
    assert len(set(keys)) == len(keys), "duplicate terms are refused"


@hsettings(1500)
@given(text=formula_texts())
def test_parse_formula_random_strings(text):
    try:
        parsed = parse_formula(text)
    except LmmSparseError as exc:
        assert str(exc), "an error says what is wrong"
        return
    check_parsed(parsed, text)


@hsettings(400)
@given(text=formula_texts())
def test_lmer_random_strings(text):
    """lmer on a fixed small data frame: a fit or one of our errors."""
    before = FUZZ_FRAME.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = lmm_sparse.lmer(text, FUZZ_FRAME)
        except LmmSparseError as exc:
            assert str(exc)
            res = None
    if res is not None:
        assert np.isfinite(res.objective)
        assert res.nobs <= len(FUZZ_FRAME)
        assert np.all(np.isfinite(res.fixef.to_numpy()))
    pd.testing.assert_frame_equal(FUZZ_FRAME, before)


@pytest.mark.parametrize("text", [
    "y ~ (1 | g) + 1e-3",
    "y ~ x + (1 | g) + (1 | g)",
    "y ~ x + (1 | g:)",
    "y ~ x + ((1 | g) | h)",
    "y ~ x + (1 | g) | h",
    "y ~ (|g)",
    "y ~ (1 | `g )",
    "y ~ x x + (1 | g)",
    "y ~ (1 | g) ~ x",
    "y ~ (0 | g)",
    "y ~ (0 || g)",
    "y ~ (x | y)",
    "y ~ -(1 | g)",
    "(1 | g) ~ x",
    "c ~ (1 | g)",
    "y ~ (1 | nothere)",
    "y ~ nothere + (1 | g)",
])
def test_known_bad_formulas_raise_our_errors(text):
    """Seeds of the fuzz run: each is refused with one of our errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(LmmSparseError):
            lmm_sparse.lmer(text, FUZZ_FRAME)


@hsettings(100)
@given(value=st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=10),
                       st.lists(st.text(max_size=5), max_size=3)))
def test_non_string_formula(value):
    with pytest.raises(FormulaError):
        parse_formula(value)
    with pytest.raises(LmmSparseError):
        lmm_sparse.lmer(value, FUZZ_FRAME)


# --------------------------------------------------------------------------- grammar


@hsettings(500)
@given(case=grammar_formulas())
def test_grammar_formula_parses_to_expected_terms(case):
    if case.duplicate:
        with pytest.raises(FormulaError, match="appears twice"):
            parse_formula(case.text)
        return
    parsed = parse_formula(case.text)
    assert parsed.response == case.response
    assert parsed.fixed == case.fixed
    got = [(b.lhs, b.factors, b.source) for b in parsed.bars]
    assert got == list(case.bars), case.text
    check_parsed(parsed, case.text)


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]*", name) else f"`{name}`"


def render(parsed: ParsedFormula) -> str:
    """The parsed formula written back with expanded terms: ``(lhs | f1:f2)`` only."""
    bars = " + ".join(f"({b.lhs} | {':'.join(map(_quote, b.factors))})" for b in parsed.bars)
    return f"{parsed.response} ~ {parsed.fixed} + {bars}"


@hsettings(300)
@given(case=grammar_formulas())
def test_parse_render_parse_is_a_fixed_point(case):
    if case.duplicate:
        return
    first = parse_formula(case.text)
    second = parse_formula(render(first))
    assert second.response == first.response
    assert second.fixed == first.fixed
    assert [(b.lhs, b.factors) for b in second.bars] == [(b.lhs, b.factors) for b in first.bars]
    assert [b.group for b in second.bars] == [b.group for b in first.bars]


def grammar_frame(n: int = 160, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = np.exp(0.3 * x + rng.normal(0, 0.3, n))
    return pd.DataFrame({
        "y": y,
        "y.obs": y + rng.normal(0, 0.1, n),
        "x": x,
        "z": rng.uniform(0.5, 2.0, n),
        "c": rng.choice(["p", "q", "r"], n),
        "g": rng.integers(0, 8, n),
        "h": [f"h{v}" for v in rng.integers(0, 5, n)],
        "k": rng.choice(["k1", "k2", "k3", "k4"], n),
        "g.sub": rng.integers(0, 3, n),
        "my g": [f"m{v}" for v in rng.integers(0, 6, n)],
    })


GRAMMAR_FRAME = grammar_frame()


def coefficient_names(lhs: str) -> tuple[str, ...]:
    """Columns of a bar's model matrix for the grammar's left-hand sides."""
    pieces = [p.strip() for p in lhs.split("+")]
    names = [] if "0" in pieces else [INTERCEPT]
    return tuple(names + [p for p in pieces if p not in ("0", "1")])


@hsettings(80)
@given(case=grammar_formulas())
def test_grammar_formula_builds_expected_structure(case):
    """The model of a grammar formula has one term per expanded bar with the expected
    grouping factor and coefficients, or is refused by lme4's identifiability checks."""
    expected = sorted((factors, coefficient_names(lhs)) for lhs, factors, _ in case.bars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = lmm_sparse.LinearMixedModel(case.text, GRAMMAR_FRAME)
        except FormulaError:
            assert case.duplicate, case.text
            return
        except ModelSpecError:
            assert lme4_refuses(GRAMMAR_FRAME, expected, len(GRAMMAR_FRAME)), case.text
            return
    assert not case.duplicate
    assert not lme4_refuses(GRAMMAR_FRAME, expected, len(GRAMMAR_FRAME)), case.text
    got = sorted((t.bar.factors, t.coef_names) for t in model.re.terms)
    assert got == expected, case.text
    for term in model.re.terms:
        levels = GRAMMAR_FRAME[list(term.bar.factors)].drop_duplicates()
        assert term.nlevels == len(levels)


@pytest.mark.parametrize("text", ["y ~ (1 ~ x | g)", "y ~ x + c + (1 ~+ x | g) + (1 | h)",
                                  "y ~ (1 ~ x || g)"])
def test_tilde_inside_a_bar_is_a_formula_error(text):
    """Found by the fuzz run: a '~' inside a bar reached formulaic as a two-sided formula
    (plain ValueError), and (1 ~ x || g) was silently fitted as (x || g)."""
    with pytest.raises(FormulaError):
        parse_formula(text)
    with pytest.raises(FormulaError):
        lmm_sparse.LinearMixedModel(text, FUZZ_FRAME)


# --------------------------------------------------------------------------- messy frames


@hsettings(200)
@given(df=messy_frames(), formula=st.sampled_from(MESSY_FORMULAS), reml=st.booleans())
@example(df=pd.DataFrame({"y": [0.1, 0.5, 0.3], "x": [1.0, 2.0, 4.0], "c": ["u", "v", "w"],
                          "g": [0, 0, 1]}), formula="y ~ x + c + (x | g)", reml=True)
@example(df=pd.DataFrame({"y": [0.1, 0.5, 0.3, 0.9], "x": pd.to_timedelta([1, 2, 4, 3], unit="D"),
                          "g": [0, 0, 1, 1]}), formula="y ~ x + (1 | g)", reml=True)
def test_messy_frames_raise_only_our_errors(df, formula, reml):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = lmm_sparse.lmer(formula, df, reml=reml)
        except LmmSparseError as exc:
            assert str(exc)
            return
    assert np.isfinite(res.objective)
    assert res.nobs <= len(df)


def test_messy_more_columns_than_rows():
    """Found by the messy-frame run: n < p gave a plain ValueError from the rank check."""
    df = pd.DataFrame({"y": [0.1, 0.5, 0.3], "x": [1.0, 2.0, 4.0], "c": ["u", "v", "w"],
                       "g": [0, 0, 1]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError):
            lmm_sparse.LinearMixedModel("y ~ x + c + (1 | g)", df)


def test_messy_timedelta_predictor():
    """Found by the messy-frame run: a duration column gave a plain TypeError."""
    df = pd.DataFrame({"y": [0.1, 0.5, 0.3, 0.9, 0.2, 0.4],
                       "x": pd.to_timedelta([1, 2, 4, 3, 5, 6], unit="D"),
                       "g": [0, 0, 1, 1, 2, 2]})
    with pytest.raises(DataError):
        lmm_sparse.LinearMixedModel("y ~ x + (1 | g)", df)


@pytest.mark.parametrize("column", ["y", "x"])
def test_messy_complex_values_are_refused(column):
    """Complex values were cast to float silently, dropping the imaginary part."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=20), "x": rng.normal(size=20),
                       "g": np.arange(20) % 4})
    df[column] = df[column] + 1j * rng.normal(size=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError):
            lmm_sparse.LinearMixedModel("y ~ x + (1 | g)", df)
