"""lmm_sparse.compat: statsmodels' MixedLM calls on lmm_sparse's engine.

Golden values come from statsmodels' documentation and statsmodels 0.15 itself
(tests/data/statsmodels/, with the script that made them) and from lme4 (the same folder
and tests/data/reference/). Where statsmodels is installed (the test extra), the
translated models are also compared live: statsmodels' own formulas (its Hessian,
log-likelihood, GLS estimates, random-effects predictor) evaluated at lmm_sparse's
estimates must give lmm_sparse's numbers, and statsmodels' own fit must not find a higher
likelihood.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest
from conftest import (
    FIXEF_SE_FRACTION,
    IC_REL,
    SD_REL,
    SE_REL,
    compare_to_lme4,
    load_reference,
)

import lmm_sparse
from lmm_sparse.compat import MixedLM, mixedlm
from lmm_sparse.errors import DataError, FormulaError, ModelSpecError

SM_DIR = pathlib.Path(__file__).parent / "data" / "statsmodels"


def _json(name: str) -> dict:
    return json.loads((SM_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dietox() -> pd.DataFrame:
    return lmm_sparse.datasets.load("dietox")


@pytest.fixture(scope="module")
def dietox_fit(dietox):
    return mixedlm("Weight ~ Time", dietox, groups=dietox["Pig"]).fit()


@pytest.fixture(scope="module")
def slopes_fit(dietox):
    return mixedlm("Weight ~ Time", dietox, groups=dietox["Pig"], re_formula="~Time").fit()


def _printed(value: float, printed: float, decimals: int) -> bool:
    """value rounds to what was printed with this many decimals."""
    return abs(value - printed) <= 0.5 * 10.0**-decimals + 1e-12


# --------------------------------------------------------------- statsmodels' documentation


def test_dietox_matches_the_numbers_in_statsmodels_docs(dietox_fit):
    docs = _json("statsmodels_docs_dietox.json")
    res = dietox_fit
    assert res.nobs == docs["nobs"]
    assert _printed(res.scale, docs["scale"], 4)
    assert _printed(res.llf, docs["llf"], 4)
    assert _printed(res.cov_re.loc["Group", "Group"], docs["coef"]["Group Var"], 3)
    for name in ("Intercept", "Time"):
        assert _printed(res.fe_params[name], docs["coef"][name], 3)
        assert _printed(res.bse[name], docs["std_err"][name], 3)
        assert _printed(res.tvalues[name], docs["z"][name], 3)
        low, high = docs["conf_int"][name]
        assert _printed(res.conf_int().loc[name, 0], low, 3)
        assert _printed(res.conf_int().loc[name, 1], high, 3)
    # statsmodels prints sqrt(scale) * bse beside a variance parameter
    assert _printed(res.bse_re["Group Var"], docs["std_err"]["Group Var"], 3)
    assert res.method == "REML" and res.converged


def test_dietox_summary_prints_as_statsmodels_does(dietox_fit):
    expected = _json("statsmodels_reference.json")["dietox_intercept"]["summary"]
    assert str(dietox_fit.summary()) == expected
    docs = _json("statsmodels_docs_dietox.json")
    text = dietox_fit.summary().as_text()
    assert f"Group Var    {docs['coef']['Group Var']:.3f}    {docs['std_err']['Group Var']:.3f}" \
        in text
    assert f"No. Groups:       {docs['n_groups']}" in text


def test_dietox_lme4_formula(dietox):
    assert mixedlm("Weight ~ Time", dietox, groups=dietox["Pig"]).lme4_formula == \
        "Weight ~ Time + (1 | Pig)"
    assert mixedlm("Weight ~ Time", dietox, groups="Pig", re_formula="~Time").lme4_formula == \
        "Weight ~ Time + (Time | Pig)"
    pig = dietox["Pig"].to_numpy()  # an unnamed array becomes a temporary column
    assert mixedlm("Weight ~ Time", dietox, groups=pig).lme4_formula == \
        "Weight ~ Time + (1 | group)"
    taken = dietox.assign(group=1)  # the temporary column never replaces a user's column
    assert mixedlm("Weight ~ Time", taken, groups=pig).lme4_formula == \
        "Weight ~ Time + (1 | group_)"


# ------------------------------------------------------------- statsmodels' stored results


@pytest.mark.parametrize("key", ["dietox_intercept", "dietox_slopes", "pastes_nested",
                                 "penicillin_crossed"])
def test_same_optimum_and_names_as_statsmodels(key):
    """Same parameter names and log-likelihood (to statsmodels' printed 4 decimals, and
    never below statsmodels': ours is the better optimum where they differ)."""
    ref = _json("statsmodels_reference.json")[key]
    res = _fit_call(ref["call"])
    assert list(res.params.index) == list(ref["params"])
    assert res.llf >= ref["llf"] - 1e-9
    assert _printed(res.llf, round(ref["llf"], 4), 4)
    assert res.converged == ref["converged"]


def test_random_intercept_estimates_as_statsmodels(dietox_fit):
    """Where statsmodels converges to the optimum (the random intercept model), its
    estimates within the tolerances the lme4 parity tests use."""
    ref = _json("statsmodels_reference.json")["dietox_intercept"]
    res = dietox_fit
    for name in ("Intercept", "Time"):
        assert abs(res.fe_params[name] - ref["fe_params"][name]) <= \
            FIXEF_SE_FRACTION * ref["bse"][name]
        assert res.bse[name] == pytest.approx(ref["bse"][name], rel=SE_REL)
    assert math.sqrt(res.scale) == pytest.approx(math.sqrt(ref["scale"]), rel=SD_REL)
    sd = math.sqrt(res.cov_re.iloc[0, 0])
    assert sd == pytest.approx(math.sqrt(ref["cov_re"][0][0]), rel=SD_REL)


def _fit_call(call: dict):
    data = lmm_sparse.datasets.load(call["data"])
    data["one"] = 1
    groups = data["Pig"] if call["groups"] == "data['Pig']" else call["groups"]
    model = mixedlm(call["formula"], data, groups=groups, re_formula=call.get("re_formula"),
                    vc_formula=call.get("vc_formula"))
    return model.fit(**call["fit"])


# ------------------------------------------------------------------------------- lme4


def test_random_slopes_as_lme4(slopes_fit):
    ref = _json("lme4_compat.json")["dietox_slopes_reml"]
    _compare_lme4(slopes_fit, ref, {"Group": "(Intercept)", "Time": "Time"})


def test_ml_fit_as_lme4(dietox):
    res = mixedlm("Weight ~ Time", dietox, groups="Pig", re_formula="~Time").fit(reml=False)
    ref = _json("lme4_compat.json")["dietox_slopes_ml"]
    assert res.method == "ML"
    _compare_lme4(res, ref, {"Pig": "(Intercept)", "Time": "Time"})
    k = len(res.params) + 1  # statsmodels' df: fixed effects, covariances and the scale
    assert res.aic == pytest.approx(-2 * ref["loglik"] + 2 * k, rel=IC_REL)
    assert res.bic == pytest.approx(-2 * ref["loglik"] + math.log(ref["nobs"]) * k, rel=IC_REL)


def test_continuous_variance_component_as_lme4(dietox):
    """vc_formula {"Time": "0 + Time"}: one random slope per group, its own variance,
    uncorrelated with the random intercept."""
    model = mixedlm("Weight ~ Time", dietox, groups="Pig", re_formula="1",
                    vc_formula={"Time": "0 + Time"})
    assert model.lme4_formula == "Weight ~ Time + (1 | Pig) + (0 + Time | Pig)"
    res = model.fit()
    ref = _json("lme4_compat.json")["dietox_vc_slope"]
    assert res.llf >= ref["loglik"] - 1e-6
    assert res.llf == pytest.approx(ref["loglik"], rel=IC_REL)
    vcov = dict(zip(ref["varcorr"]["var1"], ref["varcorr"]["vcov"], strict=False))
    assert math.sqrt(res.cov_re.iloc[0, 0]) == pytest.approx(math.sqrt(vcov["(Intercept)"]),
                                                            rel=SD_REL)
    assert math.sqrt(res.vcomp[0]) == pytest.approx(math.sqrt(vcov["Time"]), rel=SD_REL)
    assert list(res.params.index) == ["Intercept", "Time", "Pig Var", "Time Var"]
    assert list(res.random_effects[4601].index) == ["Pig", "Time[Time]"]


def _compare_lme4(res, ref: dict, names: dict[str, str]) -> None:
    assert res.nobs == ref["nobs"]
    assert res.llf >= ref["loglik"] - 1e-6
    assert res.llf == pytest.approx(ref["loglik"], rel=IC_REL)
    assert math.sqrt(res.scale) == pytest.approx(math.sqrt(ref["sigma2"]), rel=SD_REL)
    for ours, theirs in (("Intercept", "(Intercept)"), ("Time", "Time")):
        assert abs(res.fe_params[ours] - ref["fixef"][theirs]) <= \
            FIXEF_SE_FRACTION * ref["se"][theirs]
    vc = ref["varcorr"]
    cov = {(a, b): v for a, b, v in zip(vc["var1"], vc["var2"], vc["vcov"], strict=True)}
    (g, i), (t, j) = names.items()
    assert math.sqrt(res.cov_re.loc[g, g]) == pytest.approx(math.sqrt(cov[(i, None)]),
                                                            rel=SD_REL)
    assert math.sqrt(res.cov_re.loc[t, t]) == pytest.approx(math.sqrt(cov[(j, None)]),
                                                            rel=SD_REL)
    corr = res.cov_re.loc[g, t] / math.sqrt(res.cov_re.loc[g, g] * res.cov_re.loc[t, t])
    corr_ref = cov[(i, j)] / math.sqrt(cov[(i, None)] * cov[(j, None)])
    assert abs(corr - corr_ref) <= 5e-3


def test_crossed_variance_components_as_lmer():
    """A constant groups array with two vc factors is lme4's crossed (1 | plate) +
    (1 | sample): the same fit as lmer with that formula, and lme4's reference values."""
    pen = lmm_sparse.datasets.load("Penicillin")
    model = mixedlm("diameter ~ 1", pen, groups=np.ones(len(pen)), re_formula="0",
                    vc_formula={"sample": "0 + C(sample)", "plate": "0 + C(plate)"})
    assert model.lme4_formula == "diameter ~ 1 + (1 | plate) + (1 | sample)"
    res = model.fit()
    direct = lmm_sparse.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", pen)
    compare_to_lme4(res.lmer_result, load_reference("lme4_public.json")["penicillin_crossed"])
    assert res.llf == pytest.approx(direct.loglik, rel=1e-12)
    var = direct.varcorr.set_index("grp")["vcov"]
    np.testing.assert_allclose(res.vcomp, [var["plate"], var["sample"]], rtol=1e-10)
    assert res.scale == pytest.approx(var["Residual"], rel=1e-10)
    assert list(res.params.index) == ["Intercept", "plate Var", "sample Var"]
    effects = res.random_effects[1.0]  # one group holding every effect
    assert len(effects) == 24 + 6
    assert effects["plate[C(plate)[a]]"] == pytest.approx(direct.ranef["plate"].loc["a"].iloc[0])
    assert effects["sample[C(sample)[F]]"] == \
        pytest.approx(direct.ranef["sample"].loc["F"].iloc[0])
    assert "No. Groups:       1 " in str(res.summary())


def test_boundary_fit_leaves_the_zero_variance_out_of_the_hessian():
    """Dyestuff2: the batch variance is estimated at zero, where chol(Psi) has no two-sided
    neighbourhood: its standard error is NaN, the fixed effect's is lme4's (V = I)."""
    data = lmm_sparse.datasets.load("Dyestuff2")
    with pytest.warns(lmm_sparse.SingularFitWarning):
        res = mixedlm("Yield ~ 1", data, groups="Batch").fit()
    ref = load_reference("lme4_public.json")["dyestuff2_singular"]
    assert res.cov_re.iloc[0, 0] == 0.0
    assert res.bse["Intercept"] == pytest.approx(ref["se"]["(Intercept)"], rel=SE_REL)
    assert math.isnan(res.bse["Batch Var"])
    assert "Batch Var     0.000        " in str(res.summary())


def test_nested_variance_component_formula():
    pastes = lmm_sparse.datasets.load("Pastes")
    model = mixedlm("strength ~ 1", pastes, groups="batch", re_formula="1",
                    vc_formula={"cask": "0 + C(cask)"})
    assert model.lme4_formula == "strength ~ 1 + (1 | batch) + (1 | batch:cask)"
    ref = load_reference("lme4_public.json")["pastes_nested"]  # (1 | batch/cask)
    assert model.fit().llf == pytest.approx(ref["loglik"], rel=IC_REL)


# ----------------------------------------------------------------- statsmodels, live


LIVE_CASES = {
    "dietox_intercept": ("dietox", "Weight ~ Time", {"groups": "Pig"}, True),
    "dietox_slopes": ("dietox", "Weight ~ Time", {"groups": "Pig", "re_formula": "~Time"},
                      True),
    "dietox_slopes_ml": ("dietox", "Weight ~ Time + C(Evit)",
                         {"groups": "Pig", "re_formula": "~Time"}, False),
    "dietox_vc_slope": ("dietox", "Weight ~ Time",
                        {"groups": "Pig", "re_formula": "1", "vc_formula": {"T": "0 + Time"}},
                        True),
    "pastes_nested": ("Pastes", "strength ~ 1",
                      {"groups": "batch", "re_formula": "1",
                       "vc_formula": {"cask": "0 + C(cask)"}}, True),
    "pastes_vc_only": ("Pastes", "strength ~ 1",
                       {"groups": "batch", "vc_formula": {"cask": "0 + C(cask)"}}, True),
    "penicillin_crossed": ("Penicillin", "diameter ~ 1",
                           {"groups": "one", "re_formula": "0",
                            "vc_formula": {"plate": "0 + C(plate)",
                                           "sample": "0 + C(sample)"}}, True),
    # a plain text column as a factor, a groups column that is no formula name
    "pastes_plain_factor": ("Pastes", "strength ~ 1",
                            {"groups": "my batch", "re_formula": "1",
                             "vc_formula": {"cask": "0 + cask"}}, True),
    # a slope per level of a factor within each group: (0 + Time | Pig:Cu)
    "dietox_factor_slope": ("dietox", "Weight ~ Time",
                            {"groups": "Pig", "re_formula": "1",
                             "vc_formula": {"cu": "0 + C(Cu):Time"}}, False),
}


@pytest.fixture(scope="module")
def smf():
    import statsmodels.formula.api  # in the test extra: a missing install must fail, not skip

    return statsmodels.formula.api


def _live_pair(smf, key):
    name, formula, kwargs, reml = LIVE_CASES[key]
    data = lmm_sparse.datasets.load(name)
    data["one"] = 1
    if name == "Pastes":
        data["my batch"] = data["batch"]
    ours = mixedlm(formula, data, **kwargs).fit(reml=reml)
    theirs = smf.mixedlm(formula, data, **kwargs)
    return ours, theirs


@pytest.mark.parametrize("key", list(LIVE_CASES))
def test_statsmodels_formulas_at_our_estimates(smf, key):
    """statsmodels' own computations at lmm_sparse's estimates reproduce every number
    lmm_sparse reports in statsmodels' names: GLS fixed effects, scale, log-likelihood,
    the Hessian's standard errors, random effects and fitted values."""
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    ours, sm_model = _live_pair(smf, key)
    psi, vc = ours.cov_re_unscaled, ours.vcomp / ours.scale
    sm_model.reml = ours.reml  # what MixedLM.fit sets before its own computations
    sm_model.cov_pen = sm_model.fe_pen = sm_model._freepat = None
    fe, _ = sm_model.get_fe_params(psi, vc)
    fe = pd.Series(fe, index=sm_model.exog_names)
    pd.testing.assert_series_equal(ours.fe_params[fe.index], fe, rtol=1e-8, atol=1e-10)
    params = MixedLMParams.from_components(fe_params=fe.to_numpy(), cov_re=psi, vcomp=vc)
    assert sm_model.get_scale(fe.to_numpy(), psi, vc) == pytest.approx(ours.scale, rel=1e-8)
    assert sm_model.loglike(params, profile_fe=False) == pytest.approx(ours.llf, rel=1e-10)
    hess, _ = sm_model.hessian(params)
    bse = pd.Series(np.sqrt(np.diag(np.linalg.inv(-hess))), index=sm_model.data.param_names)
    pd.testing.assert_series_equal(ours.bse[bse.index], bse, rtol=1e-6)
    assert list(ours.params.index)[ours.k_fe:] == list(bse.index)[ours.k_fe:]
    # statsmodels' random-effects predictor, from a results object at these parameters
    from statsmodels.regression.mixed_linear_model import MixedLMResults

    sm_res = MixedLMResults(sm_model, params.get_packed(use_sqrt=False, has_fe=True),
                            np.eye(len(bse)))
    for attr, value in [("fe_params", fe.to_numpy()), ("cov_re", ours.cov_re.to_numpy()),
                        ("vcomp", ours.vcomp), ("scale", ours.scale),
                        ("k_fe", ours.k_fe), ("k_re", ours.k_re), ("k_vc", ours.k_vc)]:
        setattr(sm_res, attr, value)
    assert list(ours.random_effects) == list(sm_res.random_effects)
    for group, effects in sm_res.random_effects.items():
        pd.testing.assert_series_equal(ours.random_effects[group], effects, rtol=1e-6,
                                       atol=1e-8, check_names=False)
    np.testing.assert_allclose(ours.fittedvalues.to_numpy(),
                               np.asarray(sm_res.fittedvalues), rtol=1e-9)


# statsmodels' own optimizer takes 7-11 s on each dietox slope model
_SLOW_SM_FITS = {"dietox_slopes", "dietox_vc_slope", "dietox_slopes_ml", "dietox_factor_slope"}


@pytest.mark.parametrize("key", [
    pytest.param(key, marks=pytest.mark.slow) if key in _SLOW_SM_FITS else key
    for key in LIVE_CASES
])
def test_statsmodels_fit_finds_no_better_optimum(smf, key):
    import warnings

    ours, sm_model = _live_pair(smf, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' boundary and convergence notes
        theirs = sm_model.fit(reml=ours.reml)
    assert theirs.llf <= ours.llf + 1e-7
    assert list(theirs.params.index)[ours.k_fe:] == list(ours.params.index)[ours.k_fe:]
    assert sorted(theirs.fe_params.index) == sorted(ours.fe_params.index)
    assert ours.nobs == theirs.nobs and ours.k_vc == theirs.k_vc and ours.k_re == theirs.k_re


# ---------------------------------------------------------------- names and conventions


def test_result_attributes(dietox_fit, dietox):
    res = dietox_fit
    assert list(res.fe_params.index) == ["Intercept", "Time"]
    assert res.params["Group Var"] == pytest.approx(res.cov_re.iloc[0, 0] / res.scale)
    assert res.scale == pytest.approx(res.lmer_result.sigma**2)
    assert res.llf == res.lmer_result.loglik
    assert math.isnan(res.aic) and math.isnan(res.bic)  # REML, as statsmodels
    assert (res.k_fe, res.k_re, res.k_re2, res.k_vc) == (2, 1, 1, 0)
    assert res.df_resid == 861 - 2
    assert len(res.random_effects) == 72
    pd.testing.assert_index_equal(res.fittedvalues.index, dietox.index)
    np.testing.assert_allclose(res.fittedvalues + res.resid, dietox["Weight"])
    assert res.pvalues["Time"] < 1e-100
    np.testing.assert_allclose(res.predict(dietox.head(3)),
                               res.fe_params["Intercept"] + res.fe_params["Time"]
                               * dietox["Time"].head(3))
    cov = res.cov_params()
    assert cov.loc["Time", "Time"] == pytest.approx(res.bse["Time"] ** 2)


def test_from_formula_and_ignored_fit_settings(dietox, dietox_fit):
    model = MixedLM.from_formula("Weight ~ Time", dietox, groups="Pig")
    res = model.fit(method=["lbfgs"], maxiter=50)  # statsmodels' optimizer settings: ignored
    assert res.llf == pytest.approx(dietox_fit.llf, rel=1e-12)
    assert list(res.params.index) == ["Intercept", "Time", "Pig Var"]


def test_users_frame_not_modified(dietox):
    before = dietox.copy()
    data = dietox.copy()
    data.loc[3, "Weight"] = np.nan
    data_before = data.copy()
    mixedlm("Weight ~ Time", data, groups=data["Pig"].to_numpy(), missing="drop").fit()
    mixedlm("Weight ~ Time", data, groups="Pig", re_formula="~Time",
            vc_formula={"e": "0 + C(Evit)"}, missing="drop")
    pd.testing.assert_frame_equal(data, data_before)
    pd.testing.assert_frame_equal(dietox, before)


def test_missing_values(dietox):
    data = dietox.copy()
    data.loc[[3, 10], "Weight"] = np.nan
    with pytest.raises(DataError, match=r"2 row\(s\).*'Weight'.*missing='drop'"):
        mixedlm("Weight ~ Time", data, groups="Pig")
    res = mixedlm("Weight ~ Time", data, groups="Pig", missing="drop").fit()
    assert res.nobs == 859
    assert 3 not in res.fittedvalues.index and 4 in res.fittedvalues.index
    groups = data["Pig"].to_numpy(dtype=float, copy=True)
    groups[0] = np.nan
    with pytest.raises(DataError, match="groups has 1 missing"):
        mixedlm("Weight ~ Time", dietox, groups=groups)
    assert mixedlm("Weight ~ Time", dietox, groups=groups, missing="drop").nobs == 860


def test_subset(dietox):
    keep = (dietox["Time"] <= 6).to_numpy()
    res = mixedlm("Weight ~ Time", dietox, groups=dietox["Pig"], subset=keep).fit()
    direct = lmm_sparse.lmer("Weight ~ Time + (1 | Pig)", dietox[keep])
    assert res.nobs == int(keep.sum())
    assert res.llf == pytest.approx(direct.loglik, rel=1e-12)
    labels = dietox.index[keep]
    assert mixedlm("Weight ~ Time", dietox, groups="Pig", subset=labels).nobs == len(labels)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({}, ModelSpecError, "groups is required"),
        ({"groups": "Pen"}, DataError, "groups 'Pen' is not a column"),
        ({"groups": "~Time"}, DataError, "third positional argument is re_formula"),
        ({"groups": [1, 2, 3]}, DataError, "one value per row of data"),
        ({"groups": "Pig", "re_formula": "1 | Pig"}, ModelSpecError, "re_formula"),
        ({"groups": "Pig", "re_formula": "0"}, ModelSpecError, "no random effects"),
        ({"groups": "Pig", "vc_formula": {"e": "0 + C(Evit) + C(Cu)"}}, ModelSpecError,
         r"vc_formula\['e'\].*2 terms.*shared variance"),
        ({"groups": "Pig", "vc_formula": {"e": "C(Evit)"}}, ModelSpecError,
         r"vc_formula\['e'\].*intercept.*'0 \+"),
        ({"groups": "Pig", "vc_formula": ["0 + C(Evit)"]}, ModelSpecError,
         "vc_formula must be a dict"),
        ({"groups": "Pig", "vc_formula": {"e": "0 + C(Nope)"}}, FormulaError,
         r"vc_formula\['e'\].*'Nope' not found"),
        ({"groups": "one"}, ModelSpecError,
         r"default random intercept \(re_formula=None\) with a constant groups"),
        ({"groups": "one", "re_formula": "~Time"}, ModelSpecError,
         "re_formula '~Time' with a constant groups"),
        ({"groups": "one", "re_formula": "0", "vc_formula": {"t": "0 + Time"}},
         ModelSpecError, r"vc_formula\['t'\].*constant groups"),
        ({"groups": "Pig", "re_formula": "1", "vc_formula": {"i": "1"}}, ModelSpecError,
         r"vc_formula\['i'\] and re_formula give the same"),
        ({"groups": "Pig", "missing": "keep"}, ModelSpecError, "missing must be one of"),
    ],
)
def test_refused_calls_name_the_argument(dietox, kwargs, error, pattern):
    data = dietox.assign(one=1)
    with pytest.raises(error, match=pattern):
        mixedlm("Weight ~ Time", data, **kwargs)


def test_refused_formula_and_fit_arguments(dietox):
    with pytest.raises(ModelSpecError, match="fixed effects only"):
        mixedlm("Weight ~ Time + (1 | Pig)", dietox, groups="Pig")
    with pytest.raises(ModelSpecError, match="array interface"):
        MixedLM(dietox["Weight"].to_numpy(), dietox, groups="Pig")
    model = mixedlm("Weight ~ Time", dietox, groups="Pig")
    with pytest.raises(ModelSpecError, match="free"):
        model.fit(free=object())
    with pytest.raises(ModelSpecError, match="unknown argument 'bogus'"):
        model.fit(bogus=1)
    with pytest.raises(ModelSpecError, match="do_cg=False"):
        model.fit(do_cg=False)
