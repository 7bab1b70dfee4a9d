"""Prior weights and offsets (``lmer(..., weights=, offset=)``) against lme4 and identities.

* lme4's answers (``tests/data/reference/lme4_weights.json``, written by
  ``lme4_weights.R`` with lme4 1.1-31 and lmerTest): weighted REML and ML fits, a crossed
  model, an offset, weights with an offset, and weights/offset read from columns with
  missing values, compared with the parity tests' rules (``conftest.compare_to_lme4``) plus
  fitted values, residuals, Pearson residuals, conditional modes, lme4's log-weights term
  and lmerTest's Satterthwaite table;
* identities: weights all 1 are no weights; integer weights are replicated rows (the
  penalized least-squares solution at any theta, hence beta and b); an offset is the same
  fit as the response minus the offset;
* the other consumers: refit/with_response, simulate, the ML refit of anova(), bootstrap
  workers' recipe, predict;
* bad input: an error naming the argument.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import (
    FIXEF_SE_FRACTION,
    RANEF_ABS,
    RANEF_SD_FRACTION,
    SE_REL,
    compare_to_lme4,
    load_reference,
    r_name,
)

import lmm_sparse
from lmm_sparse.errors import DataError, LmmSparseWarning, ModelSpecError
from lmm_sparse.lrt import ml_refit
from lmm_sparse.parallel import ModelRecipe

REFERENCE = "lme4_weights.json"
SLEEP = "Reaction ~ Days + (Days | Subject)"


def derived(name: str) -> pd.DataFrame:
    """A packaged data set with the weights/offset columns of lme4_weights.R's ``derive``."""
    df = lmm_sparse.datasets.load(name)
    if name == "sleepstudy":
        df["w"] = 1 + df["Subject"] % 3 + df["Days"] / 10
        df["off"] = 2.5 * df["Days"]
    elif name == "Penicillin":
        df["w"] = df["sample"].map(lambda s: (ord(s) - ord("A") + 1) / 2)
    return df


def fit_case(ref: dict) -> lmm_sparse.LmerResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LmmSparseWarning)
        return lmm_sparse.lmer(ref["formula"], derived(ref["data"]), reml=ref["reml"],
                               weights=ref["weights"], offset=ref["offset"])


CASES = list(load_reference(REFERENCE))


@pytest.fixture(scope="module")
def fits() -> dict:
    return {case: fit_case(load_reference(REFERENCE)[case]) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_matches_lme4(fits, case):
    compare_to_lme4(fits[case], load_reference(REFERENCE)[case], label=case)


@pytest.mark.parametrize("case", CASES)
def test_log_weights_term_and_criterion(fits, case):
    """lme4's criterion includes -sum(log w); logLik = -criterion / 2."""
    res, ref = fits[case], load_reference(REFERENCE)[case]
    assert res.model.cp.log_weights == pytest.approx(ref["log_weights"], rel=1e-12, abs=1e-12)
    assert res.loglik == pytest.approx(-res.objective / 2, rel=1e-14)
    if not res.reml:
        assert res.deviance == res.objective
    # the reported criterion is the model's own devfun at the optimum
    assert res.model.objective(res.theta) == pytest.approx(res.objective, rel=1e-12)
    assert res.optinfo.fval == pytest.approx(res.objective, rel=1e-12)


def _fitted_tolerance(res, ref: dict) -> np.ndarray:
    """Per row, what the parity tolerances on beta (1% of se) and on the conditional modes
    (1% of their sd, at least 1e-3) allow a fitted value to move: sum |x_j| tol_j."""
    model = res.model
    se = np.array([ref["se"][r_name(n)] if r_name(n) in ref["se"] else ref["se"][n]
                   for n in res.fixef.index])
    tol = np.abs(model.X) @ (FIXEF_SE_FRACTION * se)
    vc = res.varcorr
    for term in model.re.terms:
        sd = np.array([float(vc[(vc.grp == term.group) & (vc.var1 == c) & vc.var2.isna()]
                             ["sdcor"].iloc[0]) for c in term.coef_names])
        tol = tol + np.abs(term.X) @ np.maximum(RANEF_SD_FRACTION * sd, RANEF_ABS)
    return tol


@pytest.mark.parametrize("case", CASES)
def test_fitted_and_residuals_match_lme4(fits, case):
    res, ref = fits[case], load_reference(REFERENCE)[case]
    k = len(ref["fitted_head"])
    tol = _fitted_tolerance(res, ref)[:k]
    np.testing.assert_array_less(np.abs(res.fitted[:k] - ref["fitted_head"]), tol)
    np.testing.assert_array_less(np.abs(res.residuals[:k] - ref["residuals_head"]), tol)
    weights = res.model.prior.weights
    scale = np.ones(k) if weights is None else np.sqrt(weights[:k])
    np.testing.assert_array_less(np.abs(res.pearson_residuals()[:k] - ref["pearson_head"]),
                                 scale * tol)


@pytest.mark.parametrize(
    "case", [c for c in CASES if load_reference(REFERENCE)[c]["predict_newdata_head"]])
def test_predictions_on_new_rows_match_lme4(fits, case):
    """predict(newdata): weights do not enter, the formula's offset() terms do."""
    res, ref = fits[case], load_reference(REFERENCE)[case]
    new = derived(ref["data"]).head(len(ref["predict_newdata_head"]))
    tol = _fitted_tolerance(res, ref)[: len(new)]  # the new rows are the first fitted rows
    np.testing.assert_array_less(np.abs(res.predict(new) - ref["predict_newdata_head"]), tol)


@pytest.mark.parametrize("case", CASES)
def test_conditional_modes_match_lme4(fits, case):
    res, ref = fits[case], load_reference(REFERENCE)[case]
    vc = res.varcorr
    for group, table in ref["ranef_head"].items():
        ours = res.ranef[group]
        for row, level in enumerate(table["level"]):
            for coef, values in table.items():
                if coef == "level":
                    continue
                sd = float(vc[(vc.grp == group) & (vc.var1 == coef) & vc.var2.isna()]
                           ["sdcor"].iloc[0])
                tol = max(RANEF_SD_FRACTION * sd, RANEF_ABS)
                assert abs(ours.loc[str(level), coef] - values[row]) <= tol, (group, level, coef)


@pytest.mark.parametrize("case", CASES)
def test_satterthwaite_matches_lmertest(fits, case):
    """lmerTest's table for the weighted fits: df within 1% (the inference tests' rule)."""
    res, ref = fits[case], load_reference(REFERENCE)[case]
    table = res.coef_table()
    for name in res.fixef.index:
        key = r_name(name) if r_name(name) in ref["df_satterthwaite"] else name
        assert table.loc[name, "df"] == pytest.approx(ref["df_satterthwaite"][key], rel=0.01)
        assert table.loc[name, "std_error"] == pytest.approx(ref["se"][key], rel=SE_REL)
        assert table.loc[name, "t_value"] == pytest.approx(ref["t_value"][key], rel=1e-3)


def test_rows_with_missing_weights_or_offset_are_dropped(fits):
    """dietox's Feed (the weights) is missing in 72 rows: those rows leave the fit, as lme4."""
    df = lmm_sparse.datasets.load("dietox")
    res = fits["dietox_w_offset_ml"]
    kept = df["Feed"].notna().to_numpy()
    assert res.nobs == kept.sum() == 789
    np.testing.assert_array_equal(res.model.prior.weights, df["Feed"].to_numpy()[kept])
    np.testing.assert_array_equal(res.model.prior.offset, df["Start"].to_numpy()[kept])
    # a missing offset drops its row too
    df2 = derived("sleepstudy")
    off = df2["off"].to_numpy().copy()
    off[[3, 50]] = np.nan
    res2 = lmm_sparse.lmer(SLEEP, df2, offset=off)
    assert res2.nobs == 178


# --------------------------------------------------------------------------- identities


def _close(a, b, rtol=1e-9):
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol)


def test_unit_weights_are_no_weights(sleep):
    plain = lmm_sparse.lmer(SLEEP, sleep)
    ones = lmm_sparse.lmer(SLEEP, sleep, weights=np.ones(len(sleep)))
    assert ones.model.cp.log_weights == 0.0
    for attr in ("theta", "fixef", "fitted"):
        _close(getattr(ones, attr), getattr(plain, attr), rtol=1e-7)
    assert ones.objective == pytest.approx(plain.objective, rel=1e-10)
    assert ones.sigma == pytest.approx(plain.sigma, rel=1e-7)
    _close(ones.pearson_residuals(), plain.residuals, rtol=1e-6)


def test_no_weights_leave_the_cross_products_alone(sleep):
    """Without weights/offset the cross-products are made from X and y themselves."""
    res = lmm_sparse.lmer(SLEEP, sleep)
    model = res.model
    assert model.prior.weights is None and model.prior.offset is None
    from lmm_sparse.crossprod import make_cross_products

    cp = make_cross_products(model.re, model.X, model.y)
    np.testing.assert_array_equal(cp.XyXy, model.cp.XyXy)
    assert cp.log_weights == 0.0


def test_integer_weights_are_replicated_rows(sleep):
    """Weight m_i on row i and m_i copies of row i give the same weighted sums of squares
    and cross-products, so at any theta the same PLS solution: beta, b and pwrss (the ML
    fits' theta differ, as the criteria count n and sum(m) observations)."""
    m = (np.arange(len(sleep)) % 3 + 1).astype(float)
    replicated = sleep.loc[np.repeat(sleep.index.to_numpy(), m.astype(int))].reset_index(drop=True)
    rep = lmm_sparse.lmer(SLEEP, replicated, reml=False)
    weighted = lmm_sparse.LinearMixedModel(SLEEP, sleep, reml=False, weights=m)
    ev_rep = rep.model.workspace.evaluate(rep.theta)
    ev_w = weighted.workspace.evaluate(rep.theta)
    _close(ev_w.beta, rep.fixef.to_numpy(), rtol=1e-10)
    assert ev_w.pwrss == pytest.approx(ev_rep.pwrss, rel=1e-10)
    assert ev_w.ldL2 == pytest.approx(ev_rep.ldL2, rel=1e-10)
    # the two ML criteria at the same theta differ only in n: D = ldL2 + n(1 + log(2 pi
    # pwrss / n)) - sum(log w) with n = 180 here, 360 for the copies
    N, n = len(replicated), len(sleep)
    base = ev_w.ldL2
    expected = (base + n * (1 + np.log(2 * np.pi * ev_w.pwrss / n)) - np.sum(np.log(m)))
    assert weighted.objective(rep.theta) == pytest.approx(expected, rel=1e-12)
    assert rep.model.objective(rep.theta) == pytest.approx(
        base + N * (1 + np.log(2 * np.pi * ev_w.pwrss / N)), rel=1e-10)


def test_offset_is_the_response_minus_the_offset():
    df = derived("sleepstudy")
    with_offset = lmm_sparse.lmer(SLEEP, df, offset="off")
    shifted = df.assign(Reaction=df["Reaction"] - df["off"])
    plain = lmm_sparse.lmer(SLEEP, shifted)
    _close(with_offset.fixef, plain.fixef, rtol=1e-12)
    _close(with_offset.theta, plain.theta, rtol=1e-12)
    assert with_offset.objective == pytest.approx(plain.objective, rel=1e-12)
    _close(with_offset.fitted, plain.fitted + df["off"].to_numpy(), rtol=1e-12)
    _close(with_offset.residuals, plain.residuals, rtol=1e-9)
    # the Days slope absorbs what the offset took out: 2.5 per day
    base = lmm_sparse.lmer(SLEEP, df)
    assert with_offset.fixef["Days"] == pytest.approx(base.fixef["Days"] - 2.5, rel=1e-6)


def test_formula_offset_is_the_offset_argument():
    """lme4's offset(x) term: the same model as offset="x"; both together add up."""
    df = derived("sleepstudy")
    term = lmm_sparse.lmer("Reaction ~ Days + offset(off) + (Days | Subject)", df)
    argument = lmm_sparse.lmer(SLEEP, df, offset="off")
    expression = lmm_sparse.lmer("Reaction ~ Days + offset(2.5 * Days) + (Days | Subject)", df)
    for other in (argument, expression):
        _close(term.fixef, other.fixef, rtol=1e-12)
        _close(term.fitted, other.fitted, rtol=1e-12)
    both = lmm_sparse.lmer("Reaction ~ Days + offset(off) + (Days | Subject)", df,
                           offset=np.full(len(df), 10.0))
    assert both.fixef["(Intercept)"] == pytest.approx(term.fixef["(Intercept)"] - 10, rel=1e-9)
    # the formula's offset is evaluated on new rows; a missing value there gives NaN (na.pass)
    new = df.head(4).assign(off=[0.0, 1.0, np.nan, 3.0])
    pred = term.predict(new)
    shifted = term.predict(new.assign(off=0.0))
    assert np.isnan(pred[2])
    _close(pred[[0, 1, 3]], shifted[[0, 1, 3]] + [0.0, 1.0, 3.0], rtol=1e-12)


@pytest.mark.parametrize(
    ("formula", "match"),
    [
        ("Reaction ~ Days - offset(off) + (Days | Subject)", "offset term must be added"),
        ("Reaction ~ Days + offset() + (Days | Subject)", "offset term must be added"),
        ("Reaction ~ Days + offset(label) + (Days | Subject)", "offset\\(label\\) must be one"),
    ],
)
def test_bad_formula_offsets_are_named(formula, match):
    df = derived("sleepstudy").assign(label=lambda d: np.where(d["Days"] > 4, "hi", "lo"))
    with pytest.raises(lmm_sparse.errors.FormulaError, match=match):
        lmm_sparse.lmer(formula, df)


def test_weights_as_column_or_array_are_the_same():
    df = derived("sleepstudy")
    by_name = lmm_sparse.lmer(SLEEP, df, weights="w", offset="off")
    by_array = lmm_sparse.lmer(SLEEP, df, weights=df["w"].to_numpy(), offset=list(df["off"]))
    np.testing.assert_array_equal(by_name.theta, by_array.theta)
    np.testing.assert_array_equal(by_name.fitted, by_array.fitted)


# --------------------------------------------------------------------------- consumers


def test_refit_with_the_same_response_keeps_weights_and_offset(fits):
    res = fits["sleep_w_offset"]
    again = res.refit(res.model.y)
    _close(again.theta, res.theta, rtol=1e-6)
    _close(again.fixef, res.fixef, rtol=1e-8)
    assert again.objective == pytest.approx(res.objective, rel=1e-10)


def test_simulated_residuals_have_sd_sigma_over_sqrt_w(fits):
    """Conditioned on all random effects (use_u), y* - fitted is the residual alone, with
    sd sigma / sqrt(w_i); the mean includes the offset."""
    res = fits["sleep_w_offset"]
    sims = res.simulate(nsim=4000, seed=7, use_u=True)
    noise = sims - res.fitted[:, None]
    w = res.model.prior.weights
    ratio = noise.std(axis=1) * np.sqrt(w) / res.sigma
    # 4000 draws: the sd estimate's relative error is about 1/sqrt(8000) ~ 0.011
    assert np.all(np.abs(ratio - 1) < 0.06)
    assert abs(ratio.mean() - 1) < 0.01
    assert np.abs(noise.mean(axis=1)).max() < 6 * res.sigma / np.sqrt(4000 * w.min())


def test_anova_refits_by_ml_with_the_weights(fits):
    res = fits["sleep_w_reml"]
    ml = ml_refit(res)
    direct = fits["sleep_w_ml"]
    assert ml.deviance == pytest.approx(direct.deviance, abs=1e-6)
    np.testing.assert_array_equal(ml.model.prior.weights, res.model.prior.weights)


def test_worker_recipe_keeps_weights_and_offset(fits):
    res = fits["sleep_w_offset"]
    rebuilt = ModelRecipe.of(res.model).build()
    assert rebuilt.objective(res.theta) == pytest.approx(res.objective, rel=1e-12)


def test_predict_fitted_rows_include_the_offset(fits):
    res = fits["sleep_w_offset"]
    np.testing.assert_allclose(res.predict(), res.fitted, rtol=1e-14)
    population = res.predict(re_form="~0")
    expected = res.model.X @ res.fixef.to_numpy() + res.model.prior.offset
    np.testing.assert_allclose(population, expected, rtol=1e-14)
    with pytest.raises(ModelSpecError, match="offset"):
        res.predict(derived("sleepstudy").head())
    # weights alone do not stop predictions on new rows
    weighted = fits["sleep_w_reml"]
    new = derived("sleepstudy").head(3)
    np.testing.assert_allclose(weighted.predict(new), weighted.fitted[:3], rtol=1e-12)


def test_kenward_roger_is_refused_with_weights(fits):
    with pytest.raises(ModelSpecError, match="prior weights"):
        fits["sleep_w_reml"].coef_table(ddf="kenward-roger")


def test_summary_scales_residuals_as_lme4(fits):
    """lme4's summary shows residuals(type = "pearson", scaled = TRUE)."""
    res = fits["sleep_w_reml"]
    scaled = res.pearson_residuals() / res.sigma
    assert f"{np.max(scaled):.4f}" in res.summary()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"weights": "nope"}, DataError, "weights='nope' is not a column"),
        ({"offset": "nope"}, DataError, "offset='nope' is not a column"),
        ({"weights": np.ones(5)}, DataError, "weights .* has 5 values; the data has 180"),
        ({"weights": "Subject_text"}, DataError, "weights .* must be numeric"),
        ({"weights": -np.ones(180)}, DataError, "weights must be positive: 180 value"),
        ({"weights": np.r_[0.0, np.ones(179)]}, DataError, "weights must be positive: 1 "),
        ({"weights": np.r_[np.inf, np.ones(179)]}, DataError, "weights has 1 infinite"),
        ({"offset": np.r_[np.ones(179), -np.inf]}, DataError, "offset has 1 infinite"),
        ({"weights": np.ones((180, 2))}, DataError, "weights .* one value per row"),
        ({"weights": np.full(180, np.nan)}, DataError, "no complete rows.*'\\(weights\\)'"),
    ],
)
def test_bad_weights_and_offsets_are_named(sleep, kwargs, error, match):
    data = sleep.assign(Subject_text=sleep["Subject"].astype(str))
    with pytest.raises(error, match=match):
        lmm_sparse.lmer(SLEEP, data, **kwargs)


def test_the_callers_data_and_arrays_are_not_modified():
    df = derived("sleepstudy")
    before = df.copy()
    w = df["w"].to_numpy().copy()
    w_before = w.copy()
    lmm_sparse.lmer(SLEEP, df, weights=w, offset="off")
    pd.testing.assert_frame_equal(df, before)
    np.testing.assert_array_equal(w, w_before)



# --------------------------------------------------------------------------- intervals, F tests


def _interval_table(rows: dict) -> pd.DataFrame:
    return pd.DataFrame(rows).set_index("term")[["2.5 %", "97.5 %"]]


def test_profile_intervals_match_lme4(fits):
    """Profile intervals within 1% of lme4's width (test_profile.py's rule). lme4 1.1-31's
    profile of a weighted fit's fixed effects is wrong (~20 times narrower than Wald), so
    for all parameters the reference is lme4's profile of the same model written without
    weights (sqrt(w) times y and the columns of X and Z: the same likelihood up to
    sum(log w), which lme4_weights.R checks); lme4's weighted profile is checked for the
    variance parameters, where it is right."""
    res, ref = fits["sleep_w_reml"], load_reference(REFERENCE)["sleep_w_reml"]
    ours = res.confint(progress=False)
    same = ref["confint_profile_unweighted_form"]
    assert same["objective_plus_log_weights"] == pytest.approx(res.objective, abs=2e-3)
    unweighted = _interval_table(same["table"])
    weighted = _interval_table(ref["confint_profile"])
    assert len(ours) == len(unweighted) == len(weighted)
    for i, name in enumerate(ours.index):
        for table in (unweighted, weighted) if i < 4 else (unweighted,):
            lo, hi = table.iloc[i]
            tol = 0.01 * (hi - lo)
            assert abs(ours.iloc[i, 0] - lo) <= tol, (name, ours.iloc[i, 0], lo)
            assert abs(ours.iloc[i, 1] - hi) <= tol, (name, ours.iloc[i, 1], hi)


@pytest.mark.parametrize("case", CASES)
def test_wald_intervals_match_lme4(fits, case):
    res, ref = fits[case], load_reference(REFERENCE)[case]
    ours = res.confint(method="wald")
    for row in pd.DataFrame(ref["confint_wald"]).to_dict("records"):
        if row["2.5 %"] is None or np.isnan(row["2.5 %"]):
            continue  # the variance parameters: no Wald interval in lme4
        name = next(n for n in res.fixef.index if r_name(n) == row["term"] or n == row["term"])
        width = row["97.5 %"] - row["2.5 %"]
        # 1% of lme4's se on beta plus 0.2% of the se: both parity tolerances, on each end
        tol = (FIXEF_SE_FRACTION + 1.96 * SE_REL) * width / (2 * 1.96)
        assert abs(ours.loc[name, "2.5 %"] - row["2.5 %"]) <= tol, name
        assert abs(ours.loc[name, "97.5 %"] - row["97.5 %"]) <= tol, name


@pytest.mark.parametrize("type", [1, 3])
def test_f_tests_match_lmertest(fits, type):
    """lmerTest's type I and III tables for dietox (Time and the 3-level Evit, weighted):
    F within 0.5%, denominator df within 1% (test_inference.py's rules)."""
    res, ref = fits["dietox_w_offset_ml"], load_reference(REFERENCE)["dietox_w_offset_ml"]
    ours = res.anova(type=type)
    table = ref[f"anova_type{type}"]
    for k, term in enumerate(table["term"]):
        assert ours.loc[term, "num_df"] == table["NumDF"][k]
        assert ours.loc[term, "f_value"] == pytest.approx(table["F value"][k], rel=0.005)
        assert ours.loc[term, "den_df"] == pytest.approx(table["DenDF"][k], rel=0.01)


def test_bootstrap_replicate_is_a_refit_of_a_weighted_simulation(fits):
    """Replicate i refits the response simulate() draws from child seed i (bootstrap.py):
    with weights and an offset, the draw is the fitted model's and the refit keeps both."""
    res = fits["sleep_w_offset"]
    boot = res.bootstrap(nsim=2, seed=11, progress=False)
    child = np.random.SeedSequence(11).spawn(2)[1]
    refit = res.refit(res.simulate(1, seed=child)[:, 0])
    row = boot.replicates.iloc[1]
    for name in refit.fixef.index:
        assert row[name] == pytest.approx(refit.fixef[name], rel=1e-5)
    assert row["sigma"] == pytest.approx(refit.sigma, rel=1e-5)


@pytest.mark.parametrize("kernel", ["cholmod", "schur"])
def test_every_kernel_fits_the_weighted_model(fits, kernel):
    """The sparse kernels (and their gradient) see only the weighted cross-products."""
    ref = load_reference(REFERENCE)["penicillin_w_crossed"]
    res = lmm_sparse.lmer(ref["formula"], derived("Penicillin"), weights="w", kernel=kernel)
    compare_to_lme4(res, ref, label=kernel)
    assert res.objective == pytest.approx(fits["penicillin_w_crossed"].objective, abs=1e-6)
