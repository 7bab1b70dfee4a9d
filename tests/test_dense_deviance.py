"""The criterion computed through the sparse factorization equals the dense Gaussian one.

Acceptance: the deviance computed through CHOLMOD equals a dense brute-force evaluation
of the marginal likelihood ``-2 log N(y; X beta, sigma^2 (Z Lambda Lambda' Z' + I))`` for
random theta on small random problems (crossed, nested, slopes), to 1e-8 relative.

The dense value is computed here from ``model.X``, ``model.y``, ``model.Z`` and
``model.Lambda(theta)`` with nothing of the library's algebra:

* ML (profiled): ``beta`` = the GLS estimate, ``sigma^2 = r'V^-1 r / n``, and the
  criterion is ``-2 log N(y; X beta, sigma^2 V)``;
* REML: ``sigma^2 = r'V^-1 r / (n - p)`` and the criterion is
  ``-2 log N(y; X beta, sigma^2 V) + log det(X' (sigma^2 V)^-1 X) - p log(2 pi)``
  (the restricted likelihood, without lme4's omitted constant ``log det(X'X)``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from conftest import as_factors, load_dataset

import lmm_sparse

REL_TOL = 1e-8
KERNELS = ["cholmod", "auto", "schur"]


# --------------------------------------------------------------------------- dense value


def dense_criterion(X, y, Z, Lam, reml: bool) -> float:
    """-2 log-likelihood (ML) or -2 restricted log-likelihood (REML), sigma and beta profiled.

    One dense Cholesky factor C of V = Z Lambda Lambda' Z' + I serves every solve.
    """
    X, y = np.asarray(X, float), np.asarray(y, float)
    ZL = np.asarray((Z @ Lam).todense())
    n, p = X.shape
    V = ZL @ ZL.T + np.eye(n)
    C = scipy.linalg.cholesky(V, lower=True)
    CX = scipy.linalg.solve_triangular(C, X, lower=True)  # C^-1 X
    Cy = scipy.linalg.solve_triangular(C, y, lower=True)
    XtVinvX = CX.T @ CX
    beta = np.linalg.solve(XtVinvX, CX.T @ Cy)  # GLS estimate
    w = Cy - CX @ beta  # C^-1 (y - X beta)
    rss = float(w @ w)  # r' V^-1 r
    sigma2 = rss / (n - p if reml else n)
    logdet_V = 2.0 * np.sum(np.log(np.diag(C)))
    # -2 log N(y; X beta, sigma^2 V) = n log 2 pi + log det(sigma^2 V) + r' (sigma^2 V)^-1 r
    value = n * np.log(2.0 * np.pi) + (n * np.log(sigma2) + logdet_V) + rss / sigma2
    if reml:
        sign, logdet = np.linalg.slogdet(XtVinvX / sigma2)  # log det(X' (sigma^2 V)^-1 X)
        assert sign > 0
        value += logdet - p * np.log(2.0 * np.pi)
    return float(value)


def random_theta(model, rng: np.random.Generator, zeros: bool) -> np.ndarray:
    """Random theta within the bounds; with ``zeros`` some diagonal elements exactly 0."""
    lower = np.asarray(model.re.lower, dtype=float)
    diagonal = lower == 0
    theta = np.where(diagonal, rng.uniform(0.2, 2.5, lower.size), rng.normal(0, 0.7, lower.size))
    if zeros:
        idx = np.flatnonzero(diagonal)
        chosen = rng.choice(idx, size=max(1, idx.size // 2), replace=False)
        theta[chosen] = 0.0
    return theta


def assert_matches_dense(formula: str, data: pd.DataFrame, reml: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    models = {k: lmm_sparse.LinearMixedModel(formula, data, reml=reml, kernel=k) for k in KERNELS}
    first = models["cholmod"]
    thetas = [
        random_theta(first, rng, zeros=False),
        random_theta(first, rng, zeros=False),
        random_theta(first, rng, zeros=True),
        np.zeros_like(first.re.lower, dtype=float),
    ]
    for kernel, model in models.items():  # the same model whatever the kernel
        np.testing.assert_array_equal(model.X, first.X)
        np.testing.assert_array_equal(model.y, first.y)
        assert (model.Z != first.Z).nnz == 0, kernel
    for theta in thetas:
        Lam = first.Lambda(theta)
        expected = dense_criterion(first.X, first.y, first.Z, Lam, reml)
        for kernel, model in models.items():
            assert (model.Lambda(theta) != Lam).nnz == 0, kernel
            got = model.objective(theta)
            assert got == pytest.approx(expected, rel=REL_TOL), (
                f"{formula} reml={reml} kernel={kernel} theta={np.round(theta, 4).tolist()}: "
                f"objective {got!r} vs dense {expected!r} (rel diff "
                f"{abs(got - expected) / abs(expected):.3g})"
            )


# --------------------------------------------------------------------------- random designs


def _labels(prefix: str, k: int) -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(k)]


def random_data(seed: int, n: int = 240) -> pd.DataFrame:
    """Small random data: continuous x, z; categorical c; factors a, b (nested in a), g, h."""
    rng = np.random.default_rng(seed)
    a = rng.permutation(np.resize(_labels("a", 12), n))
    g = rng.permutation(np.resize(_labels("g", 10), n))
    h = rng.permutation(np.resize(_labels("h", 7), n))
    f = rng.permutation(np.resize(_labels("f", 5), n))
    b = rng.permutation(np.resize(["u", "v", "w", "x"], n))  # b within a: 48 cells a:b
    c = rng.permutation(np.resize(["lo", "mid", "hi"], n))
    x = rng.normal(size=n)
    z = rng.uniform(-1, 1, n)
    eff = {
        name: dict(zip(sorted(set(col)), rng.normal(0, 1, len(set(col))), strict=True))
        for name, col in (("a", a), ("g", g), ("h", h), ("f", f))
    }
    y = (
        1.0
        + 0.5 * x
        - 0.3 * z
        + np.array([eff["a"][v] for v in a])
        + np.array([eff["g"][v] for v in g]) * (1 + 0.4 * x)
        + 0.5 * np.array([eff["h"][v] for v in h])
        + rng.normal(0, 1, n)
    )
    return pd.DataFrame({"y": y, "x": x, "z": z, "c": c, "a": a, "b": b, "g": g, "h": h, "f": f})


DESIGNS = {
    "crossed": "y ~ x + (1 | a) + (1 | g)",
    "nested": "y ~ x + (1 | a/b)",
    "interaction_factor": "y ~ x + (1 | a) + (1 | a:b)",
    "correlated_slopes": "y ~ x + (1 + x | g)",
    "uncorrelated_slopes": "y ~ x + z + (1 + x + z || g)",
    "categorical_slope": "y ~ x + c + (1 + c | g)",
    "three_crossed_slopes": "y ~ x + z + (1 + x | a) + (1 + z | g) + (1 | h)",
    "nested_slopes": "y ~ x + (1 + x | a/b)",
    "four_terms_mixed": "y ~ x * c + (1 + x | g) + (0 + z | g) + (1 | a) + (c | f)",
}


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_random_design_matches_dense(design, reml):
    seed = sorted(DESIGNS).index(design)
    assert_matches_dense(DESIGNS[design], random_data(seed), reml, seed=100 + seed)


def test_unbalanced_small_groups_match_dense():
    # levels with one or two observations and a group with a single level's worth of data
    data = random_data(7, n=90).iloc[:67].copy()
    data.loc[data.index[:3], "g"] = ["g_single", "g_pair", "g_pair"]
    for reml in (True, False):
        assert_matches_dense("y ~ x + (1 + x | g) + (1 | h)", data, reml, seed=11)


# --------------------------------------------------------------------------- real data

REAL = [
    ("Orthodont", ["Subject"], "distance ~ age * Sex + (age | Subject)"),
    ("Oats", ["Block", "Variety"], "yield ~ nitro + (1 | Block/Variety)"),
    ("Pixel", ["Dog", "Side"], "pixel ~ day + I(day**2) + (day | Dog) + (1 | Side:Dog)"),
    ("ChickWeight", ["Chick", "Diet"], "log(weight) ~ Time * Diet + (Time | Chick)"),
    ("cake", ["replicate"], "angle ~ recipe * temp + (1 | replicate) + (1 | recipe:replicate)"),
]


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize(("name", "factors", "formula"), REAL, ids=[r[0] for r in REAL])
def test_real_data_matches_dense(name, factors, formula, reml):
    data = as_factors(load_dataset(name), factors)
    assert_matches_dense(formula, data, reml, seed=len(name))
