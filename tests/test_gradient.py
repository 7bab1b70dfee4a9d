"""The exact gradient of the profiled criterion and the selected inverse behind it.

The gradient is checked against central differences of the criterion (which the dense
tests tie to the Gaussian likelihood), the selected inverse against a dense inverse, and
the Z'Z operator against the sparse product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_frame

from lmm_sparse import LinearMixedModel
from lmm_sparse.crossprod import ZtZOperator
from lmm_sparse.gradient import logdet_sums

FORMULAS = [
    "y ~ x + (1 | a) + (1 | b)",
    "y ~ x + (1 | a/b)",
    "y ~ x * f + (1 + x | a) + (1 + f | b) + (x || c)",
    "y ~ 1 + (1 + x | a) + (0 + x | b)",
    "y ~ x + (1 + x | a)",
    "y ~ x + z + (1 + x + z | a) + (x | b) + (1 | c)",
]


def _data(n: int, seed: int) -> pd.DataFrame:
    return synthetic_frame(n, seed, a_levels=25, b_levels=8, slopes=True)


def _theta(model: LinearMixedModel, rng: np.random.Generator, zero: bool) -> np.ndarray:
    diagonal = model.re.lower == 0
    theta = np.where(diagonal, rng.uniform(0.3, 1.5, diagonal.size),
                     rng.normal(0, 0.5, diagonal.size))
    if zero:  # a diagonal element on its bound: the gradient must still be exact there
        theta[np.flatnonzero(diagonal)[-1]] = 0.0
    return theta


def _central_differences(model: LinearMixedModel, theta: np.ndarray, h: float = 1e-6):
    steps = np.eye(theta.size) * h
    return np.array(
        [(model.objective(theta + e) - model.objective(theta - e)) / (2 * h) for e in steps]
    )


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.parametrize("path", ["direct", "dense", "pairs", "chunks"])
def test_gradient_matches_central_differences(formula, reml, path):
    model = LinearMixedModel(formula, _data(500, 3), reml=reml, kernel="schur")
    kernel = model.workspace.kernel
    if path == "direct":  # the dense update's sums without P21 (SchurKernel.logdet_sums)
        kernel._dense_update = True
    else:  # every way of forming P21 = -P22 H on its pattern, for the selected inverse
        kernel._p21_path = path
        kernel.logdet_sums = lambda templates: None
    rng = np.random.default_rng(4)
    for zero in (False, True):
        theta = _theta(model, rng, zero)
        value, grad = model.objective_and_gradient(theta)
        assert value == pytest.approx(model.objective(theta), rel=1e-12)
        fd = _central_differences(model, theta)
        scale = max(1.0, float(np.max(np.abs(fd))))
        np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-6 * scale)


def test_gradient_vanishes_at_the_optimum():
    model = LinearMixedModel("y ~ x + (1 + x | a) + (1 | b)", _data(600, 5), reml=True)
    res = model.fit()
    assert res.optinfo.method == "L-BFGS-B (exact gradient)"
    _, grad = model.objective_and_gradient(res.theta)
    interior = res.theta > model.re.lower + 1e-4
    assert np.max(np.abs(grad[interior])) < 1e-2
    assert res.optinfo.gradient is not None and res.optinfo.hessian is not None
    np.testing.assert_allclose(res.optinfo.hessian, res.optinfo.hessian.T)


@pytest.mark.parametrize("formula", FORMULAS)
def test_selected_inverse_matches_dense_inverse(formula):
    model = LinearMixedModel(formula, _data(300, 7), kernel="schur")
    theta = _theta(model, np.random.default_rng(8), zero=True)
    Lam, Z = model.Lambda(theta).toarray(), model.Z.toarray()
    inverse = np.linalg.inv(Lam.T @ Z.T @ Z @ Lam + np.eye(model.re.q))
    kernel = model.workspace.kernel
    kernel.factor(model.re.templates(theta))
    for block, P in zip(model.cp.blocks, kernel.inverse_blocks(), strict=True):
        ki, kj = model.re.terms[block.i].k, model.re.terms[block.j].k
        rows = model.re.offsets[block.i] + block.rows[:, None] * ki + np.arange(ki)
        cols = model.re.offsets[block.j] + block.cols[:, None] * kj + np.arange(kj)
        expected = inverse[rows[:, :, None], cols[:, None, :]]
        np.testing.assert_allclose(P, expected, atol=1e-12)


@pytest.mark.parametrize("formula", FORMULAS)
def test_ztz_operator_matches_sparse_product(formula):
    model = LinearMixedModel(formula, _data(300, 9))
    rng = np.random.default_rng(10)
    V = rng.normal(size=(model.re.q, 3))
    expected = model.Z.T @ (model.Z @ V)
    parts = [
        V[off : off + t.nlevels * t.k].reshape(t.nlevels, t.k, 3)
        for off, t in zip(model.re.offsets, model.re.terms, strict=True)
    ]
    got = np.concatenate([P.reshape(-1, 3) for P in ZtZOperator(model.re, model.cp).times(parts)])
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_cholmod_kernel_has_no_gradient_and_fits_derivative_free():
    model = LinearMixedModel("y ~ x + (1 | a) + (1 | b)", _data(300, 11), kernel="cholmod")
    assert not model.workspace.has_gradient
    with pytest.raises(ValueError, match="no exact gradient"):
        model.objective_and_gradient(model.re.theta0)
    assert model.fit().optinfo.method == "cobyqa"


def test_repeated_calls_at_one_theta_agree():
    model = LinearMixedModel("y ~ x + (1 + x | a) + (1 | b)", _data(300, 13), reml=False)
    rng = np.random.default_rng(14)
    t1, t2 = _theta(model, rng, zero=False), _theta(model, rng, zero=False)
    v1, g1 = model.objective_and_gradient(t1)
    v2, g2 = model.objective_and_gradient(t2)
    g2[:] = 0.0  # a caller's change to a returned gradient must not leak into later calls
    again = model.objective_and_gradient(t2)
    assert again[0] == v2 and model.objective(t2) == v2 and np.any(again[1] != 0)
    assert model.objective(t1) == pytest.approx(v1, rel=1e-12)
    # an evaluation in between: the gradient is computed again, to the same numbers
    model.workspace.evaluate(t2)
    assert model.workspace._last is None
    v3, g3 = model.objective_and_gradient(t2)
    assert v3 == pytest.approx(v2, rel=1e-12) and np.allclose(g3, again[1], rtol=1e-8)
    # the REML criterion at the same theta is another function
    assert model.workspace.objective(t2, reml=True) != pytest.approx(v2, rel=1e-9)


@pytest.mark.parametrize("formula", FORMULAS)
def test_direct_logdet_sums_equal_those_from_the_selected_inverse(formula):
    model = LinearMixedModel(formula, _data(500, 3), kernel="schur")
    kernel = model.workspace.kernel
    kernel._dense_update = True
    rng = np.random.default_rng(7)
    for zero in (False, True):
        templates = model.re.templates(_theta(model, rng, zero))
        kernel.factor(templates)
        direct = kernel.logdet_sums(templates)
        if kernel.q2 == 0:
            assert direct is None  # one term: nothing to gain, the general route is used
            continue
        general = logdet_sums(model.cp, templates, kernel.inverse_blocks())
        for a, b in zip(direct, general, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(b).max()))
