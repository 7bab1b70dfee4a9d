"""Start values for theta (lmm_sparse.start): inside the bounds, reproducible, useful."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import lmm_sparse
from benchmarks.simulate import SimDesign, simulate
from lmm_sparse.start import RELATIVE_VARIANCE_RANGE, _cholesky_theta, moment_start


def _model(name: str, formula: str, reml: bool = True) -> lmm_sparse.LinearMixedModel:
    return lmm_sparse.LinearMixedModel(formula, lmm_sparse.datasets.load(name), reml=reml)


CASES = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("dietox", "Weight ~ Time + (Time | Pig)"),
]


@pytest.fixture(scope="module")
def crossed() -> lmm_sparse.LinearMixedModel:
    """A subjects x items design with correlated slopes by both (benchmarks.simulate)."""
    df = simulate(SimDesign(60, 40, 0.5), seed=7)
    return lmm_sparse.LinearMixedModel(
        "y ~ 1 + a + b + (1 + a | subj) + (1 + a | item)", df, reml=False
    )


@pytest.mark.parametrize(("name", "formula"), CASES)
def test_start_is_inside_the_bounds_with_positive_definite_templates(name, formula):
    model = _model(name, formula)
    theta = moment_start(model.re, model.cp)
    assert theta.shape == model.re.theta0.shape and np.all(np.isfinite(theta))
    assert np.all(theta >= model.re.lower)
    for T in model.re.templates(theta):
        w = np.linalg.eigvalsh(T @ T.T)
        assert RELATIVE_VARIANCE_RANGE[0] * (1 - 1e-2) <= w.min()
        assert w.max() <= RELATIVE_VARIANCE_RANGE[1] * (1 + 1e-2)


@pytest.mark.parametrize(("name", "formula"), CASES)
def test_start_is_closer_to_the_optimum_than_lme4s(name, formula):
    model = _model(name, formula)
    theta = moment_start(model.re, model.cp)
    assert model.objective(theta) < model.objective(model.re.theta0)


def test_start_is_closer_on_a_crossed_design(crossed):
    theta = moment_start(crossed.re, crossed.cp)
    assert crossed.objective(theta) < crossed.objective(crossed.re.theta0)
    # and nearer the fitted theta, entry by entry on the diagonals (the relative sds)
    fitted = crossed.fit().theta
    diag = np.concatenate([c[:1] for c in crossed.re.template_columns()])
    lme4 = crossed.re.theta0
    assert np.all(np.abs(theta[diag] - fitted[diag]) < np.abs(lme4[diag] - fitted[diag]))


def test_start_has_three_significant_digits_and_ignores_row_order():
    df = lmm_sparse.datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    a = lmm_sparse.LinearMixedModel(formula, df)
    b = lmm_sparse.LinearMixedModel(formula, df.sample(frac=1.0, random_state=3))
    ta, tb = moment_start(a.re, a.cp), moment_start(b.re, b.cp)
    np.testing.assert_array_equal(ta, tb)
    for x in ta[ta != 0]:
        assert float(f"{x:.3g}") == x


def test_a_term_without_variance_starts_at_the_floor():
    # the estimated relative covariance is negative definite: eigenvalues clipped below
    theta = _cholesky_theta(-np.eye(2))
    np.testing.assert_allclose(theta, [0.1, 0.0, 0.1])
    big = _cholesky_theta(np.diag([1e9, 4.0]))
    np.testing.assert_allclose(big, [100.0, 0.0, 2.0])


def test_the_default_fit_starts_there_and_reaches_lme4s_optimum(crossed):
    res = crossed.fit()
    np.testing.assert_array_equal(res.optinfo.theta0, moment_start(crossed.re, crossed.cp))
    ref = crossed.fit(start=crossed.re.theta0)
    assert res.objective <= ref.objective + 1e-6
    assert res.optinfo.feval < ref.optinfo.feval


def test_a_failed_gradient_check_from_the_moment_start_tries_lme4s_start(monkeypatch):
    # Force the check to fail once: the fit is redone from lme4's start, and the
    # evaluations of both runs are counted.
    from lmm_sparse import model as model_module

    calls = []

    def failing_once(opt):
        calls.append(opt.theta0.copy())
        return len(calls) == 1

    monkeypatch.setattr(model_module, "gradient_check_failed", failing_once)
    model = _model("sleepstudy", "Reaction ~ Days + (Days | Subject)")
    single = model.fit(start=moment_start(model.re, model.cp))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = model.fit()
    assert len(calls) == 1  # an explicit start is never second-guessed, the default is
    np.testing.assert_array_equal(calls[0], moment_start(model.re, model.cp))
    assert res.optinfo.feval > single.optinfo.feval
    assert res.objective == pytest.approx(single.objective, abs=1e-6)
