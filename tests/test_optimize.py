"""Optimizer plumbing: theta layout, restart after a boundary optimum, convergence checks."""

from __future__ import annotations

import numpy as np
import pytest

import lmm_sparse
from lmm_sparse import optimize
from lmm_sparse.optimize import check_convergence, optimize_theta, restart_point


def _structure(formula: str):
    df = lmm_sparse.datasets.load("sleepstudy")
    df["g2"] = df["Subject"].astype(str).str[-1]
    return lmm_sparse.LinearMixedModel(formula, df).re


def test_template_columns_follow_lme4_theta_order():
    re = _structure("Reaction ~ Days + (Days | Subject) + (1 | g2)")
    # Subject (18 levels) first: theta = [T11, T21, T22], then g2's single element.
    assert [list(c) for c in re.template_columns()] == [[0, 1], [2], [3]]
    assert list(re.lower) == [0, -np.inf, 0, 0]


def test_restart_point_resets_only_collapsed_columns():
    re = _structure("Reaction ~ Days + (Days | Subject) + (1 | g2)")
    theta = np.array([0.0, 0.7, 0.3, 0.5])
    start = restart_point(theta, re.lower, re.template_columns())
    np.testing.assert_array_equal(start, [optimize.RESTART_DIAGONAL, 0.0, 0.3, 0.5])
    interior = np.array([0.9, 0.7, 0.3, 0.5])
    np.testing.assert_array_equal(restart_point(interior, re.lower, re.template_columns()),
                                  interior)


def test_restart_keeps_the_better_optimum(monkeypatch):
    calls = []

    def fake(objective, theta0, lower, method, maxfev, eval_threads, objective_gradient):
        calls.append(np.array(theta0))
        boundary = len(calls) == 1
        theta = np.array([0.0]) if boundary else np.array([0.4])
        return optimize.OptSummary(method, np.array(theta0), theta, 5.0 if boundary else 3.0,
                                   10 * len(calls), 0.5, "ok")

    monkeypatch.setattr(optimize, "optimize_theta", fake)
    lower = np.array([0.0])
    best = optimize.optimize_with_restart(lambda t: 0.0, np.array([1.0]), lower, [np.array([0])])
    assert [c.tolist() for c in calls] == [[1.0], [optimize.RESTART_DIAGONAL]]
    assert best.fval == 3.0 and best.feval == 30 and best.seconds == 1.0
    np.testing.assert_array_equal(best.theta0, [1.0])


def test_no_restart_for_an_interior_optimum(monkeypatch):
    calls = []

    def fake(objective, theta0, lower, method, maxfev, eval_threads, objective_gradient):
        calls.append(theta0)
        return optimize.OptSummary(method, theta0, np.array([0.5]), 1.0, 7, 0.1, "ok")

    monkeypatch.setattr(optimize, "optimize_theta", fake)
    best = optimize.optimize_with_restart(lambda t: 0.0, np.array([1.0]), np.array([0.0]),
                                          [np.array([0])])
    assert len(calls) == 1 and best.feval == 7


@pytest.mark.parametrize("method", optimize.OPTIMIZERS)
def test_every_optimizer_reaches_the_sleepstudy_optimum(method):
    df = lmm_sparse.datasets.load("sleepstudy")
    model = lmm_sparse.LinearMixedModel("Reaction ~ Days + (Days | Subject)", df)
    opt = optimize_theta(model.objective, model.re.theta0, model.re.lower, method)
    # lme4 1.1-31 reports a REML criterion of 1743.62827195995 for this model.
    assert opt.fval <= 1743.62827195995 + 1e-6
    assert opt.feval > 0 and np.all(opt.theta >= model.re.lower)


def test_convergence_checks_flag_a_point_that_is_not_an_optimum():
    df = lmm_sparse.datasets.load("sleepstudy")
    model = lmm_sparse.LinearMixedModel("Reaction ~ Days + (Days | Subject)", df)
    theta = np.array([0.5, 0.0, 0.5])  # far from the optimum (0.967, 0.015, 0.231)
    opt = optimize.OptSummary("none", theta, theta, model.objective(theta), 1, 0.0, "")
    checked = check_convergence(model.objective, opt, model.re.lower)
    assert any("failed to converge" in m for m in checked.messages)
    assert checked.gradient is not None and np.max(np.abs(checked.gradient)) > 1.0


def test_convergence_checks_pass_at_the_optimum():
    df = lmm_sparse.datasets.load("sleepstudy")
    res = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", df)
    assert res.converged and res.optinfo.messages == ()
    assert np.max(np.abs(res.optinfo.gradient)) < optimize.GRAD_TOL


def test_singular_fit_is_flagged_and_warned():
    df = lmm_sparse.datasets.load("Dyestuff2")
    with pytest.warns(lmm_sparse.SingularFitWarning, match="boundary"):
        res = lmm_sparse.lmer("Yield ~ 1 + (1 | Batch)", df)
    assert res.is_singular and res.theta[0] == 0.0
    assert res.varcorr.loc[0, "sdcor"] == 0.0


def test_blas_threads_and_optimizer_names_are_checked():
    data = lmm_sparse.datasets.load("sleepstudy")
    with pytest.raises(ValueError, match="blas_threads must be a positive integer, got 0"):
        lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", data, blas_threads=0)
    with pytest.raises(ValueError, match="optimizer must be one of .* got 'bobyqa'"):
        lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", data, optimizer="bobyqa")


def test_explicit_blas_threads_give_the_same_fit():
    data = lmm_sparse.datasets.load("sleepstudy")
    one = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", data, blas_threads=1)
    two = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", data, blas_threads=2)
    assert one.objective == pytest.approx(two.objective, abs=1e-8)


def test_blas_limit_sets_and_restores_the_thread_count():
    from threadpoolctl import threadpool_info

    from lmm_sparse.threads import blas_limit, default_blas_threads

    def blas_counts():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas"}

    before = blas_counts()
    assert before and default_blas_threads() == max(before.values())
    with blas_limit(1):
        assert set(blas_counts().values()) == {1}
    assert blas_counts() == before


def test_boundary_descent_leaves_a_saddle_and_keeps_a_minimum():
    from lmm_sparse.optimize import boundary_descent

    columns = [np.array([0])]
    zero = np.array([0.0])
    # even in theta with a dip just off zero: zero is a saddle of the bounded problem
    saddle = lambda t: float(t[0] ** 4 - 0.02 * t[0] ** 2)  # noqa: E731
    start = boundary_descent(saddle, zero, saddle(zero), columns)
    assert start is not None and start[0] > 0 and saddle(start) < saddle(zero)
    # a true minimum on the boundary is kept
    bowl = lambda t: float(t[0] ** 2)  # noqa: E731
    assert boundary_descent(bowl, zero, bowl(zero), columns) is None
    # columns off the boundary are not probed
    assert boundary_descent(saddle, np.array([0.5]), saddle(np.array([0.5])), columns) is None
