"""The fitted-model object: summary text, predictions, missing values, data safety."""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import SLEEP_FORMULA, case_data, case_formula, load_reference, read_cases

import lmm_sparse
from lmm_sparse import datasets

# --------------------------------------------------------------------------- summary


def test_summary_prints_lme4s_numbers(sleep_fit):
    """The numbers lme4 1.1-31 prints for print(summary(lmer(Reaction ~ Days + (Days|Subject),
    sleepstudy))), checked against R. Whitespace is compared loosely (collapsed)."""
    text = sleep_fit.summary()
    assert isinstance(text, str)
    flat = re.sub(r"\s+", " ", text)

    def has(pattern: str) -> None:
        assert re.search(pattern, flat), f"summary lacks /{pattern}/:\n{text}"

    has(r"REML criterion at convergence: 1743\.6\b")
    # Scaled residuals: Min 1Q Median 3Q Max
    has(r"-3\.9536 -0\.4634 0\.0231 0\.4634 5\.1793")
    # Random effects. lme4 prints 612.10 / 24.741 for the intercept: its default optimizer
    # stops at 612.1002 (theta 0.966742); the optimum itself (bobyqa with rhoend = 1e-12,
    # REML criterion 1743.628271958491, a hair lower) is 612.0897 / 24.74045, printed
    # 612.09 / 24.740. Either rounding is lme4's answer.
    has(r"Subject \(Intercept\) 612\.(?:09|10) 24\.74[01]")
    has(r"Days 35\.07 5\.922 0\.07\b")
    has(r"Residual 654\.94 25\.592")
    has(r"Number of obs: 180, groups: Subject, 18")
    # Fixed effects: Estimate, Std. Error, t value
    has(r"\(Intercept\) 251\.405 6\.825 36\.838")
    has(r"Days 10\.467 1\.546 6\.771")
    # Correlation of Fixed Effects
    has(r"Correlation of Fixed Effects")
    has(r"Days -0\.138\b")


def test_summary_mentions_the_fit(sleep_fit):
    text = sleep_fit.summary()
    assert "REML" in text
    assert SLEEP_FORMULA in text
    assert "Linear mixed model fit by REML" in text


# --------------------------------------------------------------------------- accessors


def test_basic_accessors(sleep_fit):
    res = sleep_fit
    assert res.reml is True
    assert res.nobs == 180
    assert res.ngroups == {"Subject": 18}
    assert list(res.fixef.index) == ["(Intercept)", "Days"]
    assert list(res.vcov.index) == list(res.fixef.index)
    assert list(res.vcov.columns) == list(res.fixef.index)
    table = res.coef_table()
    assert list(table.columns) == ["estimate", "std_error", "df", "t_value", "p_value"]
    np.testing.assert_allclose(table["estimate"], res.fixef, rtol=1e-12)
    np.testing.assert_allclose(table["std_error"], np.sqrt(np.diag(res.vcov)), rtol=1e-12)
    np.testing.assert_allclose(table["t_value"], res.fixef / table["std_error"], rtol=1e-12)
    assert list(res.varcorr.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert res.varcorr["grp"].iloc[-1] == "Residual"
    assert res.varcorr["sdcor"].iloc[-1] == pytest.approx(res.sigma, rel=1e-12)
    assert set(res.ranef) == {"Subject"}
    ranef = res.ranef["Subject"]
    assert ranef.shape == (18, 2)
    assert list(ranef.index[:2].astype(str)) == ["308", "309"]
    assert res.converged
    assert not res.is_singular
    assert res.optinfo.feval > 0
    assert res.optinfo.seconds >= 0
    assert isinstance(res.optinfo.method, str)
    assert len(res.theta) == 3


def test_information_criteria(sleep_fit):
    res = sleep_fit
    k = len(res.fixef) + len(res.theta) + 1  # beta, theta, sigma
    assert res.loglik == pytest.approx(-res.objective / 2, rel=1e-12)
    assert res.aic == pytest.approx(res.objective + 2 * k, rel=1e-12)
    assert res.bic == pytest.approx(res.objective + k * np.log(res.nobs), rel=1e-12)


def test_fitted_plus_residuals_is_y(sleep, sleep_fit):
    y = sleep["Reaction"].to_numpy()
    np.testing.assert_allclose(sleep_fit.fitted + sleep_fit.residuals, y, rtol=1e-12, atol=1e-9)
    assert sleep_fit.fitted.shape == (180,)
    assert sleep_fit.residuals.shape == (180,)


def test_fitted_is_x_beta_plus_z_b(sleep, sleep_fit):
    # sleepstudy: fitted = (beta0 + b0[subject]) + (beta1 + b1[subject]) * Days
    b = sleep_fit.ranef["Subject"]
    b.index = b.index.astype(str)
    subj = sleep["Subject"].astype(str)
    beta = sleep_fit.fixef
    expected = (
        beta["(Intercept)"]
        + b.loc[subj, "(Intercept)"].to_numpy()
        + (beta["Days"] + b.loc[subj, "Days"].to_numpy()) * sleep["Days"].to_numpy()
    )
    np.testing.assert_allclose(sleep_fit.fitted, expected, rtol=1e-10)


# --------------------------------------------------------------------------- predict


def test_predict_on_training_data_is_fitted(sleep, sleep_fit):
    np.testing.assert_allclose(sleep_fit.predict(sleep), sleep_fit.fitted, rtol=1e-10)


def test_predict_unseen_level_is_population_prediction(sleep, sleep_fit):
    beta = sleep_fit.fixef
    new = pd.DataFrame({"Days": [0, 4.5, 9], "Subject": [999, 999, 1000]})
    pred = np.asarray(sleep_fit.predict(new, allow_new_levels=True))
    expected = beta["(Intercept)"] + beta["Days"] * new["Days"].to_numpy()
    np.testing.assert_allclose(pred, expected, rtol=1e-12)


def test_predict_mixes_seen_and_unseen_levels(sleep, sleep_fit):
    beta = sleep_fit.fixef
    row = sleep.index[(sleep["Subject"] == 308) & (sleep["Days"] == 3)][0]
    new = pd.DataFrame({"Days": [3, 3], "Subject": [308, 12345]})
    pred = np.asarray(sleep_fit.predict(new, allow_new_levels=True))
    assert pred[0] == pytest.approx(sleep_fit.fitted[row], rel=1e-10)
    assert pred[1] == pytest.approx(beta["(Intercept)"] + 3 * beta["Days"], rel=1e-12)


def test_predict_does_not_modify_newdata(sleep_fit):
    new = pd.DataFrame({"Days": [1, 2], "Subject": [308, 999]})
    before = copy.deepcopy(new)
    sleep_fit.predict(new, allow_new_levels=True)
    pd.testing.assert_frame_equal(new, before)


# --------------------------------------------------------------------------- missing values


DIETOX_FEED = "Weight ~ Time + Feed + (1 | Pig)"


def test_rows_with_missing_values_are_dropped():
    dietox = datasets.load("dietox")
    assert dietox["Feed"].isna().sum() == 72
    res = lmm_sparse.lmer(DIETOX_FEED, dietox)
    assert res.nobs == 861 - 72 == 789  # lme4: nobs(m) = 789
    assert res.ngroups == {"Pig": 72}
    assert res.fitted.shape == (789,)
    assert res.residuals.shape == (789,)
    # lme4 1.1-31 on the same data: REMLcrit 4101.94333357208, fixef below
    assert res.objective <= 4101.94333357208 + 2e-3
    assert res.objective == pytest.approx(4101.94333357208, abs=2e-3)
    se = res.coef_table(ddf=None)["std_error"]
    for name, value in {
        "(Intercept)": 19.9481489759,
        "Time": 4.3034832208,
        "Feed": 0.1724421008,
    }.items():
        assert abs(res.fixef[name] - value) <= 0.01 * se[name], name
    # the same as fitting the complete rows only
    complete = dietox.dropna(subset=["Weight", "Time", "Feed", "Pig"])
    ref = lmm_sparse.lmer(DIETOX_FEED, complete)
    assert res.objective == pytest.approx(ref.objective, rel=1e-12)
    np.testing.assert_allclose(res.fixef, ref.fixef, rtol=1e-10)
    y = complete["Weight"].to_numpy()
    np.testing.assert_allclose(res.fitted + res.residuals, y, rtol=1e-12, atol=1e-9)


def test_missing_values_in_unused_columns_do_not_drop_rows():
    dietox = datasets.load("dietox")
    res = lmm_sparse.lmer("Weight ~ Time + (1 | Pig)", dietox)  # Feed (with NA) unused
    assert res.nobs == 861


# --------------------------------------------------------------------------- data safety


def _fit_quietly(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmm_sparse.errors.LmmSparseWarning)
        return lmm_sparse.lmer(formula, data, **kwargs)


@pytest.mark.parametrize(
    ("name", "formula"),
    [
        ("sleepstudy", SLEEP_FORMULA),
        ("dietox", DIETOX_FEED),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
        ("ergoStool", "effort ~ Type + (1 | Subject)"),
        ("Machines", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)"),
    ],
)
def test_user_data_frame_is_not_modified(name, formula):
    data = datasets.load(name)
    before = copy.deepcopy(data)
    res = _fit_quietly(formula, data, reml=False)
    pd.testing.assert_frame_equal(data, before)
    res.predict(data)
    pd.testing.assert_frame_equal(data, before)


def test_categorical_columns_are_not_modified():
    data = datasets.load("Machines")
    data["Worker"] = pd.Categorical(data["Worker"].astype(str))
    data["Machine"] = pd.Categorical(data["Machine"], categories=["C", "B", "A"])
    before = copy.deepcopy(data)
    _fit_quietly("score ~ Machine + (1 | Worker)", data)
    pd.testing.assert_frame_equal(data, before)
    assert list(data["Machine"].cat.categories) == ["C", "B", "A"]


def test_theta_of_the_wrong_shape_is_refused(sleep):
    model = lmm_sparse.LinearMixedModel(SLEEP_FORMULA, sleep)
    for bad in (np.array(1.0), np.ones(2)):
        with pytest.raises(ValueError, match="theta must have 3 elements"):
            model.Lambda(bad)
        with pytest.raises(ValueError, match="theta must have 3 elements"):
            model.objective(bad)


def test_term_order_is_lme4s_including_ties():
    from lmm_sparse.terms import lme4_term_order

    assert lme4_term_order([5, 3, 3]) == [0, 1, 2]  # never increasing: formula order
    # lme4 reverses an ascending stable sort: ties come in reverse formula order
    assert lme4_term_order([10, 10, 20]) == [2, 1, 0]
    assert lme4_term_order([3, 9, 3, 9]) == [3, 1, 2, 0]
    # and the model follows it: theta and varcorr in lme4's order (its varcorr rows:
    # Dog.Side, then day | Dog, then (Intercept) | Dog)
    case = next(c for c in read_cases("cases_extra.csv")
                if c["id"] == "pixel_terms_same_factor_ml")
    ref = load_reference("lme4_extra.json")[case["id"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lmm_sparse.lmer(case_formula(case), case_data(case), reml=case["reml"])
    assert list(res.varcorr["var1"][:3]) == ref["varcorr"]["var1"][:3]
    np.testing.assert_allclose(res.theta, ref["theta"], rtol=2e-3)
