"""Kenward-Roger (lmm_sparse.kenward_roger) against pbkrtest/lmerTest and a dense-n check.

Two kinds of checks:

* the q-space moments (no n x n matrix) against pbkrtest's own dense formulas, written
  out here with n x n matrices (Sigma^{-1}, G_r) on small data;
* lmerTest's Kenward-Roger coefficient tables and type-III F tests
  (tests/data/reference/lme4_inference_public.json and lme4_inference_extra.json). These
  are computed at lme4's theta (lme4_public.json / lme4_extra.json), so that they test the
  Kenward-Roger computation and not where two optimizers stop: at lme4's theta the
  standard errors agree to 1e-6 relative. At our own optimum the df and p-values are
  checked with the same tolerances, the standard errors with the fit's (0.2%).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from conftest import (
    SE_REL,
    _name_key,
    at_theta,
    case_data,
    case_formula,
    load_reference,
    read_cases,
    synthetic_frame,
)
from scipy import stats

from lmm_sparse import lmer
from lmm_sparse.errors import ModelSpecError
from lmm_sparse.kenward_roger import (
    _make_chunks,
    kr_adjustment,
    kr_ddf,
    kr_ftest,
    kr_ttest,
)

SE_TOL = 1e-6  # relative, at lme4's theta
DF_TOL = 0.01
F_TOL = 0.005
P_REL, P_ABS = 0.01, 1e-6

SOURCES = (
    ("cases.csv", "lme4_inference_public.json", "lme4_public.json"),
    ("cases_extra.csv", "lme4_inference_extra.json", "lme4_extra.json"),
)
KR_CASES = [
    (case, load_reference(inference)[case["id"]], load_reference(fits)[case["id"]])
    for cases, inference, fits in SOURCES
    for case in read_cases(cases)
    if case["reml"] and load_reference(inference).get(case["id"], {}).get("coef_kenward_roger")
]
KR_IDS = [case["id"] for case, _, _ in KR_CASES]
_FITS: dict[str, object] = {}


def fit(case: dict):
    """Our fit of a reference case, once per test session."""
    if case["id"] not in _FITS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[case["id"]] = lmer(case_formula(case), case_data(case), reml=case["reml"])
    return _FITS[case["id"]]


def lme4_point(case, fit_ref):
    """Our model at lme4's optimum; its criterion must be lme4's (same theta layout)."""
    res = at_theta(fit(case), fit_ref["theta"])
    assert res.objective == pytest.approx(fit_ref["objective"], abs=1e-6)
    return res


def close_p(ours: float, ref: float) -> bool:
    return abs(ours - ref) <= max(P_ABS, P_REL * abs(ref))


def unit(p: int, j: int) -> np.ndarray:
    e = np.zeros(p)
    e[j] = 1.0
    return e


# --------------------------------------------------------------------------- dense n check


def dense_pbkrtest(res) -> dict[str, np.ndarray]:
    """pbkrtest's vcovAdj written out with dense n x n matrices (small data only)."""
    model = res.model
    X, Z = model.X, model.Z.toarray()
    n, s2 = X.shape[0], res.sigma**2
    G, gamma = [], []
    for t, term in enumerate(model.re.terms):
        T = model.re.template(res.theta, t)
        cov = s2 * T @ T.T
        k, lev, off = term.k, term.nlevels, model.re.offsets[t]
        Zt = Z[:, off : off + lev * k]
        for b in range(k):
            for a in range(b, k):
                E = np.zeros((k, k))
                E[a, b] = E[b, a] = 1.0
                G.append(Zt @ np.kron(np.eye(lev), E) @ Zt.T)
                gamma.append(cov[a, b])
    G.append(np.eye(n))
    gamma.append(s2)
    Sigma = sum(g * Gr for g, Gr in zip(gamma, G, strict=True))
    Sinv = np.linalg.inv(Sigma)
    Phi = res.vcov.to_numpy()
    m = len(G)
    H = [Gr @ Sinv for Gr in G]
    HX = [h @ X for h in H]  # pbkrtest's OO
    P = np.array([-hx.T @ Sinv @ X for hx in HX])
    Q = np.array([[HX[r].T @ Sinv @ HX[s] for s in range(m)] for r in range(m)])
    K = np.array([[np.sum(H[r].T * H[s]) for s in range(m)] for r in range(m)])
    info2 = np.array([[K[r, s] - 2 * np.trace(Phi @ Q[r, s]) + np.trace(Phi @ P[r] @ Phi @ P[s])
                       for s in range(m)] for r in range(m)])
    W = 2 * np.linalg.inv(info2)
    U = sum(W[r, s] * (Q[r, s] - P[r] @ Phi @ P[s]) for r in range(m) for s in range(m))
    return {"PhiA": Phi + 2 * Phi @ U @ Phi, "P": P, "W": W, "gamma": np.array(gamma),
            "Sigma_inv_X": Sinv @ X}


def synthetic_fit():
    data = synthetic_frame(160, seed=7, a_levels=9, b_levels=5, slopes=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return lmer("y ~ x + f + (x | a) + (1 | b)", data)


DENSE_CASES = {
    "sleepstudy (correlated slope)": lambda: fit(read_cases("cases.csv")[0]),
    "penicillin (crossed)": lambda: fit(next(c for c in read_cases("cases.csv")
                                             if c["id"] == "penicillin_crossed")),
    "pastes (nested)": lambda: fit(next(c for c in read_cases("cases.csv")
                                        if c["id"] == "pastes_nested")),
    "oats (k = 3 categorical slope)": lambda: fit(next(c for c in read_cases("cases_extra.csv")
                                                       if c["id"] == "oats_categorical_slope")),
    "synthetic (crossed, slope, factor)": synthetic_fit,
}


@pytest.mark.parametrize("make", DENSE_CASES.values(), ids=DENSE_CASES.keys())
def test_q_space_equals_dense_n_formulas(make):
    """PhiA, P, W and gamma from q-space equal pbkrtest's n x n formulas."""
    res = make()
    dense = dense_pbkrtest(res)
    adj = kr_adjustment(res)
    assert adj.gamma == pytest.approx(dense["gamma"], rel=1e-12)
    np.testing.assert_allclose(adj.W, dense["W"], rtol=1e-7, atol=1e-9 * np.abs(dense["W"]).max())
    scale = np.abs(dense["P"]).max()
    np.testing.assert_allclose(adj.P, dense["P"], rtol=1e-7, atol=1e-9 * scale)
    np.testing.assert_allclose(adj.PhiA, dense["PhiA"], rtol=1e-8,
                               atol=1e-10 * np.abs(dense["PhiA"]).max())
    # the unadjusted Phi is the fit's vcov, (X' Sigma^{-1} X)^{-1}
    np.testing.assert_allclose(np.linalg.inv(adj.Phi), res.model.X.T @ dense["Sigma_inv_X"],
                               rtol=1e-8)


def test_adjustment_does_not_depend_on_chunking():
    """Components (here the 10 batches of Pastes) are summed exactly, however packed."""
    case = next(c for c in read_cases("cases.csv") if c["id"] == "pastes_nested")
    res = fit(case)
    one_each = _make_chunks(res.model.re, 1, 10_000)
    assert len(one_each) == 10
    cols = np.sort(np.concatenate([c.cols for c in one_each]))
    np.testing.assert_array_equal(cols, np.arange(res.model.re.q))
    assert len(_make_chunks(res.model.re, 10**6, 10_000)) == 1
    a = kr_adjustment(res, chunk_columns=1)
    b = kr_adjustment(res, chunk_columns=10**6)
    np.testing.assert_allclose(a.PhiA, b.PhiA, rtol=1e-11)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-9, atol=1e-12 * np.abs(b.W).max())


def test_refuses_a_component_bigger_than_the_limit():
    case = next(c for c in read_cases("cases.csv") if c["id"] == "penicillin_crossed")
    with pytest.raises(ModelSpecError, match="30 x 30"):
        kr_adjustment(fit(case), max_component_columns=29)


def test_refuses_ml_fits():
    case = next(c for c in read_cases("cases.csv") if c["id"] == "sleepstudy_ml")
    with pytest.raises(ModelSpecError, match=r"REML.*reml=False"):
        kr_adjustment(fit(case))


# --------------------------------------------------------------------------- lmerTest tables


@pytest.mark.parametrize("case,ref,fit_ref", KR_CASES, ids=KR_IDS)
def test_coefficients_match_lmertest_at_lme4_theta(case, ref, fit_ref):
    res = lme4_point(case, fit_ref)
    adj = kr_adjustment(res)
    beta = res.fixef.to_numpy()
    index = {_name_key(n): j for j, n in enumerate(res.fixef.index)}
    assert set(index) == {_name_key(row["term"]) for row in ref["coef_kenward_roger"]}
    for row in ref["coef_kenward_roger"]:
        t = kr_ttest(adj, unit(beta.size, index[_name_key(row["term"])]), beta)
        assert t.std_error == pytest.approx(row["Std. Error"], rel=SE_TOL), row["term"]
        assert t.df == pytest.approx(row["df"], rel=DF_TOL), row["term"]
        assert t.t_value == pytest.approx(row["t value"], rel=SE_TOL), row["term"]
        assert close_p(t.p_value, row["Pr(>|t|)"]), (row["term"], t.p_value)


@pytest.mark.parametrize("case,ref,fit_ref", KR_CASES, ids=KR_IDS)
def test_coefficients_match_lmertest_at_our_fit(case, ref, fit_ref):
    res = fit(case)
    adj = kr_adjustment(res)
    beta = res.fixef.to_numpy()
    index = {_name_key(n): j for j, n in enumerate(res.fixef.index)}
    for row in ref["coef_kenward_roger"]:
        j = index[_name_key(row["term"])]
        df = kr_ddf(adj, unit(beta.size, j))
        se = float(np.sqrt(adj.PhiA[j, j]))
        p = 2 * stats.t.sf(abs(beta[j] / se), df)
        assert se == pytest.approx(row["Std. Error"], rel=SE_REL), row["term"]
        assert df == pytest.approx(row["df"], rel=DF_TOL), row["term"]
        assert close_p(p, row["Pr(>|t|)"]), (row["term"], p)


_LEVEL = re.compile(r"\[(?:T\.)?[^\[\]]*\]$")


def _variables(name: str) -> tuple[str, ...]:
    """The variables of a coefficient or term name, R and formulaic spellings alike."""
    parts = (_LEVEL.sub("", part).replace("**", "^").replace(" ", "") for part in name.split(":"))
    return tuple(sorted(parts))


def identity_f_tests():
    """(case, term, reference row) for every type-III KR row whose term is contained in no
    other term: its hypothesis is then every one of its coefficients, an identity L."""
    out = []
    for case, ref, fit_ref in KR_CASES:
        rows = ref.get("anova_type3_kenward_roger") or []
        terms = [set(_variables(r["term"])) for r in rows]
        for row, vars_ in zip(rows, terms, strict=True):
            if not any(vars_ < other for other in terms):
                out.append(pytest.param(case, fit_ref, row, id=f"{case['id']}-{row['term']}"))
    return out


@pytest.mark.parametrize("case,fit_ref,row", identity_f_tests())
def test_type3_f_tests_match_lmertest(case, fit_ref, row):
    res = lme4_point(case, fit_ref)
    names = list(res.fixef.index)
    cols = [j for j, n in enumerate(names) if _variables(n) == _variables(row["term"])]
    assert len(cols) == row["NumDF"]
    test = kr_ftest(kr_adjustment(res), np.eye(len(names))[cols], res.fixef.to_numpy())
    assert test.numdf == row["NumDF"]
    assert test.F == pytest.approx(row["F value"], rel=F_TOL)
    assert test.dendf == pytest.approx(row["DenDF"], rel=DF_TOL)
    assert close_p(test.p_value, row["Pr(>F)"]), (test.p_value, row["Pr(>F)"])
    assert test.mean_sq == pytest.approx(row["Mean Sq"], rel=1e-6)
    assert test.sum_sq == pytest.approx(row["Sum Sq"], rel=1e-6)


def test_identity_f_tests_cover_multi_row_contrasts():
    assert sum(p.values[2]["NumDF"] > 1 for p in identity_f_tests()) >= 6


def test_f_value_is_scaled_and_mean_sq_is_not():
    """lmerTest reports F value = lambda F_u but Mean Sq = F_u sigma^2. ChickWeight's
    Time:Diet has lambda = 1 - 1.05e-6, which the reference resolves at lme4's theta."""
    params = {p.id: p.values for p in identity_f_tests()}
    case, fit_ref, row = params["chickweight_log_response-Time:Diet"]
    res = lme4_point(case, fit_ref)
    names = list(res.fixef.index)
    cols = [j for j, n in enumerate(names) if _variables(n) == _variables(row["term"])]
    test = kr_ftest(kr_adjustment(res), np.eye(len(names))[cols], res.fixef.to_numpy())
    assert abs(test.scaling - 1.0) > 5e-7
    assert test.F == pytest.approx(test.scaling * test.unscaled, rel=1e-14)
    assert test.F == pytest.approx(row["F value"], rel=1e-9)
    assert test.unscaled != pytest.approx(row["F value"], rel=1e-7)
    assert test.mean_sq == pytest.approx(row["Mean Sq"], rel=1e-9)
    assert test.F * res.sigma**2 != pytest.approx(row["Mean Sq"], rel=1e-7)


# --------------------------------------------------------------------------- contrasts


def _ergostool():
    return fit(next(c for c in read_cases("cases.csv") if c["id"] == "ergostool_categorical"))


def test_one_row_f_test_is_the_squared_t_test():
    res = fit(read_cases("cases.csv")[0])
    adj, beta = kr_adjustment(res), res.fixef.to_numpy()
    t = kr_ttest(adj, [0.0, 1.0], beta)
    f = kr_ftest(adj, [[0.0, 1.0]], beta)
    assert f.numdf == 1
    assert f.dendf == pytest.approx(t.df, rel=1e-12)
    assert f.unscaled == pytest.approx(t.t_value**2, rel=1e-12)


def test_rank_deficient_contrast_tests_its_row_space():
    res = _ergostool()
    adj, beta = kr_adjustment(res), res.fixef.to_numpy()
    full = kr_ftest(adj, [[0, 1, 0, 0], [0, 0, 1, 0]], beta)
    redundant = kr_ftest(adj, [[0, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]], beta)
    assert redundant.numdf == 2
    assert redundant.F == pytest.approx(full.F, rel=1e-10)
    assert redundant.dendf == pytest.approx(full.dendf, rel=1e-10)


def test_rhs_shifts_the_hypothesis():
    res = _ergostool()
    adj, beta = kr_adjustment(res), res.fixef.to_numpy()
    L = [[0, 1, 0, 0], [0, 0, 1, 0]]
    at_estimate = kr_ftest(adj, L, beta, rhs=beta[1:3])
    assert at_estimate.F == pytest.approx(0.0, abs=1e-20)
    assert at_estimate.p_value == pytest.approx(1.0)
    t = kr_ttest(adj, [0, 1, 0, 0], beta, rhs=1.0)
    assert t.t_value == pytest.approx((beta[1] - 1.0) / t.std_error)


@pytest.mark.parametrize(
    "L,match",
    [
        ([1.0, 0.0], r"4 columns.*\(1, 2\)"),
        ([[0, 1, 0, np.nan]], "non-finite"),
        ([0, 0, 0, 0], "zero"),
    ],
)
def test_bad_contrasts_are_named(L, match):
    res = _ergostool()
    adj = kr_adjustment(res)
    with pytest.raises(ModelSpecError, match=match):
        kr_ftest(adj, L, res.fixef.to_numpy())
    with pytest.raises(ModelSpecError, match=match):
        kr_ddf(adj, L)


def test_kr_ddf_takes_one_row():
    adj = kr_adjustment(_ergostool())
    with pytest.raises(ModelSpecError, match="2 rows"):
        kr_ddf(adj, np.eye(4)[1:3])


def test_adjustment_is_read_only_and_labelled():
    res = _ergostool()
    adj = kr_adjustment(res)
    with pytest.raises(ValueError):
        adj.PhiA[0, 0] = 0.0
    assert adj.names == tuple(res.fixef.index)
    assert adj.gamma_names == ("Subject: var((Intercept))", "Residual")
    assert adj.gamma[-1] == pytest.approx(res.sigma**2)


def test_reference_standard_errors_need_the_adjustment():
    """Where lmerTest's KR standard errors differ from the unadjusted ones (the k = 3
    categorical slope of Oats, by 31%), ours follow the adjusted ones."""
    case, ref, fit_ref = next(c for c in KR_CASES if c[0]["id"] == "oats_categorical_slope")
    adj = kr_adjustment(lme4_point(case, fit_ref))
    names = [_name_key(n) for n in adj.names]
    for row in ref["coef_kenward_roger"]:
        j = names.index(_name_key(row["term"]))
        assert np.sqrt(adj.PhiA[j, j]) == pytest.approx(row["Std. Error"], rel=SE_TOL)
    gaps = [abs(np.sqrt(adj.Phi[j, j] / adj.PhiA[j, j]) - 1) for j in range(len(names))]
    assert max(gaps) > 0.2
