"""Property-based tests (hypothesis): the criterion against a dense marginal likelihood on
random small designs, invariances of the fit, hard designs, and the caller's data frame.

Every hypothesis test is derandomized (the same examples on every run) and has no
database, so CI is deterministic. Reference values are computed here with numpy from the
data frame itself: X, Z Lambda and V are built in this file (never read from the model),
and the profiled criterion is ``dense_criterion`` of test_dense_deviance.py.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.sparse as sp
from hypothesis import HealthCheck, Phase, assume, event, example, given, settings
from hypothesis import strategies as st
from strategies import (
    FIT_FORMULAS,
    INTERCEPT,
    MESSY_FORMULAS,
    RELABEL_STYLES,
    STRUCTURES,
    design_data,
    design_specs,
    lme4_refuses,
    messy_frames,
    relabel_column,
    relabel_map,
    simulate_fit_data,
)
from test_dense_deviance import dense_criterion

import lmm_sparse
from lmm_sparse.errors import (
    ConvergenceWarning,
    ModelSpecError,
    RankDeficiencyWarning,
    SingularFitWarning,
)

KERNELS = ("cholmod", "schur")
REL_TOL = 1e-8  # criterion values: the sparse, Schur and dense evaluations vs the reference
FIXEF_SE = 1e-6  # fixed effects: fraction of their standard error
# Refits of equivalent data: the same criterion up to rounding, but the optimizer may take
# another path and stops within its tolerance (L-BFGS-B, ftol 1e-12 on a criterion of
# ~1e3 with curvature ~1e2 in theta): theta is determined to ~1e-6 (seen: up to 1e-6 for
# y * 1e6, ~1e-14 for row permutations). Hence 1e-5 absolute on theta and on correlations,
# and 1e-5 relative on sigma and the standard deviations (theta / sigma can be ~0.1).
# Fixed effects move by (d beta / d theta) * 1e-6, far below 1e-6 of their SE (seen 1e-8).
THETA_ABS = 1e-5
REL_FIT = 1e-5


def hsettings(max_examples: int, fits: bool = False, **kwargs):
    """Deterministic hypothesis settings (derandomized, no example database).

    ``fits``: the test fits models, so shrinking a failure would refit hundreds of times
    (minutes); the failing example is reported unshrunk. Its parameters are already the
    structure of the case (a design, a seed), which is what a reproduction needs.
    """
    if fits:
        kwargs.setdefault("phases", [Phase.explicit, Phase.generate])
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **kwargs,
    )


# --------------------------------------------------------------------------- reference algebra


def template(values: np.ndarray, k: int) -> np.ndarray:
    """k x k lower-triangular template filled column by column (lme4's theta order)."""
    T = np.zeros((k, k))
    pos = 0
    for j in range(k):
        for i in range(j, k):
            T[i, j] = values[pos]
            pos += 1
    return T


def reference_fixed(df: pd.DataFrame, categorical: bool) -> np.ndarray:
    """[1, x, indicators of c's levels but the first in sorted order]: treatment contrasts."""
    cols = [np.ones(len(df)), df["x"].to_numpy(float)]
    if categorical:
        for level in sorted(df["c"].unique())[1:]:
            cols.append((df["c"] == level).to_numpy(float))
    return np.column_stack(cols)


def reference_zlambda(df: pd.DataFrame, terms, theta: np.ndarray) -> np.ndarray:
    """Z Lambda(theta) from the data frame, term by term.

    Only the labels of each term are read from the model (its grouping factors, its
    coefficient names and hence its slice of theta: terms follow one another in theta in
    the order given); levels and model-matrix columns are computed here.
    """
    n, blocks, pos = len(df), [], 0
    for term in terms:
        names, factors = term.coef_names, term.bar.factors
        k = len(names)
        T = template(theta[pos : pos + k * (k + 1) // 2], k)
        pos += k * (k + 1) // 2
        raw = np.column_stack(
            [np.ones(n) if name == INTERCEPT else df[name].to_numpy(float) for name in names]
        )
        keys = pd.Series(list(zip(*(df[f].tolist() for f in factors), strict=True)))
        codes, uniques = pd.factorize(keys)
        block = np.zeros((n, len(uniques) * k))
        block[np.arange(n)[:, None], codes[:, None] * k + np.arange(k)] = raw @ T
        blocks.append(block)
    assert pos == len(theta), "the terms do not account for every element of theta"
    return np.hstack(blocks)


def reference_criterion(X, y, ZL, reml: bool) -> float:
    q = ZL.shape[1]
    return dense_criterion(X, y, sp.csc_matrix(ZL), sp.identity(q, format="csc"), reml)


def reference_gls(X, y, ZL, reml: bool) -> tuple[np.ndarray, float]:
    """GLS beta and profiled sigma for V = I + ZL ZL' (the quantities the criterion profiles)."""
    n, p = X.shape
    C = scipy.linalg.cholesky(ZL @ ZL.T + np.eye(n), lower=True)
    CX = scipy.linalg.solve_triangular(C, X, lower=True)
    Cy = scipy.linalg.solve_triangular(C, np.asarray(y, float), lower=True)
    beta = np.linalg.lstsq(CX, Cy, rcond=None)[0]
    rss = float(np.sum((Cy - CX @ beta) ** 2))
    return beta, math.sqrt(rss / (n - p if reml else n))


def theta_strategy(lower: np.ndarray) -> st.SearchStrategy[np.ndarray]:
    """theta within lme4's bounds: diagonal elements 0 (the boundary) or positive,
    off-diagonal ones of either sign."""
    diagonal = st.one_of(
        st.just(0.0), st.sampled_from([1e-6, 1e-3]), st.floats(0.01, 4.0, allow_nan=False)
    )
    off = st.one_of(st.just(0.0), st.floats(-3.0, 3.0, allow_nan=False))
    parts = [diagonal if lo == 0 else off for lo in np.asarray(lower)]
    return st.tuples(*parts).map(lambda t: np.array(t, dtype=float))


# --------------------------------------------------------------------------- 1. dense deviance


@hsettings(70)
@given(spec=design_specs(), reml=st.booleans(), data=st.data())
def test_objective_equals_dense_marginal_likelihood(spec, reml, data):
    """Crossed, nested, correlated and uncorrelated slopes, a categorical fixed effect,
    unbalanced cells and singleton levels; theta on and off the boundary: the CHOLMOD and
    Schur kernels and the dense evaluator all give the dense profiled criterion."""
    df = design_data(spec)
    expected_terms = STRUCTURES[spec.structure][1]
    refuses = lme4_refuses(df, expected_terms, len(df))
    try:
        models = {
            k: lmm_sparse.LinearMixedModel(spec.formula, df, reml=reml, kernel=k)
            for k in KERNELS
        }
    except ModelSpecError as exc:
        assert refuses, f"{spec.formula} refused though lme4's checks pass: {exc}"
        event("refused by lme4's checks")
        return
    event(f"{spec.structure}, {'unbalanced' if spec.skew < 1 else 'balanced-ish'}")
    assert not refuses, f"{spec.formula} on {len(df)} rows fitted though lme4 refuses it"
    first = models["cholmod"]
    got_terms = sorted((t.bar.factors, t.coef_names) for t in first.re.terms)
    assert got_terms == sorted(expected_terms)
    X = reference_fixed(df, spec.categorical)
    assert first.X.shape == X.shape and np.array_equal(first.y, df["y"].to_numpy())
    dense = first.dense_pls()
    assert dense is not None  # q <= DENSE_MAX_Q for these sizes
    for theta in (data.draw(theta_strategy(first.re.lower)) for _ in range(2)):
        ZL = reference_zlambda(df, first.re.terms, theta)
        expected = reference_criterion(X, df["y"], ZL, reml)
        got = {k: m.objective(theta) for k, m in models.items()}
        got["dense"] = dense.objective(theta, reml)
        for name, value in got.items():
            assert value == pytest.approx(expected, rel=REL_TOL), (
                f"{spec.formula} reml={reml} {name} theta={theta.tolist()}: {value!r} "
                f"vs dense marginal likelihood {expected!r}"
            )


# --------------------------------------------------------------------------- 2. invariances

_FITS: dict = {}


def fit(formula: str, df: pd.DataFrame, reml: bool, record: list | None = None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = lmm_sparse.lmer(formula, df, reml=reml)
    if record is not None:
        record.extend(caught)
    return res


def base_fit(structure: str, seed: int, reml: bool):
    """The fit of the untransformed data (cached: several tests transform the same data).

    Realistic data: the fit converges inside the parameter space, without warnings. The
    rare draw whose fit is singular (about 1 in 200, a property of the sample: every
    optimizer finds the same boundary optimum) is discarded; boundary fits are the
    subject of test_zero_variance_term_gives_singular_fit.
    """
    key = (structure, seed, reml)
    if key not in _FITS:
        df = simulate_fit_data(seed)
        caught: list = []
        res = fit(FIT_FORMULAS[structure], df, reml, caught)
        _FITS[key] = None if res.is_singular else (df, res)
        if not res.is_singular:
            assert res.converged, (key, res.theta, res.optinfo.messages)
            assert not caught, [str(w.message) for w in caught]
    assume(_FITS[key] is not None)
    df, res = _FITS[key]
    return df.copy(), res


def assert_same_fit(got, ref, *, scale: float = 1.0, what: str = "") -> None:
    """``got`` is ``ref`` with the response multiplied by ``scale`` (1: the same fit)."""
    n, p = ref.nobs, len(ref.fixef)
    shift = 2.0 * (n - p if ref.reml else n) * math.log(scale)  # log-Jacobian of y -> c y
    assert got.objective - shift == pytest.approx(ref.objective, rel=REL_TOL), what
    assert list(got.fixef.index) == list(ref.fixef.index), what
    se = np.sqrt(np.diag(ref.vcov.to_numpy()))
    diff = np.abs(got.fixef.to_numpy() / scale - ref.fixef.to_numpy()) / se
    assert np.all(diff <= FIXEF_SE), f"{what}: fixef differ by {diff.max():.3g} SE"
    assert got.sigma / scale == pytest.approx(ref.sigma, rel=REL_FIT), what
    np.testing.assert_allclose(got.theta, ref.theta, rtol=0, atol=THETA_ABS, err_msg=what)
    gv, rv = got.varcorr, ref.varcorr
    for col in ("grp", "var1", "var2"):
        assert gv[col].tolist() == rv[col].tolist(), what
    corr = rv["var2"].notna().to_numpy()
    # variances relative to themselves, a covariance relative to the product of its sds
    sds = {(g, v1): sd for g, v1, v2, sd in rv[["grp", "var1", "var2", "sdcor"]].itertuples(
        index=False) if v2 is None}
    unit = np.array([sds[(g, v1)] * sds[(g, v2)] if v2 is not None else var
                     for g, v1, v2, var in rv[["grp", "var1", "var2", "vcov"]].itertuples(
                         index=False)])
    unit = np.maximum(np.abs(unit), THETA_ABS * ref.sigma**2)  # variances near zero
    excess = np.abs(gv["vcov"].to_numpy() / scale**2 - rv["vcov"].to_numpy()) / unit
    assert np.all(excess <= REL_FIT), f"{what}: variance components differ by {excess}"
    np.testing.assert_allclose(gv["sdcor"][~corr] / scale, rv["sdcor"][~corr], rtol=REL_FIT,
                               err_msg=what)
    np.testing.assert_allclose(gv["sdcor"][corr], rv["sdcor"][corr], rtol=0, atol=THETA_ABS,
                               err_msg=what)


fit_cases = st.tuples(st.sampled_from(sorted(FIT_FORMULAS)), st.integers(0, 2**16),
                      st.booleans())


@hsettings(8, fits=True)
@given(case=fit_cases, perm_seed=st.integers(0, 2**32 - 1), keep_index=st.booleans())
def test_fit_invariant_to_row_order(case, perm_seed, keep_index):
    df, ref = base_fit(*case)
    shuffled = df.iloc[np.random.default_rng(perm_seed).permutation(len(df))]
    if not keep_index:
        shuffled = shuffled.reset_index(drop=True)
    got = fit(ref.formula, shuffled, ref.reml)
    assert_same_fit(got, ref, what=f"{case} rows permuted")
    # conditional modes follow their levels, whatever the row order
    for group, frame in ref.ranef.items():
        pd.testing.assert_frame_equal(got.ranef[group], frame, rtol=1e-6, atol=1e-8)


@hsettings(10, fits=True)
@given(case=fit_cases, styles=st.tuples(*[st.sampled_from(RELABEL_STYLES)] * 3),
       seed=st.integers(0, 2**16))
def test_fit_invariant_to_relabelled_levels(case, styles, seed):
    """Grouping levels mapped one-to-one to other text, integers, floats, a mix of integers
    and text, or a pandas Categorical with shuffled and unused categories."""
    df, ref = base_fit(*case)
    relabelled = df.copy()
    for column, style in zip(("a", "b", "bn"), styles, strict=True):
        relabelled[column] = relabel_column(df[column], style, seed)
    got = fit(ref.formula, relabelled, ref.reml)
    assert_same_fit(got, ref, what=f"{case} levels relabelled {styles}")
    assert got.ngroups == ref.ngroups
    # the conditional mode of a level is the one of its old label
    for column, style in zip(("a", "b"), styles[:2], strict=True):
        if column not in ref.ranef:
            continue
        mapping = {str(old): str(new)
                   for old, new in relabel_map(pd.unique(df[column]), style, seed).items()}
        expected = ref.ranef[column].rename(index=mapping).sort_index()
        actual = got.ranef[column].sort_index()
        np.testing.assert_allclose(actual.to_numpy(), expected.to_numpy(), rtol=1e-6,
                                   atol=1e-8, err_msg=f"{case} ranef of {column} ({style})")
        assert list(actual.index) == list(expected.index)


@hsettings(8, fits=True)
@given(case=fit_cases, seed=st.integers(0, 2**32 - 1))
def test_fit_invariant_to_column_order(case, seed):
    df, ref = base_fit(*case)
    columns = list(np.random.default_rng(seed).permutation(df.columns))
    got = fit(ref.formula, df[columns], ref.reml)
    assert_same_fit(got, ref, what=f"{case} columns {columns}")


EXTRA_NAMES = ["x2", "xx", "yy", "a_b", "ab", "b2", "notes", "y_", "cc", "weight", "z"]


@hsettings(10, fits=True)
@given(case=fit_cases, names=st.lists(st.sampled_from(EXTRA_NAMES), min_size=1, max_size=4,
                                      unique=True), seed=st.integers(0, 2**32 - 1))
def test_fit_invariant_to_unused_columns(case, names, seed):
    """Unused columns, with missing values, infinities and text among them, change nothing
    (in particular no rows are dropped for their missing values)."""
    df, ref = base_fit(*case)
    rng = np.random.default_rng(seed)
    n = len(df)
    wider = df.copy()
    for i, name in enumerate(names):
        kind = i % 4 if seed % 2 else (3 - i % 4)
        if kind == 0:
            values = np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n))
        elif kind == 1:
            values = np.where(rng.random(n) < 0.2, np.inf, rng.normal(size=n))
        elif kind == 2:
            values = np.array([None if v < 0.3 else f"t{v:.2f}" for v in rng.random(n)],
                              dtype=object)
        else:
            values = pd.Categorical(rng.choice(["u", "v"], n), categories=["v", "u", "w"])
        wider.insert(int(rng.integers(0, wider.shape[1] + 1)), name, values)
    got = fit(ref.formula, wider, ref.reml)
    assert got.nobs == ref.nobs
    assert_same_fit(got, ref, what=f"{case} extra columns {names}")


@hsettings(6, fits=True)
@given(case=st.tuples(st.sampled_from(["crossed", "uncorrelated"]), st.integers(0, 2**16),
                      st.booleans()),
       name=st.sampled_from(["C", "I", "log"]))
def test_unused_column_named_like_a_formula_function(case, name):
    """An unused column named like a function the formula calls (C, I, log) must not
    shadow the function (it did: FormulaError "'Series' object is not callable")."""
    df, _ = base_fit(*case)
    df["z"] = np.exp(df["x"])
    formula = {"C": "y ~ x + C(c) + (1 | a) + (1 | b)", "I": "y ~ x + I(x ** 2) + (1 | a)",
               "log": "y ~ log(z) + (1 | a)"}[name]
    ref = fit(formula, df, case[2])
    got = fit(formula, df.assign(**{name: 1.0}), case[2])
    assert_same_fit(got, ref, what=f"{formula} with an unused column {name!r}")


@hsettings(8, fits=True)
@given(case=fit_cases, scale=st.sampled_from([1e-6, 1e6]))
def test_response_scale(case, scale):
    """y -> c y: objective + log-Jacobian (REML 2 (n - p) log c, ML 2 n log c), fixef,
    sigma and the variance components times c, theta unchanged."""
    df, ref = base_fit(*case)
    df["y"] = df["y"] * scale
    got = fit(ref.formula, df, ref.reml)
    assert_same_fit(got, ref, scale=scale, what=f"{case} y * {scale:g}")


def _assert_shifted_fit(got, ref, shift: float, what: str, theta_same: bool) -> None:
    assert got.objective == pytest.approx(ref.objective, rel=REL_TOL), what
    se = np.sqrt(np.diag(ref.vcov.to_numpy()))
    slope = list(ref.fixef.index).index("x")
    assert abs(got.fixef["x"] - ref.fixef["x"]) <= FIXEF_SE * se[slope], (
        f"{what}: slope {got.fixef['x']!r} vs {ref.fixef['x']!r} (SE {se[slope]:.3g})")
    # the intercept moves to x = -shift: b0' = b0 - shift * b1, whose SE grows with shift
    se_new = math.sqrt(got.vcov.loc[INTERCEPT, INTERCEPT])
    expected = ref.fixef[INTERCEPT] - shift * ref.fixef["x"]
    assert abs(got.fixef[INTERCEPT] - expected) <= FIXEF_SE * se_new, what
    assert got.sigma == pytest.approx(ref.sigma, rel=REL_FIT), what
    if theta_same:
        np.testing.assert_allclose(got.theta, ref.theta, rtol=0, atol=THETA_ABS, err_msg=what)


# 1e6: the criterion lost ~6 digits (1e-7 to 4e-6 relative at a fixed theta, slopes ~1e-3
# SE off, spurious ConvergenceWarnings) until X was centred in the cross-products.
@pytest.mark.parametrize("shift", [1e2, 1e6])
@hsettings(6, fits=True)
@given(case=st.tuples(st.sampled_from(["crossed", "nested"]), st.integers(0, 2**16),
                      st.booleans()))
@example(case=("crossed", 0, False))
def test_predictor_shift_fixed_only(shift, case):
    """x -> x + shift with an intercept, x only in the fixed part: same objective, slope,
    sigma and theta; the intercept moves by -shift * slope."""
    df, ref = base_fit(*case)
    df["x"] = df["x"] + shift
    caught: list = []
    got = fit(ref.formula, df, ref.reml, caught)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)], (
        [str(w.message) for w in caught])
    _assert_shifted_fit(got, ref, shift, f"{case} x + {shift:g}", theta_same=True)


# Regression: with an uncentred x the fit used to stop at the boundary theta_3 = 0, a
# saddle (the criterion is even in theta_3, so its derivative there is zero), 2 to 35
# deviance units above the interior optimum (3 of 30 seeds at shift 10, 27 at shift 100);
# optimize.boundary_descent now steps off such saddles.


@pytest.mark.parametrize("shift", [
    3.0,
    10.0,
    100.0,
])
@hsettings(6, fits=True)
@given(seed=st.integers(0, 2**16), reml=st.booleans())
@example(seed=20, reml=False)  # cases that failed before (see the comment above)
@example(seed=0, reml=False)
@example(seed=3761, reml=False)  # from the moment start L-BFGS-B stalled on the ridge at x + 100
def test_predictor_shift_correlated_slope(shift, seed, reml):
    """x -> x + shift in y ~ x + (x | a): the same model (theta is re-parametrized), so the
    same objective, slope and sigma."""
    df, ref = base_fit("correlated", seed, reml)
    df["x"] = df["x"] + shift
    caught: list = []
    got = fit(ref.formula, df, ref.reml, caught)
    # With x around 100 the intercept's and the slope's variances differ by 1e4, and the
    # Hessian in theta spans more than lme4's 1e6: lme4's "nearly unidentifiable ...
    # Rescale variables?" advice is right there. Any other warning (singular fit, failed
    # convergence) is a failure.
    others = [str(w.message) for w in caught
              if "nearly unidentifiable" not in str(w.message) or shift < 100]
    assert not others, others
    _assert_shifted_fit(got, ref, shift, f"(x | a) x + {shift:g}", theta_same=False)
    # the covariance of (b0, b1) transforms as b0' = b0 - shift * b1; each entry compared
    # relative to the product of its two sds (as in assert_same_fit)
    A = np.array([[1.0, -shift], [0.0, 1.0]])
    expected = A @ _slope_cov(ref) @ A.T
    sd = np.sqrt(np.diag(expected))
    excess = np.abs(_slope_cov(got) - expected) / np.outer(sd, sd)
    assert np.all(excess <= REL_FIT), f"(x | a) x + {shift:g}: covariance off by {excess}"


def _slope_cov(res) -> np.ndarray:
    vc = res.varcorr[res.varcorr["grp"] == "a"]
    var = vc[vc["var2"].isna()]["vcov"].to_numpy()
    cov = vc[vc["var2"].notna()]["vcov"].to_numpy()[0]
    return np.array([[var[0], cov], [cov, var[1]]])


# --------------------------------------------------------------------------- 3. hard cases


def assert_fit_is_reference_optimum(res, df: pd.DataFrame, X: np.ndarray) -> None:
    """At the reported theta: the objective, fixef and sigma are the dense reference's, and
    the reference criterion does not decrease when any theta element moves by 1e-3
    (staying within the bounds): the reported fit is a local optimum."""
    terms, theta, reml = res.model.re.terms, res.theta, res.reml
    y = df["y"].to_numpy(float)
    ZL = reference_zlambda(df, terms, theta)
    value = reference_criterion(X, y, ZL, reml)
    assert res.objective == pytest.approx(value, rel=REL_TOL)
    beta, sigma = reference_gls(X, y, ZL, reml)
    se = np.sqrt(np.diag(res.vcov.to_numpy()))
    assert np.all(np.abs(res.fixef.to_numpy() - beta) <= FIXEF_SE * se)
    assert res.sigma == pytest.approx(sigma, rel=1e-8)
    lower = res.model.re.lower
    for i in range(len(theta)):
        for step in (-1e-3, 1e-3):
            moved = theta.copy()
            moved[i] = max(moved[i] + step, lower[i])
            other = reference_criterion(X, y, reference_zlambda(df, terms, moved), reml)
            # slack: the optimizer's stopping tolerance on a flat criterion
            assert other >= value - 1e-7 * abs(value), (i, step, other - value)


@st.composite
def singleton_designs(draw):
    """Many levels with one observation next to a few bigger groups; a crossed factor."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_single = draw(st.integers(20, 80))
    n_multi = draw(st.integers(3, 10))
    rng = np.random.default_rng(seed)
    counts = np.concatenate([np.ones(n_single, int), rng.integers(2, 12, n_multi)])
    g = np.repeat(np.arange(counts.size), counts)
    n = g.size
    h = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 1.0, counts.size)[g] + rng.normal(0, 0.7, 5)[h] \
        + rng.normal(0, 1.0, n)
    df = pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g], "h": h})
    return df.sample(frac=1.0, random_state=seed % 2**31).reset_index(drop=True)


@hsettings(6, fits=True)
@given(df=singleton_designs(), reml=st.booleans(),
       formula=st.sampled_from(["y ~ x + (1 | g)", "y ~ x + (1 | g) + (1 | h)"]))
def test_many_singleton_levels(df, reml, formula):
    res = fit(formula, df, reml)
    assert res.ngroups["g"] == df["g"].nunique()
    assert res.nobs == len(df)
    assert_fit_is_reference_optimum(res, df, reference_fixed(df, False))


@hsettings(6, fits=True)
@given(seed=st.integers(0, 2**32 - 1), reml=st.booleans(), share=st.sampled_from([0.9, 0.97]))
def test_highly_unbalanced_crossing(seed, reml, share):
    """One level of ``a`` holds 90% (97%) of the rows, crossed with ``b``."""
    rng = np.random.default_rng(seed)
    n = 300
    big = rng.random(n) < share
    a = np.where(big, 0, rng.integers(1, 12, n))
    b = rng.integers(0, 15, n)
    x = rng.normal(size=n)
    y = 2 + x + rng.normal(0, 1, 12)[a] + rng.normal(0, 1, 15)[b] + rng.normal(0, 1, n)
    df = pd.DataFrame({"y": y, "x": x, "a": a, "b": [f"b{v}" for v in b]})
    res = fit("y ~ x + (1 | a) + (1 | b)", df, reml)
    assert res.ngroups == {"a": len(np.unique(a)), "b": len(np.unique(b))}
    assert_fit_is_reference_optimum(res, df, reference_fixed(df, False))


def _many_levels(nlev: int, per: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    g = rng.permutation(np.repeat(np.arange(nlev), per))
    x = rng.normal(size=g.size)
    sd_g, sigma = 0.8, 1.0
    y = 1 + 0.5 * x + rng.normal(0, sd_g, nlev)[g] + rng.normal(0, sigma, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g}), sd_g, sigma


def _check_many_levels(nlev: int, per: int, rel: float) -> None:
    df, sd_g, sigma = _many_levels(nlev, per)
    res = fit("y ~ x + (1 | g)", df, True)
    assert res.ngroups == {"g": nlev} and res.nobs == nlev * per
    sd = res.varcorr.set_index("grp")["sdcor"]
    # sampling standard errors (groups of 3): sd_g ~0.9/sqrt(nlev), sigma ~1/sqrt(2 (n - nlev)),
    # the slope ~1/sqrt(n); the tolerances below are 5 to 10 of them
    assert sd["g"] == pytest.approx(sd_g, rel=rel)
    assert sd["Residual"] == pytest.approx(sigma, rel=rel / 2)
    assert res.fixef["x"] == pytest.approx(0.5, abs=10 / math.sqrt(nlev * per))
    # a stationary point: central difference of the criterion in theta
    h = 1e-4 * res.theta[0]
    up, down = (res.model.objective(res.theta + s * h) for s in (1.0, -1.0))
    assert abs(up - down) / (2 * h) < 1e-2
    assert min(up, down) >= res.objective - 1e-9 * abs(res.objective)


def test_many_levels_fast():
    _check_many_levels(3_000, 3, rel=0.1)


@pytest.mark.slow
def test_hundred_thousand_levels():
    """(1 | g) with 100,000 levels on 300,000 rows."""
    _check_many_levels(100_000, 3, rel=0.03)


@hsettings(8, fits=True)
@given(nfactors=st.integers(2, 8), nlev=st.integers(3, 300), seed=st.integers(0, 2**16))
@example(nfactors=8, nlev=250, seed=0)
def test_interaction_grouping_labels(nfactors, nlev, seed):
    """(1 | f1:f2:...): one level per combination present, labelled by the row's labels
    joined with ':', whatever the number of factors and levels (the explicit example
    overflowed the int64 key of the combinations: 98 of 250 labels were wrong)."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(nfactors)]
    combos = pd.DataFrame({f: [f"{f}_{v}" for v in rng.permutation(nlev)] for f in names})
    df = pd.concat([combos, combos], ignore_index=True)  # every combination twice
    df["y"] = np.tile(rng.normal(0, 1, nlev), 2) + rng.normal(0, 1, 2 * nlev)
    group = ":".join(names)
    res = fit(f"y ~ 1 + (1 | {group})", df, True)
    assert res.ngroups == {group: nlev}
    assert sorted(res.ranef[group].index) == sorted(combos.agg(":".join, axis=1))


@st.composite
def aliased_cases(draw):
    """(formula, reduced formula, dropped names): a fixed-effects column that is a linear
    combination of earlier ones, numeric or categorical."""
    seed = draw(st.integers(0, 2**16))
    variant = draw(st.sampled_from(["twice", "twice_first", "affine", "categorical"]))
    df = simulate_fit_data(seed, n=120)
    df["x2"] = 2.0 * df["x"]
    df["d"] = 1.0 + 2.0 * df["x"]
    df["c2"] = df["c"].map({"lo": "A", "mid": "B", "hi": "C"})
    random = draw(st.sampled_from(["(1 | a)", "(1 | a) + (1 | b)", "(x | a)"]))
    formula, reduced, dropped = {
        "twice": ("y ~ x + x2", "y ~ x", ("x2",)),
        "twice_first": ("y ~ x2 + x", "y ~ x2", ("x",)),
        "affine": ("y ~ x + c + d", "y ~ x + c", ("d",)),
        # c2 recodes c: reference C <-> hi, so c2's B and C columns are aliased
        "categorical": ("y ~ c + c2", "y ~ c", ("c2[T.B]", "c2[T.C]")),
    }[variant]
    return df, f"{formula} + {random}", f"{reduced} + {random}", dropped, draw(st.booleans())


@hsettings(8, fits=True)
@given(case=aliased_cases())
def test_rank_deficient_fixed_effects(case):
    df, formula, reduced, dropped, reml = case
    with pytest.warns(RankDeficiencyWarning):
        res = lmm_sparse.lmer(formula, df, reml=reml)
    assert res.dropped == dropped
    ref = fit(reduced, df, reml)
    assert not set(dropped) & set(res.fixef.index)
    assert_same_fit(res, ref, what=f"{formula} vs {reduced}")


@hsettings(6, fits=True)
@given(seed=st.integers(0, 2**32 - 1), reml=st.booleans(), reps=st.integers(1, 3))
def test_zero_variance_term_gives_singular_fit(seed, reml, reps):
    """Data with no variation between the levels of b (b fully crossed with a, x the same
    in every level of b, the noise centred within b): the estimate of b's variance is on
    the boundary, the fit is singular, says so, and is the fit without (1 | b)."""
    rng = np.random.default_rng(seed)
    na, nb = 10, 6
    a, b, rep = (v.ravel() for v in np.meshgrid(np.arange(na), np.arange(nb), np.arange(reps),
                                                 indexing="ij"))
    x = rng.normal(size=(na, reps))[a, rep]  # the same set of x values in every level of b
    e = rng.normal(0, 1, a.size)
    e -= pd.Series(e).groupby(b).transform("mean").to_numpy()
    y = 1 + 0.5 * x + rng.normal(0, 1.5, na)[a] + e
    df = pd.DataFrame({"y": y, "x": x, "a": [f"a{v}" for v in a], "b": b})
    with pytest.warns(SingularFitWarning):
        res = lmm_sparse.lmer("y ~ x + (1 | a) + (1 | b)", df, reml=reml)
    assert res.is_singular
    groups = [t.group for t in res.model.re.terms]
    assert res.theta[groups.index("b")] <= 1e-4  # lme4's isSingular tolerance
    assert res.theta[groups.index("a")] > 0.1
    ref = fit("y ~ x + (1 | a)", df, reml)
    assert res.objective == pytest.approx(ref.objective, rel=REL_TOL)
    se = np.sqrt(np.diag(ref.vcov.to_numpy()))
    assert np.all(np.abs(res.fixef.to_numpy() - ref.fixef.to_numpy()) <= FIXEF_SE * se)


# --------------------------------------------------------------------------- 4. caller's frame


def snapshot(df: pd.DataFrame) -> dict:
    return {
        "frame": copy.deepcopy(df),
        "dtypes": df.dtypes.to_dict(),
        "categories": {c: list(df[c].cat.categories) for c in df.columns
                       if isinstance(df[c].dtype, pd.CategoricalDtype)},
        "attrs": copy.deepcopy(df.attrs),
    }


def assert_unchanged(df: pd.DataFrame, before: dict) -> None:
    pd.testing.assert_frame_equal(df, before["frame"], check_exact=True,
                                  check_categorical=True, check_flags=True)
    assert df.index.equals(before["frame"].index)
    assert df.dtypes.to_dict() == before["dtypes"]
    for column, categories in before["categories"].items():
        assert list(df[column].cat.categories) == categories  # order too
    assert df.attrs == before["attrs"]


@hsettings(120)
@given(df=messy_frames(), formula=st.sampled_from(MESSY_FORMULAS), reml=st.booleans(),
       fit_it=st.booleans())
def test_data_frame_never_modified(df, formula, reml, fit_it):
    """Over random messy frames and formulas, whether the call fits or raises."""
    before = snapshot(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fit_it:
                lmm_sparse.lmer(formula, df, reml=reml)
            else:
                lmm_sparse.LinearMixedModel(formula, df, reml=reml)
        except Exception:  # which types may be raised is test_fuzz_formula.py's business
            pass
    assert_unchanged(df, before)


@hsettings(12, fits=True)
@given(case=fit_cases)
def test_data_frame_never_modified_by_fits(case):
    """Realistic fits, their summaries and predictions leave the frame alone too."""
    structure, seed, reml = case
    df = simulate_fit_data(seed, n=80)
    df["a"] = pd.Categorical(df["a"])
    before = snapshot(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lmm_sparse.lmer(FIT_FORMULAS[structure], df, reml=reml)
        res.predict(df)
        res.summary()
    assert_unchanged(df, before)
