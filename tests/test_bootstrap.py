"""Parametric bootstrap (lme4's bootMer) and its intervals (confint(method = "boot")).

The dense evaluator behind the fast refits is checked against the sparse kernels here too.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import SLEEP_FORMULA

import lmm_sparse
from lmm_sparse import datasets
from lmm_sparse.bootstrap import BootstrapResult, boot_confint, bootstrap, lme4_parameters
from lmm_sparse.errors import LmmSparseError
from lmm_sparse.pls import DensePLS
from lmm_sparse.simulate import refit, simulate


@pytest.fixture(scope="module")
def sleep_boot(sleep_fit):
    return bootstrap(sleep_fit, 200, seed=42, progress=False)


# --------------------------------------------------------------------------- parameters


def test_parameter_names_and_values_are_lme4s(sleep_fit):
    """Names of lme4's confint(oldNames = FALSE); values from the fit's VarCorr."""
    t0 = lme4_parameters(sleep_fit)
    assert list(t0.index) == [
        "sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject",
        "sigma", "(Intercept)", "Days",
    ]
    vc = sleep_fit.varcorr
    np.testing.assert_allclose(t0.iloc[:4], vc["sdcor"].to_numpy()[[0, 2, 1, 3]], rtol=1e-12)
    np.testing.assert_allclose(t0.iloc[4:], sleep_fit.fixef, rtol=1e-12)


def test_parameter_names_agree_with_profile(sleep_fit):
    """The bootstrap's default statistic starts with the profile's variance parameters."""
    from lmm_sparse.parameters import varpar_estimates

    theirs = varpar_estimates(sleep_fit)
    ours = lme4_parameters(sleep_fit).iloc[: len(theirs)]
    assert list(ours.index) == list(theirs.index)
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-12)


# --------------------------------------------------------------------------- replicates


def test_bootstrap_result_layout(sleep_fit, sleep_boot):
    assert isinstance(sleep_boot, BootstrapResult)
    assert sleep_boot.replicates.shape == (200, 6)
    assert list(sleep_boot.replicates.columns) == list(lme4_parameters(sleep_fit).index)
    pd.testing.assert_series_equal(sleep_boot.t0, lme4_parameters(sleep_fit), check_names=False)
    assert sleep_boot.nsim == 200 and sleep_boot.seed == 42
    assert sleep_boot.n_failed == 0 and sleep_boot.failures == ()
    assert np.isfinite(sleep_boot.replicates.to_numpy()).all()


def test_replicate_means_near_estimates(sleep_fit, sleep_boot):
    """The fixed effects are unbiased in the parametric bootstrap: their replicate means
    lie within 4 standard errors of the mean (sd / sqrt(nsim)) of the estimates; sigma
    too, with 1% allowed for the small bias of an sd estimate."""
    reps = sleep_boot.replicates
    nsim = len(reps)
    for name in ("(Intercept)", "Days", "sigma"):
        est = lme4_parameters(sleep_fit)[name]
        sd = reps[name].std()
        slack = 0.01 * est if name == "sigma" else 0.0
        assert abs(reps[name].mean() - est) < 4 * sd / math.sqrt(nsim) + slack, name
    # and their spread is the fit's standard error (sd of an sd estimate: ~5% at 200)
    se = sleep_fit.coef_table()["std_error"]
    np.testing.assert_allclose(reps[["(Intercept)", "Days"]].std(), se, rtol=0.2)


def test_replicate_is_a_refit_of_its_simulated_response(sleep_fit, sleep_boot):
    """Replicate i = the statistic of refit(simulate(seed = child i)): child i of
    SeedSequence(seed).spawn(nsim)."""
    child = np.random.SeedSequence(42).spawn(200)[7]
    y = simulate(sleep_fit, 1, seed=child)[:, 0]
    again = lme4_parameters(refit(sleep_fit, y, calc_derivs=False))
    np.testing.assert_allclose(sleep_boot.replicates.iloc[7], again, rtol=1e-5, atol=1e-6)


def test_reproducible_and_seed_recorded(sleep_fit, sleep_boot):
    again = bootstrap(sleep_fit, 20, seed=42, progress=False)
    pd.testing.assert_frame_equal(again.replicates, sleep_boot.replicates.iloc[:20])
    other = bootstrap(sleep_fit, 20, seed=43, progress=False)
    assert not np.allclose(other.replicates, again.replicates)
    drawn = bootstrap(sleep_fit, 5, progress=False)  # seed None: drawn, then recorded
    pd.testing.assert_frame_equal(
        bootstrap(sleep_fit, 5, seed=drawn.seed, progress=False).replicates, drawn.replicates
    )


def test_serial_and_parallel_replicates_are_identical(sleep_fit):
    serial = bootstrap(sleep_fit, 12, seed=5, progress=False)
    parallel = bootstrap(sleep_fit, 12, seed=5, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(serial.replicates, parallel.replicates, check_exact=True)
    assert serial.messages == parallel.messages


def _named_statistic(res):
    return pd.Series({"slope": res.fixef["Days"], "sigma2": res.sigma**2})


def test_custom_statistic_names_and_values(sleep_fit):
    boot = bootstrap(sleep_fit, 8, seed=1, func=_named_statistic, progress=False)
    assert list(boot.replicates.columns) == ["slope", "sigma2"]
    assert boot.t0["sigma2"] == pytest.approx(sleep_fit.sigma**2)
    default = bootstrap(sleep_fit, 8, seed=1, progress=False)
    np.testing.assert_allclose(boot.replicates["slope"], default.replicates["Days"], rtol=1e-9)
    np.testing.assert_allclose(boot.replicates["sigma2"], default.replicates["sigma"] ** 2,
                               rtol=1e-9)
    unnamed = bootstrap(sleep_fit, 3, seed=1, func=lambda r: r.fixef.to_numpy(),
                        progress=False)
    assert list(unnamed.replicates.columns) == ["t1", "t2"]


def test_failures_and_warnings_are_counted_not_raised(sleep_fit):
    """A refit whose statistic raises gives a NaN row and a failure message; warnings of
    the refits are counted by message (lme4's bootMer keeps going too)."""
    cutoff = sleep_fit.sigma

    def fragile(res):
        if res.sigma > cutoff * 1.0000001:
            raise ValueError("sigma too large")
        warnings.warn("a note from the statistic", UserWarning, stacklevel=2)
        return [res.sigma]

    with pytest.warns(UserWarning, match="a note"):  # t0 = fragile(sleep_fit) warns
        boot = bootstrap(sleep_fit, 30, seed=3, func=fragile, progress=False)
    failed = boot.replicates["t1"].isna()
    assert 0 < boot.n_failed == failed.sum() < 30
    assert all("sigma too large" in f for f in boot.failures)
    assert boot.messages.get("a note from the statistic") == 30 - boot.n_failed
    assert (boot.replicates.loc[~failed, "t1"] <= cutoff * 1.0000001).all()


def test_singular_refits_are_counted(sleep_fit, sleep_boot):
    """Some simulated sleepstudy responses give singular fits (lme4 reports about 2%);
    each counts once, under lme4's message."""
    sds = sleep_boot.replicates[["sd_(Intercept)|Subject", "sd_Days|Subject"]]
    singular = int((sds < 1e-4 * sleep_boot.replicates[["sigma"]].to_numpy()).any(axis=1).sum())
    assert sleep_boot.messages.get("boundary (singular) fit: see is_singular", 0) >= singular


@pytest.mark.parametrize(
    "kwargs, message",
    [({"nsim": 0}, "nsim"), ({"nsim": 2.5}, "nsim"), ({"nsim": 2, "seed": -1}, "seed"),
     ({"nsim": 2, "seed": 1.5}, "seed"), ({"nsim": 2, "func": 3}, "func")],
)
def test_bootstrap_bad_arguments(sleep_fit, kwargs, message):
    with pytest.raises(LmmSparseError, match=message):
        bootstrap(sleep_fit, progress=False, **kwargs)


def test_bootstrap_does_not_modify_the_data():
    df = datasets.load("sleepstudy")
    kept = df.copy()
    res = lmm_sparse.lmer(SLEEP_FORMULA, df)
    bootstrap(res, 3, seed=1, progress=False)
    simulate(res, 2, seed=1)
    pd.testing.assert_frame_equal(df, kept)


def test_bootstrap_on_crossed_ml_fit():
    """Two crossed terms, ML: every replicate refits, the intercept's mean is unbiased."""
    res = lmm_sparse.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)",
                          datasets.load("Penicillin"), reml=False)
    boot = bootstrap(res, 40, seed=9, progress=False)
    assert boot.n_failed == 0
    reps = boot.replicates["(Intercept)"]
    assert abs(reps.mean() - res.fixef.iloc[0]) < 4 * reps.std() / math.sqrt(40)
    assert set(boot.replicates.columns) == {
        "sd_(Intercept)|sample", "sd_(Intercept)|plate", "sigma", "(Intercept)"}


def test_bootstrap_large_q_uses_the_sparse_kernel():
    """q above DensePLS's limit: refits go through the workspace (dietox: 72 pigs x 2)."""
    df = datasets.load("dietox")
    res = lmm_sparse.lmer("Weight ~ Time + (Time | Pig)", df)
    assert res.model.dense_pls() is None
    boot = bootstrap(res, 10, seed=2, progress=False)
    assert boot.n_failed == 0
    y = simulate(res, 1, seed=np.random.SeedSequence(2).spawn(10)[3])[:, 0]
    again = lme4_parameters(refit(res, y, calc_derivs=False))
    np.testing.assert_allclose(boot.replicates.iloc[3], again, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- intervals


def _boot_of(values: np.ndarray, t0: float) -> BootstrapResult:
    return BootstrapResult(
        replicates=pd.DataFrame({"x": values}), t0=pd.Series({"x": t0}), nsim=len(values),
        seed=0, n_failed=int(np.isnan(values).sum()), failures=(), messages={}, seconds=0.0,
    )


# R 4.2.2, boot 1.3-28: t <- sin(1:999) * 3 + (1:999) / 500; t[c(5, 17)] <- NA; a "boot"
# object with t0 = 0.5; boot.ci(b, conf, type)[[type]][4:5] (norm: [2:3]), 12 decimals.
R_BOOT_CI = {
    ("perc", 0.95): (-2.549575049016, 4.563213909106),
    ("perc", 0.9): (-2.309975065863, 4.309490976425),
    ("basic", 0.95): (-3.563213909106, 3.549575049016),
    ("basic", 0.9): (-3.309490976425, 3.309975065863),
    ("norm", 0.95): (-4.304563759205, 4.289161080007),
    ("norm", 0.9): (-3.613741956237, 3.598339277039),
}


@pytest.mark.parametrize("kind, level", sorted(R_BOOT_CI))
def test_boot_confint_matches_r_boot_ci(kind, level):
    t = np.sin(np.arange(1, 1000)) * 3 + np.arange(1, 1000) / 500
    t[[4, 16]] = np.nan
    ci = boot_confint(_boot_of(t, 0.5), level=level, type=kind)
    lo, hi = (1 - level) / 2, (1 + level) / 2
    assert list(ci.columns) == [f"{100 * lo:.3g} %", f"{100 * hi:.3g} %"]
    np.testing.assert_allclose(ci.loc["x"].to_numpy(), R_BOOT_CI[kind, level], atol=1e-11)


def test_boot_confint_exact_order_statistic_and_extremes():
    """(R + 1) alpha an integer: that order statistic; outside [1, R]: the extremes.
    ((1 - 0.95) / 2 is 0.025 + 2e-17 in binary, as in R, so 40 alpha lands a hair above 1
    and interpolates: approx.)"""
    t = np.arange(1.0, 40.0)  # R = 39: (R + 1) 0.025 = 1 and (R + 1) 0.975 = 39
    ci = boot_confint(_boot_of(t, 20.0))
    assert tuple(ci.loc["x"]) == pytest.approx((1.0, 39.0), abs=1e-12)
    ci = boot_confint(_boot_of(np.arange(1.0, 10.0), 5.0))  # R = 9: extremes
    assert tuple(ci.loc["x"]) == (1.0, 9.0)
    ci = boot_confint(_boot_of(np.arange(1.0, 20.0), 5.0), level=0.9)  # 20 x 0.05 = 1
    assert tuple(ci.loc["x"]) == (1.0, 19.0)


def test_boot_confint_covers_the_estimates(sleep_fit, sleep_boot):
    ci = sleep_boot.confint()
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    t0 = lme4_parameters(sleep_fit)
    assert ((ci["2.5 %"] < t0) & (t0 < ci["97.5 %"])).all()


@pytest.mark.parametrize("kwargs", [{"level": 1.5}, {"level": 0}, {"type": "bca"}])
def test_boot_confint_bad_arguments(sleep_boot, kwargs):
    with pytest.raises(LmmSparseError):
        boot_confint(sleep_boot, **kwargs)


# --------------------------------------------------------------------------- dense PLS


@pytest.mark.parametrize(
    "name, formula",
    [
        ("sleepstudy", SLEEP_FORMULA),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
        ("Machines", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)"),
    ],
)
@pytest.mark.parametrize("reml", [True, False])
def test_dense_pls_equals_the_sparse_kernel(name, formula, reml):
    """Criterion, gradient and PLS solution agree with the workspace to rounding, at the
    optimum and away from it."""
    res = lmm_sparse.lmer(formula, datasets.load(name), reml=reml)
    for theta in (res.theta, 1.3 * res.theta + 0.05):
        _assert_dense_equals_workspace(res.model, theta, reml)


def _assert_dense_equals_workspace(model, theta: np.ndarray, reml: bool) -> None:
    """DensePLS's criterion, gradient and PLS solution at theta are the workspace's."""
    dense = DensePLS(model.re, model.cp)
    assert dense.factor(theta)
    value, grad = model.workspace.objective_and_gradient(theta, reml)
    d_value, d_grad = dense.objective_and_gradient(theta, reml)
    assert d_value == pytest.approx(value, abs=1e-9)
    np.testing.assert_allclose(d_grad, grad, atol=1e-8 * max(1.0, np.abs(grad).max()))
    ev, d_ev = model.workspace.evaluate(theta), dense.evaluate(theta)
    assert d_ev.ldL2 == pytest.approx(ev.ldL2, abs=1e-10)
    assert d_ev.ldRX2 == pytest.approx(ev.ldRX2, abs=1e-10)
    np.testing.assert_allclose(d_ev.RX, ev.RX, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(d_ev.beta, ev.beta, rtol=1e-10)
    assert d_ev.pwrss == pytest.approx(ev.pwrss, rel=1e-12)
    assert dense.objective(theta, reml) == pytest.approx(value, abs=1e-9)


def _crossed_frame(seed: int = 11) -> pd.DataFrame:
    """A crossed design with a slope, some cells missing: 12 x 7 levels."""
    rng = np.random.default_rng(seed)
    g1, g2 = rng.integers(0, 12, 500), rng.integers(0, 7, 500)
    x = rng.normal(size=500)
    y = (1.0 + 0.5 * x + rng.normal(size=12)[g1] + 0.7 * rng.normal(size=12)[g1] * x
         + rng.normal(size=7)[g2] + 0.5 * rng.normal(size=7)[g2] * x + rng.normal(size=500))
    return pd.DataFrame({"y": y, "x": x, "g1": [f"a{v}" for v in g1],
                         "g2": [f"b{v}" for v in g2]})


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (x | g1) + (1 | g2)",  # vector-valued leading term, scalar term after it
        "y ~ x + (1 | g1) + (x | g2)",  # scalar leading term, vector-valued term after it
        "y ~ x + (x || g1) + (x | g2)",  # two terms on the leading factor
        "y ~ 0 + x + (x | g1)",  # one term: no Schur complement of Z, no intercept
    ],
)
@pytest.mark.parametrize("reml", [True, False])
def test_dense_pls_block_factor_equals_the_sparse_kernel(formula, reml):
    """The leading-term block factorization of DensePLS (per-level factors, then the
    trailing Schur complement) gives the workspace's criterion, gradient and solution,
    also with variances on the boundary (zero template columns) and away from the
    optimum."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lmm_sparse.lmer(formula, _crossed_frame(), reml=reml)
    boundary = res.theta.copy()
    diagonal = res.model.re.lower == 0
    boundary[diagonal] = [0.0 if j % 2 == 0 else 0.4 for j in range(int(diagonal.sum()))]
    for theta in (res.theta, 1.3 * res.theta + 0.05, boundary):
        _assert_dense_equals_workspace(res.model, theta, reml)


def test_interval_columns_are_labelled_as_r(sleep_boot):
    # R labels a 0.999 interval "0.05 %" and "99.95 %"; 3 significant digits alone
    # would print the upper one as "100 %"
    assert list(boot_confint(sleep_boot, level=0.999).columns) == ["0.05 %", "99.95 %"]
    assert list(boot_confint(sleep_boot, level=0.9).columns) == ["5 %", "95 %"]
