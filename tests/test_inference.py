"""t and F tests (Satterthwaite, Kenward-Roger), likelihood-ratio tests and Wald intervals
against lmerTest, pbkrtest and lme4 on every reference case.

References: tests/data/reference/lme4_inference_public.json (the cases of cases.csv,
made by lme4_inference.R) and lme4_inference_extra.json (the cases of cases_extra.csv on
data sets not in shared/, made by lme4_inference_extra.R: types I, II and III).

Tolerances are the acceptance lines of the inference issue: df within 1%, p-values within
1% relative or 1e-6 absolute, F statistics within 0.5%, Wald intervals to 1e-6 (relative
to the interval's width), the likelihood-ratio table to 1e-4.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import _name_key, at_theta, case_data, case_formula, load_reference, read_cases

import lmm_sparse
from lmm_sparse.contrasts import contrasts, doolittle_upper, fixed_terms
from lmm_sparse.errors import ModelSpecError
from lmm_sparse.lrt import likelihood_ratio_table

PUBLIC = load_reference("lme4_inference_public.json")
EXTRA = load_reference("lme4_inference_extra.json")
CASES = [(c, PUBLIC[c["id"]]) for c in read_cases("cases.csv") if c["id"] in PUBLIC] + [
    (c, EXTRA[c["id"]]) for c in read_cases("cases_extra.csv") if c["id"] in EXTRA
]
IDS = [c["id"] for c, _ in CASES]

_FITS: dict[str, lmm_sparse.LmerResult] = {}


def fit(case: dict) -> lmm_sparse.LmerResult:
    """One fit per case for the whole module (the tests only read it)."""
    if case["id"] not in _FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[case["id"]] = lmm_sparse.lmer(case_formula(case), case_data(case),
                                                reml=case["reml"])
    return _FITS[case["id"]]


def term_key(label: str) -> tuple[str, ...]:
    """A fixed term's label in an order-free spelling common to R and formulaic."""
    text = label.replace("**", "^").replace("np.", "").replace(" ", "")
    return tuple(sorted(text.split(":")))


def r_varpar_name(name: str) -> str:
    """Our ``cor_Variety[T.Victory].(Intercept)|Block`` in R's spelling:
    ``cor_VarietyVictory.(Intercept)|Block``."""
    return re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", name).replace("**", "^").replace(" ", "")


def close_p(ours: float, ref: float) -> bool:
    return abs(ours - ref) <= max(1e-6, 0.01 * abs(ref))


def check_rows(ours: pd.DataFrame, ref_rows: list[dict], key, columns: dict[str, tuple]):
    """Every reference row has our row with the same key, each column within tolerance.

    columns: our column -> (reference column, kind), kind "rel:<tol>" or "p".
    """
    by_key = {key(name): name for name in ours.index}
    assert len(by_key) == len(ours.index)
    assert {key(r["term"]) for r in ref_rows} == set(by_key), (list(ours.index), ref_rows)
    for row in ref_rows:
        name = by_key[key(row["term"])]
        for col, (ref_col, kind) in columns.items():
            value, expected = float(ours.loc[name, col]), row[ref_col]
            if kind == "p":
                assert close_p(value, expected), (name, col, value, expected)
            else:
                tol = float(kind.split(":")[1])
                assert value == pytest.approx(expected, rel=tol), (name, col, value, expected)


COEF_COLUMNS = {
    "estimate": ("Estimate", "rel:1e-4"),
    "std_error": ("Std. Error", "rel:1e-3"),
    "df": ("df", "rel:0.01"),
    "p_value": ("Pr(>|t|)", "p"),
}
F_COLUMNS = {
    "f_value": ("F value", "rel:0.005"),
    "den_df": ("DenDF", "rel:0.01"),
    "num_df": ("NumDF", "rel:1e-12"),
    "p_value": ("Pr(>F)", "p"),
}


@pytest.mark.parametrize("case,ref", CASES, ids=IDS)
def test_satterthwaite_coefficients_match_lmertest(case, ref):
    check_rows(fit(case).coef_table("satterthwaite"), ref["coef_satterthwaite"], _name_key,
               COEF_COLUMNS)


def f_tables(method: str) -> list:
    """(case, type, reference rows) for every F table the references hold (the public
    one has type III only)."""
    return [
        pytest.param(case, t, ref[f"anova_type{t}_{method}"], id=f"{case['id']}-type{t}")
        for case, ref in CASES
        for t in (1, 2, 3)
        if isinstance(ref.get(f"anova_type{t}_{method}"), list)
    ]


@pytest.mark.parametrize("case,type,rows", f_tables("satterthwaite"))
def test_satterthwaite_f_tests_match_lmertest(case, type, rows):
    check_rows(fit(case).anova(type=type), rows, term_key, F_COLUMNS)


@pytest.mark.parametrize("case,type,rows", f_tables("kenward_roger"))
def test_kenward_roger_f_tests_match_lmertest(case, type, rows):
    check_rows(fit(case).anova(type=type, ddf="kenward-roger"), rows, term_key, F_COLUMNS)


KR_CASES = [(c, r) for c, r in CASES if c["reml"]]


@pytest.mark.parametrize("case,ref", KR_CASES, ids=[c["id"] for c, _ in KR_CASES])
def test_kenward_roger_coefficients_match_lmertest(case, ref):
    check_rows(fit(case).coef_table("kenward-roger"), ref["coef_kenward_roger"], _name_key,
               COEF_COLUMNS)


def test_kenward_roger_refuses_ml_fits():
    case = next(c for c, _ in CASES if not c["reml"])
    with pytest.raises(ModelSpecError, match="REML"):
        fit(case).coef_table("kenward-roger")


@pytest.mark.parametrize("case,ref", CASES, ids=IDS)
def test_wald_intervals_match_lme4(case, ref):
    res = fit(case)
    ours = res.confint("wald")
    assert list(ours.columns) == ["2.5 %", "97.5 %"]
    expected = {r["term"]: (r["2.5 %"], r["97.5 %"]) for r in ref["confint_wald"]}
    assert len(ours) == len(expected)
    lme4_se = {_name_key(r["term"]): r["Std. Error"] for r in ref["coef_satterthwaite"]}
    varpar = {r_varpar_name(n): n for n in ours.index[: len(ours) - len(res.fixef)]}
    fixed = {_name_key(n): n for n in res.fixef.index}
    se = np.sqrt(np.diag(res.vcov.to_numpy()))
    z = 1.959963984540054
    for term, (lo, hi) in expected.items():
        if lo is None:  # variance parameters: no Wald interval, as lme4
            assert ours.loc[varpar[term]].isna().all(), term
            continue
        name = fixed[_name_key(term)]
        j = list(res.fixef.index).index(name)
        # The intervals are computed from the estimates, which differ from lme4's where
        # lme4's optimizer stops early (orthodont_slopes_interaction: lme4's REML
        # criterion is 5.6e-6 above ours, theta differs by 1e-3, standard errors by
        # 3e-4): the standard errors must agree to 1e-3 as in the parity tests, and the
        # endpoints to 1e-6 of the width beyond what the estimates' differences explain.
        d_est = abs(float(res.fixef[name]) - (lo + hi) / 2)
        d_se = abs(se[j] - lme4_se[_name_key(term)])
        assert d_se <= 1e-3 * se[j]
        slack = 1e-6 * (hi - lo) + d_est + z * d_se
        assert abs(ours.loc[name, "2.5 %"] - lo) <= slack
        assert abs(ours.loc[name, "97.5 %"] - hi) <= slack


FIT_REFS = {**load_reference("lme4_public.json"), **load_reference("lme4_extra.json")}


@pytest.mark.parametrize("case,ref", CASES, ids=IDS)
def test_wald_intervals_at_lme4s_optimum_match_to_1e6(case, ref):
    """At lme4's own theta (our criterion there equals lme4's), every Wald end is lme4's
    to 1e-6 of the interval's width: the interval itself, apart from where optimizers stop."""
    fit_ref = FIT_REFS[case["id"]]
    res = at_theta(fit(case), fit_ref["theta"])
    assert res.objective == pytest.approx(fit_ref["objective"], abs=1e-6)
    ours = res.confint("wald")
    fixed = {_name_key(n): n for n in res.fixef.index}
    for row in ref["confint_wald"]:
        if row["2.5 %"] is None:
            continue
        name, width = fixed[_name_key(row["term"])], row["97.5 %"] - row["2.5 %"]
        assert abs(ours.loc[name, "2.5 %"] - row["2.5 %"]) <= 1e-6 * width, name
        assert abs(ours.loc[name, "97.5 %"] - row["97.5 %"]) <= 1e-6 * width, name


def test_wald_interval_is_estimate_plus_minus_normal_quantile(orthodont):
    for level in (0.9, 0.95, 0.99):
        table = orthodont.confint("wald", level=level)
        assert list(table.columns) == {0.9: ["5 %", "95 %"], 0.95: ["2.5 %", "97.5 %"],
                                       0.99: ["0.5 %", "99.5 %"]}[level]
        from scipy import stats

        z = stats.norm.ppf((1 + level) / 2)
        se = np.sqrt(np.diag(orthodont.vcov.to_numpy()))
        fixed = table.loc[orthodont.fixef.index]
        np.testing.assert_allclose(fixed.iloc[:, 0], orthodont.fixef - z * se, rtol=1e-12)
        np.testing.assert_allclose(fixed.iloc[:, 1], orthodont.fixef + z * se, rtol=1e-12)


def lrt_cases():
    out = [("sleepstudy", PUBLIC["lrt_sleepstudy"] | {"data": "sleepstudy",
                                                       "factors": "Subject", "reml": True})]
    out += list(EXTRA["lrt_extra"].items())
    return out


@pytest.mark.parametrize("name,ref", lrt_cases(), ids=[n for n, _ in lrt_cases()])
def test_likelihood_ratio_table_matches_lme4(name, ref):
    case = {"data": ref["data"], "factors": [f for f in ref["factors"].split(";") if f]}
    data = case_data(case)
    fits = [lmm_sparse.lmer(f.replace("^", "**"), data, reml=ref["reml"])
            for f in ref["models"]]
    if ref["reml"]:
        with pytest.warns(UserWarning, match="refitting"):
            table = lmm_sparse.anova(*fits)
    else:
        table = lmm_sparse.anova(*fits)
    for ours, row in zip(table.itertuples(), ref["table"], strict=True):
        assert ours.npar == row["npar"]
        for col, ref_col in [("aic", "AIC"), ("bic", "BIC"), ("loglik", "logLik"),
                             ("deviance", "deviance")]:
            assert getattr(ours, col) == pytest.approx(row[ref_col], abs=1e-4), col
        if row["Chisq"] is None:
            assert math.isnan(ours.chisq)
            continue
        assert ours.chisq == pytest.approx(row["Chisq"], abs=1e-4)
        assert ours.df == row["Df"]
        assert close_p(ours.p_value, row["Pr(>Chisq)"])


# ----------------------------------------------------------------- contrasts, by definition


def test_doolittle_factor_reproduces_the_matrix():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 4))
    A = A.T @ A
    U = doolittle_upper(A)
    assert np.allclose(np.tril(U, -1), 0) and np.allclose(np.diag(U), 1)
    D = np.diag(np.diag(np.linalg.cholesky(A)) ** 2)
    np.testing.assert_allclose(U.T @ D @ U, A, rtol=1e-10)


@pytest.fixture(scope="module")
def orthodont():
    case = next(c for c, _ in CASES if c["id"] == "orthodont_slopes_interaction")
    return fit(case)


def test_type3_tests_the_highest_order_term_by_its_own_coefficient(orthodont):
    L = contrasts(orthodont.model, 3)
    assert set(L) == {"age", "Sex", "age:Sex"}
    names = list(orthodont.fixef.index)
    # the interaction is tested by its own coefficient alone
    row = L["age:Sex"][0]
    assert np.count_nonzero(row) == 1 and row[names.index("age:Sex[T.Male]")] != 0
    # F of the interaction is the same under every type (it is the last term)
    f = [orthodont.anova(type=t)["f_value"]["age:Sex"] for t in (1, 2, 3)]
    assert f[0] == pytest.approx(f[1], rel=1e-10) and f[1] == pytest.approx(f[2], rel=1e-10)


def test_type1_sums_of_squares_differ_from_type3_when_terms_are_not_orthogonal(orthodont):
    t1, t3 = orthodont.anova(type=1), orthodont.anova(type=3)
    assert not np.isclose(t1.loc["Sex", "f_value"], t3.loc["Sex", "f_value"], rtol=1e-3)


def test_fixed_terms_know_numeric_and_categorical_variables(orthodont):
    has_intercept, terms = fixed_terms(orthodont.model)
    assert has_intercept
    by_label = {t.label: t for t in terms}
    assert by_label["age"].numeric == {"age"} and by_label["Sex"].numeric == frozenset()
    assert by_label["Sex"].contained_in(by_label["age:Sex"]) is False  # numerics differ
    assert by_label["age"].contained_in(by_label["age:Sex"])


def test_bad_type_and_ddf_are_named(orthodont):
    with pytest.raises(ModelSpecError, match="type must be"):
        orthodont.anova(type=4)
    with pytest.raises(ModelSpecError, match="ddf must be one of"):
        orthodont.coef_table(ddf="welch")
    with pytest.raises(ModelSpecError, match="level must be"):
        orthodont.confint("wald", level=1.5)
    with pytest.raises(ModelSpecError, match="method must be one of"):
        orthodont.confint("bayes")


def test_ddf_choices_share_estimates_and_differ_in_df(orthodont):
    sat, res, z = (orthodont.coef_table(d) for d in ("satterthwaite", "residual", None))
    np.testing.assert_allclose(sat["estimate"], z["estimate"])
    np.testing.assert_allclose(res["std_error"], z["std_error"])
    assert (res["df"] == orthodont.nobs - len(orthodont.fixef)).all()
    assert "z_value" in z.columns and "df" not in z.columns
    # a z test is never more conservative than a t test with the same statistic
    assert (z["p_value"] <= res["p_value"] + 1e-15).all()


def test_likelihood_ratio_needs_the_same_rows():
    data = lmm_sparse.datasets.load("sleepstudy")
    short = data.iloc[:-10]
    m0 = lmm_sparse.lmer("Reaction ~ Days + (1 | Subject)", data, reml=False)
    m1 = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", short, reml=False)
    with pytest.raises(lmm_sparse.DataError, match="different numbers of observations"):
        lmm_sparse.anova(m0, m1)
    with pytest.raises(ModelSpecError, match="at least two"):
        likelihood_ratio_table(m0)
    other = lmm_sparse.lmer("Days ~ Reaction + (1 | Subject)", data, reml=False)
    with pytest.raises(lmm_sparse.DataError, match="different responses"):
        lmm_sparse.anova(m0, other)


def test_satterthwaite_hessian_by_gradients_equals_hessian_by_values():
    # Two independent numerical routes to the same derivatives: second differences of
    # the criterion's parts, and first differences of their exact gradients. Second
    # differences lose more to rounding; 1e-5 is 1000 times finer than the 1% the df
    # must match lmerTest to.
    from lmm_sparse.satterthwaite import _parts_by_gradients, _parts_by_values

    data = lmm_sparse.datasets.load("sleepstudy")
    res = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", data)
    assert res.model.workspace.has_gradient
    by_values = _parts_by_values(res, res.theta)
    by_gradients = _parts_by_gradients(res, res.theta)
    for a, b in zip(by_values, by_gradients, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8 * np.max(np.abs(b)))
