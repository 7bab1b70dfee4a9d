"""The PLS kernels against sparse algebra done the slow way, and their cost structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from conftest import synthetic_frame

from lmm_sparse import LinearMixedModel, kernel_schur
from lmm_sparse.kernel_schur import SchurKernel
from lmm_sparse.kernel_sparse import CholmodKernel

FORMULAS = [
    "y ~ x + (1 | a) + (1 | b)",
    "y ~ x + (1 | a/b)",
    "y ~ x * f + (1 + x | a) + (1 + f | b) + (x || c)",
    "y ~ 1 + (1 + x | a) + (0 + x | b)",
]


def _data(n: int, seed: int) -> pd.DataFrame:
    return synthetic_frame(n, seed)


def _random_theta(model: LinearMixedModel, rng: np.random.Generator) -> np.ndarray:
    theta = rng.normal(scale=0.7, size=model.re.ntheta)
    diagonal = model.re.lower == 0
    theta[diagonal] = np.abs(theta[diagonal])
    theta[np.flatnonzero(diagonal)[0]] = 0.0  # a boundary value must keep working
    return theta


@pytest.mark.parametrize("formula", FORMULAS)
def test_cross_products_match_sparse_products(formula):
    model = LinearMixedModel(formula, _data(400, 1))
    Z, X, y = model.Z, model.X, model.y
    ZtZ = (Z.T @ Z).toarray()
    for block in model.cp.blocks:
        ti, tj = model.re.terms[block.i], model.re.terms[block.j]
        for n, (r, c) in enumerate(zip(block.rows, block.cols, strict=True)):
            rows = model.re.offsets[block.i] + r * ti.k + np.arange(ti.k)
            cols = model.re.offsets[block.j] + c * tj.k + np.arange(tj.k)
            np.testing.assert_allclose(block.C[n], ZtZ[np.ix_(rows, cols)], atol=1e-10)
    ZtXy = np.concatenate([b.reshape(-1, b.shape[2]) for b in model.cp.ZtXy])
    Xc = X - model.cp.center  # X enters centred when it has an intercept
    assert np.all(X[:, 0] == 1) and np.all(Xc[:, 0] == 1)
    np.testing.assert_allclose(Xc[:, 1:].mean(axis=0), 0, atol=1e-12)
    y0 = y - Xc @ model.cp.beta0  # the response enters as its least-squares residual
    np.testing.assert_allclose(X.T @ y0, 0, atol=1e-8 * np.abs(X.T @ y).max())
    np.testing.assert_allclose(ZtXy, Z.T @ np.column_stack([Xc, y0]), atol=1e-10)


def _schur(update: str):
    """A Schur kernel maker with its update forced dense (E, Y by BLAS; L21 implicit) or
    sparse (L21 on A21's pattern)."""
    def make(re, cp):
        k = SchurKernel(re, cp)
        k._dense_update = update == "dense"
        return k
    return make


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("kernel", [CholmodKernel, _schur("dense"), _schur("sparse")],
                         ids=["cholmod", "schur-dense", "schur-sparse"])
def test_kernel_solves_match_dense(formula, kernel):
    model = LinearMixedModel(formula, _data(300, 2))
    rng = np.random.default_rng(3)
    theta = _random_theta(model, rng)
    Lam = model.Lambda(theta).toarray()
    Z = model.Z.toarray()
    A = Lam.T @ Z.T @ Z @ Lam + np.eye(model.re.q)
    k = kernel(model.re, model.cp)
    k.factor(model.re.templates(theta))
    assert k.logdet() == pytest.approx(np.linalg.slogdet(A)[1], rel=1e-10)
    B = rng.normal(size=(model.re.q, 3))
    H = k.half_solve(B)
    np.testing.assert_allclose(H.T @ H, B.T @ np.linalg.solve(A, B), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(k.solve(B), np.linalg.solve(A, B), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("formula", FORMULAS)
def test_kernels_give_the_same_objective(formula):
    df = _data(300, 4)
    cholmod = LinearMixedModel(formula, df, kernel="cholmod")
    schur = LinearMixedModel(formula, df, kernel="schur")
    rng = np.random.default_rng(5)
    for _ in range(3):
        theta = _random_theta(cholmod, rng)
        assert schur.objective(theta) == pytest.approx(cholmod.objective(theta), rel=1e-12)


@pytest.mark.parametrize("formula", FORMULAS)
def test_evaluation_state_does_not_grow_with_n(formula):
    """Everything an evaluation reads has a size set by the levels, not by n."""
    small = _data(300, 6)
    large = pd.concat([small] * 4, ignore_index=True)
    sizes = []
    for df in (small, large):
        model = LinearMixedModel(formula, df)
        shapes = [b.C.shape for b in model.cp.blocks] + [z.shape for z in model.cp.ZtXy]
        shapes.append(model.cp.XyXy.shape)
        sizes.append((shapes, model.workspace.describe()))
        assert model.cp.n == len(df)
    assert sizes[0] == sizes[1]


@pytest.mark.parametrize("kernel", ["cholmod", "schur-dense", "schur-sparse"])
def test_inverse_blocks_match_dense(kernel):
    model = LinearMixedModel("y ~ x + (1 + x | a) + (1 | b)", _data(300, 7),
                             kernel=kernel.split("-")[0])
    if kernel != "cholmod":  # the dense update forms L21's sparse values on demand here
        model.workspace.kernel._dense_update = kernel == "schur-dense"
    theta = _random_theta(model, np.random.default_rng(8))
    Lam, Z = model.Lambda(theta).toarray(), model.Z.toarray()
    inverse = np.linalg.inv(Lam.T @ Z.T @ Z @ Lam + np.eye(model.re.q))
    for i, term in enumerate(model.re.terms):
        blocks = model.workspace.inverse_diagonal_blocks(theta, i)
        for level in range(term.nlevels):
            idx = model.re.offsets[i] + level * term.k + np.arange(term.k)
            np.testing.assert_allclose(blocks[level], inverse[np.ix_(idx, idx)], atol=1e-12)


def test_auto_kernel_avoids_a_big_block_diagonal_schur_complement():
    # 800 schools, 4 classes each: nested, so the schools' Schur complement is diagonal
    rng = np.random.default_rng(12)
    cls = np.repeat(np.arange(3200), 3)
    nested = pd.DataFrame({"school": cls // 4, "cls": cls, "y": rng.normal(size=cls.size)})
    model = LinearMixedModel("y ~ 1 + (1 | school/cls)", nested)
    assert model.workspace.describe().startswith("CHOLMOD")
    assert not model.workspace.has_gradient
    # crossed, 1000 classes of 40 pupils from 800 schools: each class meets ~40 schools, so
    # the schools' Schur complement fills up, and the Schur kernel is kept
    cls = np.repeat(np.arange(1000), 40)
    crossed = pd.DataFrame({"school": rng.integers(0, 800, cls.size), "cls": cls,
                            "y": rng.normal(size=cls.size)})
    model = LinearMixedModel("y ~ 1 + (1 | school) + (1 | cls)", crossed)
    assert model.workspace.describe().startswith("leading block")
    assert model.workspace.has_gradient


def test_small_models_optimize_on_the_dense_evaluator_with_the_same_answer(sleep):
    # kernel="auto" optimizes a small model (q <= DENSE_MAX_Q) with the dense evaluator;
    # forcing a sparse kernel must reach the same optimum.
    formula = "Reaction ~ Days + (Days | Subject)"
    auto = LinearMixedModel(formula, sleep)
    assert auto.describe_engine().startswith("dense")
    forced = LinearMixedModel(formula, sleep, kernel="schur")
    assert not forced.describe_engine().startswith("dense")
    a, b = auto.fit(), forced.fit()
    assert a.objective == pytest.approx(b.objective, abs=1e-8)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-8)


@pytest.mark.parametrize("reml", [True, False])
def test_a_shifted_covariate_leaves_the_criterion_unchanged(reml):
    # x -> x + 1e6 with an intercept is the same model. Before X entered centred, the
    # criterion at a fixed theta moved by up to 4e-6 relative (X'X - W'W cancelled).
    data = _data(400, 5)
    theta = np.array([0.7, 0.4])
    evs, values = [], []
    for shift in (0.0, 1e6):
        model = LinearMixedModel("y ~ x + (1 | a) + (1 | b)", data.assign(x=data["x"] + shift),
                                 reml=reml)
        values.append(model.objective(theta))
        evs.append(model.workspace.evaluate(theta))
    # x + 1e6 is itself stored to ~1e-10 absolute, so the data differ at that level
    assert values[1] == pytest.approx(values[0], rel=1e-10)
    plain, shifted = evs
    assert shifted.beta[1] == pytest.approx(plain.beta[1], rel=1e-9)
    assert shifted.beta[0] == pytest.approx(plain.beta[0] - 1e6 * plain.beta[1], rel=1e-9)
    assert np.allclose(np.triu(shifted.RX), shifted.RX)  # still upper triangular
    # R_X is the original X's: the slope's variance is the same, the intercept's grows
    inverses = [scipy.linalg.solve_triangular(ev.RX, np.eye(2)) for ev in evs]
    V0, V1 = (Ri @ Ri.T for Ri in inverses)  # as results.py forms vcov
    assert V1[1, 1] == pytest.approx(V0[1, 1], rel=1e-8)
    assert V1[0, 0] > 1e10 * V0[1, 1]


def _balanced_frame(subjects: int, items: int, seed: int, drop: float = 0.0) -> pd.DataFrame:
    """Every subject meets every item (minus a random share of cells): many leading levels
    with equal blocks of Z'Z, the case the grouped data gram is for."""
    rng = np.random.default_rng(seed)
    s, i = (a.ravel() for a in np.meshgrid(np.arange(subjects), np.arange(items), indexing="ij"))
    keep = rng.random(len(s)) >= drop
    s, i = s[keep], i[keep]
    a = np.where((s + i) % 2 == 0, -0.5, 0.5)
    x = rng.normal(size=len(s))
    y = 0.3 * a + 0.2 * x + rng.normal(size=len(s)) + rng.normal(size=subjects)[s]
    return pd.DataFrame({"y": y, "a": a, "x": x, "subj": s.astype(str), "item": i.astype(str)})


@pytest.mark.parametrize(
    ("formula", "drop"),
    [
        ("y ~ a + x + (1 | subj) + (1 | item)", 0.0),  # one group: all counts equal
        ("y ~ a + x + (1 | subj) + (1 | item)", 0.3),  # counts vary: several groups
        ("y ~ a + x + (1 + a | subj) + (1 | item)", 0.0),  # 2 x 2 leading blocks
        ("y ~ a * x + (1 + a | subj) + (1 + a | item)", 0.1),
    ],
)
def test_grouped_data_gram_equals_the_level_by_level_one(formula, drop, monkeypatch):
    # small enough to run in a moment; the size rule would leave it ungrouped
    monkeypatch.setattr(kernel_schur, "_MIN_GROUPED_WORK", 0)
    model = LinearMixedModel(formula, _balanced_frame(300, 12, 5, drop), reml=False)
    ws = model.workspace
    kernel = ws.kernel
    assert isinstance(kernel, SchurKernel)
    rng = np.random.default_rng(2)
    for theta in (model.re.theta0, _random_theta(model, rng), _random_theta(model, rng)):
        templates = model.re.templates(theta)
        kernel.factor(templates)
        grouped = kernel.xy_gram(templates, model.cp)
        assert grouped is not None, "this design has few distinct leading blocks"
        level_by_level = kernel.gram(ws.lambda_t_ztxy(templates))
        np.testing.assert_allclose(grouped, level_by_level, rtol=1e-10, atol=1e-10)
    # a new response (a refit) gets its own sums, not the first response's
    other = model.with_response(model.y[::-1].copy())
    templates = model.re.templates(model.re.theta0)
    other.workspace.kernel.factor(templates)
    np.testing.assert_allclose(
        other.workspace.kernel.xy_gram(templates, other.cp),
        other.workspace.kernel.gram(other.workspace.lambda_t_ztxy(templates)),
        rtol=1e-10, atol=1e-10,
    )


def test_grouped_data_gram_is_not_used_for_a_small_model():
    """Grouping has a one-off cost of a few ms: not worth it where the level-by-level gram
    is cheap (a small model is fitted once, by the dense evaluator, and evaluated here)."""
    model = LinearMixedModel("y ~ a + x + (1 | subj) + (1 | item)", _balanced_frame(300, 12, 5))
    kernel = model.workspace.kernel
    templates = model.re.templates(model.re.theta0)
    kernel.factor(templates)
    assert kernel.xy_gram(templates, model.cp) is None


def test_grouped_data_gram_is_not_used_when_every_level_differs(monkeypatch):
    monkeypatch.setattr(kernel_schur, "_MIN_GROUPED_WORK", 0)
    model = LinearMixedModel("y ~ x + (1 + x | a) + (1 | b)", _data(2000, 3))
    kernel = model.workspace.kernel
    templates = model.re.templates(model.re.theta0)
    kernel.factor(templates)
    assert kernel.xy_gram(templates, model.cp) is None  # continuous x: no two blocks alike


def test_dense_update_gives_way_to_the_sparse_one_above_its_memory_budget(monkeypatch):
    """The dense update keeps three q1 x q2 arrays; over _DENSE_WORK_BYTES the kernel takes
    the sparse update, with the same criterion and gradient."""
    from benchmarks.simulate import FORMULA, SimDesign, simulate

    df = simulate(SimDesign(60, 40, 0.5), seed=11)
    dense = LinearMixedModel(FORMULA, df, reml=False, kernel="schur")
    assert dense.workspace.kernel._dense_update
    kernel = dense.workspace.kernel
    assert (kernel.q1, kernel.q2) == (120, 80)  # 60 subjects and 40 items, 2 columns each
    monkeypatch.setattr(kernel_schur, "_DENSE_WORK_BYTES", 3 * 8 * 120 * 80 - 1)
    sparse = LinearMixedModel(FORMULA, df, reml=False, kernel="schur")
    assert not sparse.workspace.kernel._dense_update
    theta = np.array([0.5, 0.1, 0.3, 0.4, -0.05, 0.2])
    v_dense, g_dense = dense.objective_and_gradient(theta)
    v_sparse, g_sparse = sparse.objective_and_gradient(theta)
    assert v_sparse == pytest.approx(v_dense, rel=1e-12)
    np.testing.assert_allclose(g_sparse, g_dense, rtol=1e-8, atol=1e-8)
