"""predict(): lme4's predict.merMod with re_form, newdata, allow_new_levels and na.pass."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import case_data, case_formula, load_reference, read_cases

import lmm_sparse
from lmm_sparse import datasets
from lmm_sparse.errors import DataError, FormulaError
from lmm_sparse.predict import predict, select_random_effects

EXTRA_CASES = read_cases("cases_extra.csv")
# Acceptance rule of the parity tests: each fixed effect within 1% of its standard error.
FIXEF_SE_FRACTION = 0.01


@pytest.fixture(scope="module")
def pastes():
    return datasets.load("Pastes")


@pytest.fixture(scope="module")
def pastes_fit(pastes):
    return lmm_sparse.lmer("strength ~ 1 + (1 | batch/cask)", pastes)


def population(res) -> np.ndarray:
    return res.model.X @ res.fixef.to_numpy()


# --------------------------------------------------------------------------- lme4 values


@pytest.mark.parametrize("case", EXTRA_CASES, ids=[c["id"] for c in EXTRA_CASES])
def test_population_predictions_match_lme4(case):
    """predict(m, re.form = NA): first 10 values and the sum of squares, lme4 1.1-31.

    Tolerance from the parity rule |beta - beta_lme4| <= 1% se: a prediction x'beta may
    then differ by up to 0.01 sum_j |x_j| se_j, and the sum of squares by
    sum_i (2 |p_i| d_i + d_i^2) with d_i that bound (plus rounding)."""
    ref = load_reference("lme4_inference_extra.json")[case["id"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits of some cases: not what is tested
        res = lmm_sparse.lmer(case_formula(case), case_data(case), reml=case["reml"])
    pred = predict(res, re_form="~0")
    se = res.coef_table()["std_error"].to_numpy()
    bound = FIXEF_SE_FRACTION * np.abs(res.model.X) @ se + 1e-9 * np.abs(pred)
    head = np.asarray(ref["predict_population_head"], dtype=float)
    assert np.all(np.abs(pred[: len(head)] - head) <= bound[: len(head)])
    sumsq_bound = np.sum(2 * np.abs(pred) * bound + bound**2) + 1e-9 * np.sum(pred**2)
    assert abs(np.sum(pred**2) - ref["predict_population_sumsq"]) <= sumsq_bound


# --------------------------------------------------------------------------- re_form


def test_conditional_at_the_fitting_data_is_fitted(sleep, sleep_fit):
    np.testing.assert_array_equal(predict(sleep_fit), sleep_fit.fitted)
    np.testing.assert_allclose(predict(sleep_fit, sleep), sleep_fit.fitted, rtol=1e-13)
    assert predict(sleep_fit) is not sleep_fit.fitted  # a copy


@pytest.mark.parametrize("form", ["~0", "~ 0", "NA", "na", np.nan, pd.NA, None])
def test_population_spellings(sleep, sleep_fit, form):
    if form is None:  # None is "all random effects", the one spelling that is not NA
        assert not np.allclose(predict(sleep_fit, re_form=form), population(sleep_fit))
        return
    np.testing.assert_allclose(predict(sleep_fit, re_form=form), population(sleep_fit),
                               rtol=1e-14)
    np.testing.assert_allclose(predict(sleep_fit, sleep, re_form=form),
                               population(sleep_fit), rtol=1e-13)


def test_re_form_selects_coefficients_of_a_term(sleep, sleep_fit):
    """~(1 | Subject) keeps the intercepts of (Days | Subject) and drops the slopes;
    ~(0 + Days | Subject) the reverse; together they make the conditional prediction."""
    b = sleep_fit.ranef["Subject"]
    codes = sleep_fit.model.re.terms[0].codes
    days = sleep["Days"].to_numpy()
    intercepts = predict(sleep_fit, re_form="~(1 | Subject)")
    np.testing.assert_allclose(
        intercepts, population(sleep_fit) + b["(Intercept)"].to_numpy()[codes], rtol=1e-13)
    slopes = predict(sleep_fit, sleep, re_form="~(0 + Days | Subject)")
    np.testing.assert_allclose(
        slopes, population(sleep_fit) + days * b["Days"].to_numpy()[codes], rtol=1e-13)
    both = predict(sleep_fit, re_form="~(1 | Subject) + (0 + Days | Subject)")
    np.testing.assert_allclose(both, sleep_fit.fitted, rtol=1e-13)
    sel = select_random_effects(sleep_fit.model, "~(1 | Subject)")
    assert not sel.all and not sel.none and sel.terms() == [0]


def test_re_form_selects_terms_of_a_nested_model(pastes, pastes_fit):
    """(1 | batch/cask) is (1 | batch) + (1 | cask:batch); either can be named, the
    interaction in any order of its factors."""
    model = pastes_fit.model
    i_batch = next(i for i, t in enumerate(model.re.terms) if t.group == "batch")
    batch_only = population(pastes_fit) + pastes_fit._b[i_batch][model.re.terms[i_batch].codes, 0]
    np.testing.assert_allclose(predict(pastes_fit, re_form="~(1 | batch)"), batch_only,
                               rtol=1e-13)
    np.testing.assert_allclose(predict(pastes_fit, pastes, re_form="~(1 | batch)"),
                               batch_only, rtol=1e-13)
    np.testing.assert_allclose(predict(pastes_fit, pastes, re_form="~(1 | batch:cask)"),
                               predict(pastes_fit, re_form="~(1 | cask:batch)"), rtol=1e-13)
    np.testing.assert_allclose(predict(pastes_fit, re_form="~(1 | batch/cask)"),
                               pastes_fit.fitted, rtol=1e-13)


@pytest.mark.parametrize(
    "form, message",
    [
        ("~(1 | Nope)", "grouping factor 'Nope' is not in the model"),
        ("~(0 + Reaction | Subject)", "Reaction not among the random effects of 'Subject'"),
        (3, "re_form must be None"),
        ("~(1 | Subject", "unbalanced parentheses"),
    ],
)
def test_bad_re_form(sleep_fit, form, message):
    with pytest.raises(FormulaError, match=message):
        predict(sleep_fit, re_form=form)


# --------------------------------------------------------------------------- newdata


def test_new_levels_are_an_error_naming_them(sleep, sleep_fit):
    new = sleep.head(4).copy()
    new["Subject"] = [308, 1001, 1002, 1001]
    with pytest.raises(DataError, match=r"2 level\(s\) of grouping factor 'Subject'.*1001, 1002"):
        predict(sleep_fit, new)
    out = predict(sleep_fit, new, allow_new_levels=True)
    pop = predict(sleep_fit, new, re_form="~0")
    assert out[0] == pytest.approx(sleep_fit.fitted[0], rel=1e-13)  # a known subject
    np.testing.assert_allclose(out[1:], pop[1:], rtol=1e-14)  # zero random effects
    # a level that is new only to a term left out by re_form is no error (lme4)
    np.testing.assert_allclose(predict(sleep_fit, new, re_form="~0"), pop)


def test_missing_values_give_nan_rows(sleep, sleep_fit):
    """na.pass: a missing predictor or grouping value makes that row NaN, others are kept;
    a missing grouping value does not matter at the population level."""
    new = sleep.head(5).copy()
    new.loc[1, "Days"] = np.nan
    new["Subject"] = new["Subject"].astype(object)
    new.loc[3, "Subject"] = None
    new.loc[4, "Reaction"] = np.nan  # the response is not needed
    out = predict(sleep_fit, new)
    assert np.isnan(out[[1, 3]]).all()
    np.testing.assert_allclose(out[[0, 2, 4]], sleep_fit.fitted[[0, 2, 4]], rtol=1e-13)
    pop = predict(sleep_fit, new, re_form="~0")
    assert np.isnan(pop[1]) and np.isfinite(pop[[0, 2, 3, 4]]).all()


def test_missing_or_unseen_factor_values_in_fixed_effects():
    """A factor of the fixed part: NaN for a missing value (formulaic alone would encode
    it as the reference level), an error for a level the fit did not see."""
    df = case_data(next(c for c in EXTRA_CASES if c["id"] == "orthodont_slopes_interaction"))
    res = lmm_sparse.lmer("distance ~ age * Sex + (age | Subject)", df)
    new = df.head(3).copy()
    new["Sex"] = new["Sex"].astype(object)
    new.loc[0, "Sex"] = np.nan
    out = predict(res, new)
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    new.loc[0, "Sex"] = "Other"
    with pytest.raises(DataError, match=r"column 'Sex' has value\(s\) 'Other'"):
        predict(res, new)


def test_level_types_are_matched_by_text(sleep, sleep_fit):
    """Subjects read as text ("308") find the levels fitted from numbers (308)."""
    new = sleep.head(3).copy()
    new["Subject"] = new["Subject"].astype(str)
    np.testing.assert_allclose(predict(sleep_fit, new), sleep_fit.fitted[:3], rtol=1e-13)


def test_newdata_errors(sleep, sleep_fit):
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        predict(sleep_fit, sleep.to_numpy())
    with pytest.raises(DataError, match=r"grouping column\(s\) \['Subject'\]"):
        predict(sleep_fit, sleep.drop(columns="Subject"))
    with pytest.raises(DataError, match="Days"):
        predict(sleep_fit, sleep.drop(columns="Days"))
    # the population prediction needs no grouping column
    pop = predict(sleep_fit, sleep.drop(columns="Subject"), re_form="~0")
    np.testing.assert_allclose(pop, population(sleep_fit), rtol=1e-13)


def test_newdata_is_not_modified(sleep, sleep_fit):
    new = sleep.head(6).copy()
    new.loc[1, "Days"] = np.nan
    new.loc[2, "Subject"] = 4242
    kept = new.copy()
    predict(sleep_fit, new, allow_new_levels=True)
    predict(sleep_fit, new, re_form="~(1 | Subject)", allow_new_levels=True)
    pd.testing.assert_frame_equal(new, kept)
