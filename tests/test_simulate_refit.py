"""simulate() and refit(): lme4's simulate.merMod and refit.merMod for linear mixed models.

Statistical checks use fixed seeds; each tolerance is derived in its test from the
sampling variance of the checked quantity, so a correct implementation fails them with
negligible probability and a wrong covariance (a missing sigma, Lambda instead of
Lambda Lambda', ...) fails them by far.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import SLEEP_FORMULA

import lmm_sparse
from lmm_sparse import datasets
from lmm_sparse.errors import DataError, FormulaError, LmmSparseError
from lmm_sparse.simulate import refit, simulate

PEN_FORMULA = "diameter ~ 1 + (1 | plate) + (1 | sample)"


@pytest.fixture(scope="module")
def pen_fit():
    return lmm_sparse.lmer(PEN_FORMULA, datasets.load("Penicillin"))


def marginal_cov(res) -> np.ndarray:
    """sigma^2 (Z Lambda Lambda' Z' + I): the covariance simulate() must reproduce."""
    model = res.model
    ZL = (model.Z @ model.Lambda(res.theta)).toarray()
    return res.sigma**2 * (ZL @ ZL.T + np.eye(res.nobs))


# --------------------------------------------------------------------------- simulate


def test_simulate_shape_and_reproducible(sleep_fit):
    a = simulate(sleep_fit, nsim=3, seed=11)
    assert a.shape == (sleep_fit.nobs, 3)
    np.testing.assert_array_equal(a, simulate(sleep_fit, nsim=3, seed=11))
    assert not np.allclose(a, simulate(sleep_fit, nsim=3, seed=12))
    # simulation j depends on the stream only: the first of three is the one of one
    np.testing.assert_array_equal(a[:, :1], simulate(sleep_fit, nsim=1, seed=11))


def test_simulate_mean_and_covariance(sleep_fit):
    """Over N draws, the sample covariance V_hat estimates V = sigma^2 (Z L L' Z' + I).

    For Gaussian draws E ||V_hat - V||_F^2 = sum_rs (V_rs^2 + V_rr V_ss) / N (with the
    known mean); that sum of 180^2 terms is concentrated, so 1.3 x its root is a safe
    bound. Omitting the random effects or their sigma factor gives an error several
    times larger. The grand mean's z-score uses Var = 1'V1 / (N n^2).
    """
    N = 4000
    Y = simulate(sleep_fit, nsim=N, seed=2024)
    mean = sleep_fit.model.X @ sleep_fit.fixef.to_numpy()
    D = Y - mean[:, None]
    V = marginal_cov(sleep_fit)
    n = len(mean)
    z = D.mean() / math.sqrt(V.sum() / (N * n**2))
    assert abs(z) < 4.5
    V_hat = D @ D.T / N
    expected = math.sqrt((np.sum(V**2) + np.sum(np.outer(np.diag(V), np.diag(V)))) / N)
    error = np.linalg.norm(V_hat - V)
    assert error < 1.3 * expected, (error, expected)
    # the check has power: the residual covariance alone is far off
    assert np.linalg.norm(V_hat - sleep_fit.sigma**2 * np.eye(n)) > 5 * expected


def test_simulate_crossed_covariance(pen_fit):
    """Two crossed terms: same Frobenius check (see test_simulate_mean_and_covariance)."""
    N = 3000
    D = simulate(pen_fit, nsim=N, seed=7) - pen_fit.fixef.iloc[0]
    V = marginal_cov(pen_fit)
    expected = math.sqrt((np.sum(V**2) + np.sum(np.outer(np.diag(V), np.diag(V)))) / N)
    assert np.linalg.norm(D @ D.T / N - V) < 1.3 * expected


def test_simulate_use_u_conditions_on_modes(sleep_fit):
    """use_u=True (re_form=None): mean X beta + Z b_hat (the fitted values), covariance
    sigma^2 I; the average of N draws is within 4.5 standard errors sigma / sqrt(N)."""
    N = 2000
    Y = simulate(sleep_fit, nsim=N, seed=3, use_u=True)
    se = sleep_fit.sigma / math.sqrt(N)
    assert np.max(np.abs(Y.mean(axis=1) - sleep_fit.fitted)) < 4.5 * se
    np.testing.assert_array_equal(Y, simulate(sleep_fit, nsim=N, seed=3, re_form=None))
    resid_sd = np.std(Y - sleep_fit.fitted[:, None])
    assert abs(resid_sd / sleep_fit.sigma - 1) < 0.01  # 360,000 draws: sd error ~0.1%


def test_simulate_re_form_term_subset(pen_fit):
    """Conditioning on one of two crossed terms: its modes enter the mean, the other
    term's variance remains. Checked on the per-row variance sigma^2 (1 + T_sample^2)."""
    N = 3000
    model = pen_fit.model
    Y = simulate(pen_fit, nsim=N, seed=5, re_form="~(1 | plate)")
    i_plate = next(i for i, t in enumerate(model.re.terms) if t.group == "plate")
    i_sample = 1 - i_plate
    term = model.re.terms[i_plate]
    mean = pen_fit.fixef.iloc[0] + pen_fit._b[i_plate][term.codes, 0]
    T_sample = model.re.template(pen_fit.theta, i_sample)[0, 0]
    sd = pen_fit.sigma * math.sqrt(1 + T_sample**2)
    assert np.max(np.abs(Y.mean(axis=1) - mean)) < 4.5 * sd / math.sqrt(N)
    with pytest.raises(LmmSparseError, match="not both"):
        simulate(pen_fit, use_u=True, re_form="~0")


def test_simulate_partial_term_is_an_error(sleep_fit):
    with pytest.raises(FormulaError, match="whole terms"):
        simulate(sleep_fit, re_form="~(1 | Subject)")


@pytest.mark.parametrize("nsim", [0, -1, 1.5, True, "3"])
def test_simulate_bad_nsim(sleep_fit, nsim):
    with pytest.raises(LmmSparseError, match="nsim"):
        simulate(sleep_fit, nsim=nsim)


# --------------------------------------------------------------------------- refit


def test_refit_original_response_gives_original_fit(sleep_fit):
    again = refit(sleep_fit, sleep_fit.model.y)
    assert again.objective == pytest.approx(sleep_fit.objective, abs=1e-8)
    np.testing.assert_allclose(again.theta, sleep_fit.theta, atol=1e-5)
    np.testing.assert_allclose(again.fixef, sleep_fit.fixef, rtol=1e-8)
    assert again.sigma == pytest.approx(sleep_fit.sigma, rel=1e-7)
    np.testing.assert_allclose(again.fitted, sleep_fit.fitted, rtol=1e-8)


def test_refit_matches_a_fresh_fit(sleep, sleep_fit):
    """A refit to a simulated y equals lmer() on a frame holding that y."""
    y = simulate(sleep_fit, nsim=1, seed=99)[:, 0]
    ours = refit(sleep_fit, y)
    frame = sleep.copy()
    frame["Reaction"] = y
    fresh = lmm_sparse.lmer(SLEEP_FORMULA, frame)
    assert ours.objective == pytest.approx(fresh.objective, abs=1e-6)
    np.testing.assert_allclose(ours.fixef, fresh.fixef, rtol=1e-6)
    np.testing.assert_allclose(ours.varcorr["sdcor"], fresh.varcorr["sdcor"], rtol=1e-4,
                               atol=1e-6)
    assert ours.optinfo.theta0 == pytest.approx(sleep_fit.theta)  # lme4: starts at theta


def test_refit_shares_structure_and_leaves_the_original_intact(sleep_fit):
    """with_response reuses the kernel (no new symbolic analysis) and the original fit's
    factor-dependent methods still answer for its own theta afterwards."""
    model = sleep_fit.model
    before = sleep_fit.ranef_condvar()["Subject"].copy()
    y = simulate(sleep_fit, nsim=1, seed=4)[:, 0]
    other = model.with_response(y)
    assert other.workspace.kernel is model.workspace.kernel
    assert other.re is model.re and other.cp.blocks is model.cp.blocks
    refit(sleep_fit, y)  # refactors the shared kernel at another theta
    np.testing.assert_allclose(sleep_fit.ranef_condvar()["Subject"], before, rtol=1e-12)
    np.testing.assert_array_equal(model.y, sleep_fit.fitted + sleep_fit.residuals)


def test_refit_cholmod_kernel_shares_analysis(sleep):
    res = lmm_sparse.lmer(SLEEP_FORMULA, sleep, kernel="cholmod")
    y = simulate(res, nsim=1, seed=8)[:, 0]
    other = res.model.with_response(y)
    assert other.workspace.kernel is res.model.workspace.kernel
    ours = refit(res, y, calc_derivs=False)
    frame = sleep.copy()
    frame["Reaction"] = y
    fresh = lmm_sparse.lmer(SLEEP_FORMULA, frame, kernel="cholmod", calc_derivs=False)
    assert ours.objective == pytest.approx(fresh.objective, abs=1e-6)


def test_refit_does_not_modify_or_keep_the_callers_array(sleep_fit):
    y = simulate(sleep_fit, nsim=1, seed=21)[:, 0]
    kept = y.copy()
    model = sleep_fit.model.with_response(y)
    assert np.array_equal(y, kept)
    y[:] = 0.0  # the caller's later changes do not reach the model
    np.testing.assert_array_equal(model.y, kept)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones(5), "has 5 values; the model has 180"),
        (np.r_[np.nan, np.ones(179)], "missing or infinite"),
        (np.r_[np.inf, np.ones(179)], "missing or infinite"),
        (np.array(["a"] * 180), "numeric"),
        (np.ones((180, 2)), "one value per observation"),
    ],
)
def test_refit_rejects_bad_responses(sleep_fit, bad, message):
    with pytest.raises(DataError, match=message):
        refit(sleep_fit, bad)


def test_refit_accepts_series(sleep_fit):
    y = pd.Series(sleep_fit.model.y * 1.5)
    res = refit(sleep_fit, y, calc_derivs=False)
    assert res.fixef.iloc[0] == pytest.approx(1.5 * sleep_fit.fixef.iloc[0], rel=1e-5)
