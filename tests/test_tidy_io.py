"""tidy() against broom.mixed-style numbers from lme4, the JSON round trip of to_dict() /
from_dict(), and polars / pyarrow tables as input.

Golden values: tests/data/tidy/broom_reference.json, made by broom_reference.R from lme4
1.1-31 and lmerTest 3.1-3 (R 4.2.2) with bobyqa run to rhoend = 1e-12, so that R's numbers
are the optimum itself and the tolerances can be tight: estimates and standard errors to
1e-5 relative, Satterthwaite df to 1e-3 (both sides take numerical derivatives), p-values
to 1%, Wald intervals to 1e-6 of their width, profile intervals to 1e-3 of their width.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lmm_sparse
from lmm_sparse import datasets
from lmm_sparse.errors import DataError, ModelSpecError
from lmm_sparse.serialize import DetachedModel, is_detached

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "tidy" / "broom_reference.json").read_text("utf-8"))
SLEEP = "Reaction ~ Days + (Days | Subject)"
PENICILLIN = "diameter ~ 1 + (1 | plate) + (1 | sample)"
COLUMNS = ["effect", "group", "term", "estimate", "std.error", "statistic", "df", "p.value"]


@pytest.fixture(scope="module")
def sleep_res():
    return lmm_sparse.lmer(SLEEP, datasets.load("sleepstudy"))


@pytest.fixture(scope="module")
def penicillin_res():
    return lmm_sparse.lmer(PENICILLIN, datasets.load("Penicillin"))


@pytest.fixture(scope="module")
def fits(sleep_res, penicillin_res):
    return {"sleepstudy": sleep_res, "penicillin": penicillin_res}


def _reference_rows(case: str) -> pd.DataFrame:
    return pd.DataFrame(REFERENCE[case]["tidy"])


def _is_missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# --------------------------------------------------------------------------- tidy vs R


@pytest.mark.parametrize("case", ["sleepstudy", "penicillin"])
def test_tidy_matches_broom_style_rows_from_lme4(case, fits):
    res = fits[case]
    assert res.formula == REFERENCE[case]["formula"]
    ours, ref = res.tidy(), _reference_rows(case)
    assert list(ours.columns) == COLUMNS
    assert list(ours["effect"]) == list(ref["effect"])
    assert list(ours["term"]) == list(ref["term"])
    def groups(column):
        return [None if _is_missing(g) else g for g in column]

    assert groups(ours["group"]) == groups(ref["group"])
    assert groups(ours["group"])[0] is None  # NA for a fixed effect
    assert ours["estimate"].to_numpy() == pytest.approx(ref["estimate"].to_numpy(), rel=1e-5)
    fixed = (ref["effect"] == "fixed").to_numpy()
    for col, rel in [("std.error", 1e-5), ("statistic", 1e-5), ("df", 1e-3),
                     ("p.value", 1e-2)]:
        expected = ref.loc[fixed, col].to_numpy(float)
        assert ours.loc[fixed, col].to_numpy() == pytest.approx(expected, rel=rel), col
        assert ours.loc[~fixed, col].isna().all(), col  # broom.mixed gives none for ran_pars


@pytest.mark.parametrize("case", ["sleepstudy", "penicillin"])
def test_tidy_wald_intervals_match_lme4(case, fits):
    res = fits[case]
    ours, ref = res.tidy(conf_int=True), _reference_rows(case)
    assert list(ours.columns) == COLUMNS + ["conf.low", "conf.high"]
    fixed = (ref["effect"] == "fixed").to_numpy()
    width = (ref.loc[fixed, "wald.high"] - ref.loc[fixed, "wald.low"]).to_numpy(float)
    for ours_col, ref_col in [("conf.low", "wald.low"), ("conf.high", "wald.high")]:
        diff = ours.loc[fixed, ours_col].to_numpy() - ref.loc[fixed, ref_col].to_numpy(float)
        assert np.all(np.abs(diff) <= 1e-6 * width), ours_col
    assert ours.loc[~fixed, ["conf.low", "conf.high"]].isna().all().all()  # as lme4's Wald


def test_tidy_profile_intervals_match_lme4_on_a_crossed_model(penicillin_res):
    ours = penicillin_res.tidy(conf_int=True, conf_method="profile", progress=False)
    ref = _reference_rows("penicillin")
    width = (ref["profile.high"] - ref["profile.low"]).to_numpy(float)
    for ours_col, ref_col in [("conf.low", "profile.low"), ("conf.high", "profile.high")]:
        diff = ours[ours_col].to_numpy() - ref[ref_col].to_numpy(float)
        assert np.all(np.abs(diff) <= 1e-3 * width), (ours_col, diff)


def test_tidy_ran_pars_are_the_varcorr_values(sleep_res):
    vc = sleep_res.varcorr
    tidy = sleep_res.tidy(effects="ran_pars").set_index("term")["estimate"]
    sub = vc[vc["grp"] == "Subject"]
    sd = dict(zip(sub.loc[sub["var2"].isna(), "var1"], sub.loc[sub["var2"].isna(), "sdcor"],
                  strict=True))
    cor = sub.loc[sub["var2"].notna()]
    assert tidy["sd__(Intercept)"] == sd["(Intercept)"]
    assert tidy["sd__Days"] == sd["Days"]
    assert tidy["cor__(Intercept).Days"] == cor["sdcor"].iloc[0]
    assert tidy["sd__Observation"] == sleep_res.sigma
    assert list(tidy.index) == ["sd__(Intercept)", "cor__(Intercept).Days", "sd__Days",
                                "sd__Observation"]


def test_tidy_orders_a_three_by_three_term_as_the_lower_triangle():
    """broom.mixed's order is lme4's as.data.frame(VarCorr, order = "lower.tri"): column by
    column, each sd followed by its correlations with the later coefficients."""
    df = datasets.load("sleepstudy").assign(Days2=lambda d: (d["Days"] - 4.5) ** 2)
    res = lmm_sparse.lmer("Reaction ~ Days + (1 + Days + Days2 | Subject)", df)
    terms = list(res.tidy(effects="ran_pars")["term"])
    assert terms == ["sd__(Intercept)", "cor__(Intercept).Days", "cor__(Intercept).Days2",
                     "sd__Days", "cor__Days.Days2", "sd__Days2", "sd__Observation"]


def test_tidy_fixed_rows_are_the_coef_table(sleep_res):
    for ddf in ["satterthwaite", "kenward-roger", "residual"]:
        table = sleep_res.coef_table(ddf=ddf)
        fixed = sleep_res.tidy(effects="fixed", ddf=ddf)
        assert list(fixed["term"]) == list(table.index)
        np.testing.assert_array_equal(fixed["df"], table["df"])
        np.testing.assert_array_equal(fixed["statistic"], table["t_value"])
        np.testing.assert_array_equal(fixed["p.value"], table["p_value"])


def test_tidy_without_df_gives_wald_z_tests(sleep_res):
    fixed = sleep_res.tidy(effects="fixed", ddf=None)
    z = fixed["estimate"] / fixed["std.error"]
    np.testing.assert_allclose(fixed["statistic"], z, rtol=1e-14)
    np.testing.assert_allclose(fixed["p.value"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-12)
    assert fixed["df"].isna().all()


def test_tidy_bootstrap_intervals_are_confints(sleep_res):
    ours = sleep_res.tidy(conf_int=True, conf_method="boot", nsim=20, seed=3, progress=False)
    boot = sleep_res.confint("boot", nsim=20, seed=3, progress=False)
    expected = boot.loc[["(Intercept)", "Days", "sd_(Intercept)|Subject",
                         "cor_Days.(Intercept)|Subject", "sd_Days|Subject", "sigma"]]
    np.testing.assert_array_equal(ours["conf.low"], expected.iloc[:, 0])
    np.testing.assert_array_equal(ours["conf.high"], expected.iloc[:, 1])
    assert ours["conf.low"].notna().all()


def test_tidy_bad_arguments_are_named(sleep_res):
    with pytest.raises(ModelSpecError, match="effects"):
        sleep_res.tidy(effects="ran_vals")
    with pytest.raises(ModelSpecError, match="conf_method"):
        sleep_res.tidy(conf_int=True, conf_method="bayes")
    with pytest.raises(ModelSpecError, match="conf_int=True"):
        sleep_res.tidy(nsim=10)
    with pytest.raises(ModelSpecError, match="ddf"):
        sleep_res.tidy(ddf="containment")


# --------------------------------------------------------------------------- to_dict


def _round_trip(res, **options):
    text = json.dumps(res.to_dict(**options), allow_nan=False)
    return lmm_sparse.LmerResult.from_dict(json.loads(text)), text


def _assert_same_estimates(back, res) -> None:
    pd.testing.assert_series_equal(back.fixef, res.fixef, check_exact=True)
    pd.testing.assert_frame_equal(back.vcov, res.vcov, check_exact=True)
    pd.testing.assert_frame_equal(back.varcorr, res.varcorr, check_exact=True)
    assert back.ranef.keys() == res.ranef.keys()
    for group in res.ranef:
        pd.testing.assert_frame_equal(back.ranef[group], res.ranef[group], check_exact=True)
    for name in ["theta", "fitted", "residuals"]:
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name), err_msg=name)
    for name in ["formula", "reml", "sigma", "objective", "deviance", "loglik", "aic", "bic",
                 "nobs", "ngroups", "converged", "is_singular", "dropped"]:
        assert getattr(back, name) == getattr(res, name), name
    for f in dataclasses.fields(res.optinfo):
        a, b = getattr(back.optinfo, f.name), getattr(res.optinfo, f.name)
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f.name)
        else:
            assert a == b, f.name


@pytest.mark.parametrize("case", ["sleepstudy", "penicillin"])
def test_json_round_trip_keeps_every_estimate_exactly(case, fits):
    res = fits[case]
    back, _ = _round_trip(res)
    _assert_same_estimates(back, res)
    assert is_detached(back) and not is_detached(res)
    assert back.summary() == res.summary()
    pd.testing.assert_frame_equal(back.tidy(), res.tidy(), check_exact=True)
    pd.testing.assert_frame_equal(back.coef_table(), res.coef_table(), check_exact=True)
    pd.testing.assert_frame_equal(back.coef_table(ddf=None), res.coef_table(ddf=None),
                                  check_exact=True)


def test_json_round_trip_of_an_ml_fit_with_dropped_columns():
    df = datasets.load("sleepstudy").assign(Days2=lambda d: 2 * d["Days"] + 1)
    with pytest.warns(lmm_sparse.RankDeficiencyWarning):
        res = lmm_sparse.lmer("Reaction ~ Days + Days2 + (1 | Subject)", df, reml=False)
    assert res.dropped == ("Days2",) and not res.reml
    back, _ = _round_trip(res)
    _assert_same_estimates(back, res)
    assert back.summary() == res.summary()


def test_json_round_trip_of_non_finite_numbers_is_standard_json(sleep_res):
    odd = dataclasses.replace(sleep_res, aic=math.nan, bic=math.inf, loglik=-math.inf,
                              fitted=np.array([1.5, math.nan, -math.inf]))
    d = odd.to_dict(satterthwaite=False)
    assert d["aic"] is None and d["bic"] == "Infinity" and d["loglik"] == "-Infinity"
    back, text = _round_trip(odd, satterthwaite=False)
    assert "NaN" not in text  # allow_nan=False above: no bare NaN/Infinity tokens
    assert math.isnan(back.aic) and back.bic == math.inf and back.loglik == -math.inf
    np.testing.assert_array_equal(back.fitted, [1.5, math.nan, -math.inf])


def test_singular_fit_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=60), "g": np.repeat(np.arange(6), 10)})
    with pytest.warns(lmm_sparse.SingularFitWarning):
        res = lmm_sparse.lmer("y ~ 1 + (1 | g)", df)
    assert res.is_singular and res.theta[0] == 0
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(res.to_dict(satterthwaite=False)))
    back = lmm_sparse.LmerResult.from_dict(json.loads(path.read_text()))
    _assert_same_estimates(back, res)


def test_to_dict_holds_the_documented_fields(sleep_res):
    d = sleep_res.to_dict()
    assert d["format"] == "lmm_sparse.LmerResult" and d["format_version"] == 1
    assert d["lmm_sparse_version"] == lmm_sparse.__version__
    assert d["formula"] == SLEEP and d["reml"] is True and d["nobs"] == 180
    assert d["ngroups"] == {"Subject": 18}
    assert d["fixef"]["names"] == ["(Intercept)", "Days"]
    assert d["fixef"]["values"] == list(sleep_res.fixef)
    assert d["vcov"] == sleep_res.vcov.to_numpy().tolist()
    assert d["theta"] == list(sleep_res.theta) and d["sigma"] == sleep_res.sigma
    assert d["varcorr"]["grp"] == ["Subject", "Subject", "Subject", "Residual"]
    assert d["varcorr"]["var2"] == [None, None, "Days", None]
    assert d["varcorr"]["sdcor"] == list(sleep_res.varcorr["sdcor"])
    for key in ["objective", "loglik", "aic", "bic"]:
        assert d[key] == getattr(sleep_res, key), key
    assert d["converged"] is True and d["is_singular"] is False and d["dropped"] == []
    assert d["optinfo"]["method"] == sleep_res.optinfo.method
    assert d["optinfo"]["feval"] == sleep_res.optinfo.feval
    assert d["ranef"]["Subject"]["columns"] == ["(Intercept)", "Days"]
    assert d["ranef"]["Subject"]["index"] == list(sleep_res.ranef["Subject"].index)
    assert len(d["residuals"]) == 180
    assert set(d["satterthwaite"]) == {"varpar", "hessian", "cov", "jacobian", "vcov"}


@pytest.mark.parametrize("call", [
    lambda r: r.predict(),
    lambda r: r.predict(datasets.load("sleepstudy")),
    lambda r: r.profile(progress=False),
    lambda r: r.confint(progress=False),
    lambda r: r.bootstrap(nsim=2, progress=False),
    lambda r: r.simulate(nsim=1, seed=1),
    lambda r: r.refit(np.zeros(180)),
    lambda r: r.anova(),
    lambda r: r.coef_table(ddf="kenward-roger"),
    lambda r: r.ranef_condvar(),
], ids=["predict", "predict_newdata", "profile", "confint", "bootstrap", "simulate", "refit",
        "anova", "kenward_roger", "condvar"])
def test_a_loaded_result_refuses_what_needs_the_data(call, sleep_res):
    back, _ = _round_trip(sleep_res)
    with pytest.raises(ModelSpecError, match="loaded from JSON.*lmm_sparse.lmer"):
        call(back)


def test_without_satterthwaite_a_loaded_result_still_gives_z_tests(sleep_res):
    back, text = _round_trip(sleep_res, satterthwaite=False)
    assert json.loads(text)["satterthwaite"] is None
    pd.testing.assert_frame_equal(back.tidy(ddf=None), sleep_res.tidy(ddf=None),
                                  check_exact=True)
    with pytest.raises(ModelSpecError, match="loaded from JSON"):
        back.coef_table()


def test_a_loaded_result_can_be_written_again(sleep_res):
    back, text = _round_trip(sleep_res)
    assert json.dumps(back.to_dict(), allow_nan=False) == text
    again, _ = _round_trip(back, satterthwaite=False)
    assert json.loads(json.dumps(again.to_dict()))["satterthwaite"] is None


def test_a_detached_model_survives_copy_and_pickle(sleep_res):
    import copy
    import pickle

    back, _ = _round_trip(sleep_res)
    for clone in (copy.deepcopy(back), pickle.loads(pickle.dumps(back))):
        assert isinstance(clone.model, DetachedModel)
        np.testing.assert_array_equal(clone.theta, sleep_res.theta)


@pytest.mark.parametrize("bad, message", [
    ([1, 2], "got list"),
    ({"format": "something else"}, "'format'"),
    ({"format": "lmm_sparse.LmerResult", "format_version": 99}, "format_version 99"),
    ({"format": "lmm_sparse.LmerResult", "format_version": 1}, "lacks the key 'fixef'"),
])
def test_from_dict_names_what_is_wrong(bad, message):
    with pytest.raises(DataError, match=message):
        lmm_sparse.LmerResult.from_dict(bad)


def test_from_dict_reports_a_damaged_dict(sleep_res):
    d = sleep_res.to_dict(satterthwaite=False)
    d["vcov"] = [[1.0, 2.0]]  # not p x p
    with pytest.raises(DataError, match="damaged"):
        lmm_sparse.LmerResult.from_dict(d)
    d = sleep_res.to_dict(satterthwaite=False)
    del d["sigma"]
    with pytest.raises(DataError, match="'sigma'"):
        lmm_sparse.LmerResult.from_dict(d)


# --------------------------------------------------------------------------- polars, arrow


def _assert_same_fit(res, ref) -> None:
    np.testing.assert_array_equal(res.theta, ref.theta)
    pd.testing.assert_series_equal(res.fixef, ref.fixef, check_exact=True)
    pd.testing.assert_frame_equal(res.varcorr, ref.varcorr, check_exact=True)
    for group in ref.ranef:
        pd.testing.assert_frame_equal(res.ranef[group], ref.ranef[group], check_exact=True)
    assert res.objective == ref.objective and res.nobs == ref.nobs


def test_polars_and_arrow_tables_give_the_pandas_fit(sleep_res):
    import polars as pl
    import pyarrow as pa

    df = datasets.load("sleepstudy")
    _assert_same_fit(lmm_sparse.lmer(SLEEP, pl.from_pandas(df)), sleep_res)
    _assert_same_fit(lmm_sparse.lmer(SLEEP, pa.Table.from_pandas(df)), sleep_res)


def test_polars_categorical_and_arrow_dictionary_columns(penicillin_res):
    import polars as pl
    import pyarrow as pa

    df = datasets.load("Penicillin")
    frame = pl.from_pandas(df).with_columns(pl.col("plate").cast(pl.Categorical))
    assert frame.schema["plate"] == pl.Categorical
    _assert_same_fit(lmm_sparse.lmer(PENICILLIN, frame), penicillin_res)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("sample"), "sample",
                             table["sample"].dictionary_encode())
    assert pa.types.is_dictionary(table.schema.field("sample").type)
    _assert_same_fit(lmm_sparse.lmer(PENICILLIN, table), penicillin_res)


def test_polars_string_predictor_and_nulls_match_pandas():
    """A text column as a fixed factor, and nulls: the same rows are dropped as pandas'
    NaN/None, and the coefficient names are the same."""
    import polars as pl

    df = datasets.load("Penicillin")
    pdf = df.astype({"diameter": float})
    pdf.loc[[3, 40], "diameter"] = np.nan
    pdf.loc[[7], "sample"] = None
    frame = pl.from_pandas(df).with_columns(
        pl.when(pl.int_range(pl.len()).is_in([3, 40])).then(None)
        .otherwise(pl.col("diameter")).cast(pl.Float64).alias("diameter"),
        pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("sample"))
        .alias("sample"),
    )
    formula = "diameter ~ sample + (1 | plate)"
    ref = lmm_sparse.lmer(formula, pdf)
    res = lmm_sparse.lmer(formula, frame)
    assert ref.nobs == len(df) - 3
    _assert_same_fit(res, ref)
    assert list(res.fixef.index) == list(ref.fixef.index)
    assert any(name.startswith("sample[T.") for name in res.fixef.index)


def test_an_object_without_to_pandas_is_refused_by_name():
    with pytest.raises(DataError, match="pandas DataFrame.*got dict"):
        lmm_sparse.lmer(SLEEP, {"Reaction": [1.0]})


def test_a_weighted_fit_round_trips_with_its_weights():
    """The prior weights travel with the dict: the read-back summary's scaled residuals are
    the Pearson residuals, as the original fit's."""
    df = lmm_sparse.datasets.load("sleepstudy")
    weights = 1.0 + (df["Days"].to_numpy() % 3)
    res = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", df, weights=weights)
    back = lmm_sparse.LmerResult.from_dict(json.loads(json.dumps(res.to_dict(satterthwaite=False))))
    np.testing.assert_array_equal(back.pearson_residuals(), res.pearson_residuals())
    assert back.summary() == res.summary()
