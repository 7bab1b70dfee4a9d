"""Diagnostic plots (lmm_sparse.plots): each is rendered to a PNG file, and what it plots is
checked against the fit's numbers, against lme4's (tests/data/reference/lme4_plots.json,
written by lme4_plots.R: dotplot(ranef(m, condVar = TRUE))'s order, modes and conditional
sds; R's qqnorm quantiles qnorm(ppoints(n))) and against textbook formulas."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from conftest import RANEF_ABS, RANEF_SD_FRACTION, REFERENCE_DIR, SE_REL

import lmm_sparse
from lmm_sparse import plots
from lmm_sparse.errors import ModelSpecError

LME4 = json.loads((REFERENCE_DIR / "lme4_plots.json").read_text(encoding="utf-8"))
Z95 = scipy.stats.norm.ppf(0.975)  # 1.959964; lme4's lattice panels round it to 1.96


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def penicillin_fit():
    df = lmm_sparse.datasets.load("Penicillin")
    return lmm_sparse.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", df)


@pytest.fixture(scope="module")
def sleep_uncorrelated_fit(sleep):
    # two terms on one factor: its conditional covariances are stacked block-diagonally
    return lmm_sparse.lmer("Reaction ~ Days + (Days || Subject)", sleep)


@pytest.fixture(scope="module")
def sleep_sigma_profile(sleep_fit):
    return sleep_fit.profile(which="sigma", progress=False)


def _fit(request, name: str):
    fixture = {"sleepstudy": "sleep_fit", "penicillin": "penicillin_fit",
               "uncorrelated": "sleep_uncorrelated_fit"}[name]
    return request.getfixturevalue(fixture)


def _artists(ax, gid: str) -> list:
    return [a for a in [*ax.lines, *ax.collections] if a.get_gid() == gid]


def _only(ax, gid: str):
    found = _artists(ax, gid)
    assert len(found) == 1, f"{len(found)} artists with gid {gid!r}"
    return found[0]


def _xy(line) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def _segments(collection) -> np.ndarray:
    """(n, 2, 2) end points of a LineCollection's segments."""
    return np.array([np.asarray(s, dtype=float) for s in collection.get_segments()])


def _render(fig, path) -> None:
    """Save to PNG and check the file is a real, non-blank picture."""
    fig.savefig(path, dpi=80)
    assert path.exists()
    assert path.stat().st_size > 5_000
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100
    assert pixels[..., :3].std() > 0.05  # more than a blank canvas


# --------------------------------------------------------------------------- caterpillar


CATERPILLAR_CASES = [("sleepstudy", "Subject"), ("penicillin", "plate"),
                     ("penicillin", "sample"), ("uncorrelated", "Subject")]


@pytest.mark.parametrize(("name", "group"), CATERPILLAR_CASES)
def test_caterpillar_plots_modes_and_intervals(request, tmp_path, name, group):
    res = _fit(request, name)
    axes = plots.caterpillar(res, group)
    _render(axes[0].figure, tmp_path / f"caterpillar_{name}_{group}.png")
    modes = res.ranef[group]
    sd = np.sqrt(np.diagonal(res.ranef_condvar()[group], axis1=1, axis2=2))
    assert len(axes) == modes.shape[1]
    # levels sorted by the first coefficient, smallest at the bottom (lme4's dotplot)
    first_x, first_y = _xy(_only(axes[0], "points"))
    assert np.all(np.diff(first_x) >= 0)
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert sorted(labels) == sorted(modes.index)
    np.testing.assert_array_equal(first_y, np.arange(len(modes)))
    rows = modes.index.get_indexer(labels)
    for j, ax in enumerate(axes):
        assert ax.get_title() == modes.columns[j]
        x, y = _xy(_only(ax, "points"))
        np.testing.assert_array_equal(x, modes.iloc[rows, j].to_numpy())
        np.testing.assert_array_equal(y, np.arange(len(modes)))
        seg = _segments(_only(ax, "intervals"))
        np.testing.assert_allclose(seg[:, 0, 0], x - Z95 * sd[rows, j], rtol=1e-12)
        np.testing.assert_allclose(seg[:, 1, 0], x + Z95 * sd[rows, j], rtol=1e-12)
        np.testing.assert_array_equal(seg[:, :, 1], np.column_stack([y, y]))
        np.testing.assert_array_equal(_xy(_only(ax, "zero"))[0], [0.0, 0.0])


def _lme4_tolerance(res, group: str, coef: str) -> float:
    """conftest's rule for conditional modes: 1% of the effect's sd, at least RANEF_ABS."""
    vc = res.varcorr
    sd = vc[(vc.grp == group) & (vc.var1 == coef) & vc.var2.isna()].sdcor.iloc[0]
    return max(RANEF_SD_FRACTION * sd, RANEF_ABS)


@pytest.mark.parametrize(("name", "group"), CATERPILLAR_CASES[:3])
def test_caterpillar_matches_lme4_dotplot(request, name, group):
    res = _fit(request, name)
    ref = LME4[name][group]
    axes = plots.caterpillar(res, group)
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    for ax, coef in zip(axes, ref["coefficients"], strict=True):
        lme4_mode = pd.Series(coef["mode"], index=coef["levels"])[labels].to_numpy()
        lme4_sd = pd.Series(coef["sd"], index=coef["levels"])[labels].to_numpy()
        tol = _lme4_tolerance(res, group, coef["name"])
        x, _ = _xy(_only(ax, "points"))
        np.testing.assert_allclose(x, lme4_mode, rtol=0, atol=tol)
        seg = _segments(_only(ax, "intervals"))
        np.testing.assert_allclose(seg[:, 1, 0] - seg[:, 0, 0], 2 * 1.96 * lme4_sd,
                                   rtol=SE_REL)
    # lme4's order of the levels; where modes tie (Penicillin's plates have equal modes up
    # to rounding) only the order of the values can be compared
    lme4_first = pd.Series(ref["coefficients"][0]["mode"],
                           index=ref["coefficients"][0]["levels"])
    values = lme4_first[labels].to_numpy()
    assert np.all(np.diff(values) >= -1e-8)
    if lme4_first.round(6).is_unique:
        assert labels == ref["order"]


def test_caterpillar_unordered_keeps_ranef_order(sleep_fit):
    axes = plots.caterpillar(sleep_fit, order=False, level=None)
    modes = sleep_fit.ranef["Subject"]
    assert [t.get_text() for t in axes[0].get_yticklabels()] == list(modes.index)
    for j, ax in enumerate(axes):
        np.testing.assert_array_equal(_xy(_only(ax, "points"))[0], modes.iloc[:, j])
        assert _artists(ax, "intervals") == []


def test_caterpillar_level_sets_interval_width(sleep_fit):
    axes = plots.caterpillar(sleep_fit, level=0.8)
    sd = np.sqrt(sleep_fit.ranef_condvar()["Subject"][:, 1, 1])
    seg = _segments(_only(axes[1], "intervals"))
    np.testing.assert_allclose(np.sort(seg[:, 1, 0] - seg[:, 0, 0]),
                               np.sort(2 * scipy.stats.norm.ppf(0.9) * sd), rtol=1e-12)


def test_caterpillar_default_group_is_the_first(penicillin_fit):
    axes = plots.caterpillar(penicillin_fit)
    assert axes[0].get_ylabel() == "plate" == next(iter(penicillin_fit.ranef))


# --------------------------------------------------------------------------- residuals


@pytest.mark.parametrize("name", ["sleepstudy", "penicillin"])
def test_resid_fitted(request, tmp_path, name):
    res = _fit(request, name)
    ax = plots.resid_fitted(res)
    _render(ax.figure, tmp_path / f"resid_fitted_{name}.png")
    x, y = _xy(_only(ax, "points"))
    np.testing.assert_array_equal(x, res.fitted)
    np.testing.assert_array_equal(y, res.residuals)
    np.testing.assert_array_equal(_xy(_only(ax, "zero"))[1], [0.0, 0.0])


def _r_quantiles(n: int) -> np.ndarray:
    return np.asarray(LME4["qnorm_ppoints"][str(n)], dtype=float)


@pytest.mark.parametrize("n", [6, 10, 11, 18, 24, 144, 180])
def test_normal_quantiles_are_r_ppoints(n):
    np.testing.assert_allclose(plots.normal_quantiles(n), _r_quantiles(n), rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("name", ["sleepstudy", "penicillin"])
def test_qq_residuals(request, tmp_path, name):
    res = _fit(request, name)
    ax = plots.qq_residuals(res)
    _render(ax.figure, tmp_path / f"qq_residuals_{name}.png")
    x, y = _xy(_only(ax, "points"))
    np.testing.assert_allclose(x, _r_quantiles(res.nobs), rtol=1e-13)
    _, ordered = scipy.stats.probplot(res.residuals, fit=False)  # the sorted sample
    np.testing.assert_array_equal(y, ordered)
    # R's qqline: through (qnorm(.25), Q1) and (qnorm(.75), Q3), quartiles of type 7
    lx, ly = _xy(_only(ax, "qqline"))
    q1, q3 = pd.Series(res.residuals).quantile([0.25, 0.75])
    slope = (q3 - q1) / (scipy.stats.norm.ppf(0.75) - scipy.stats.norm.ppf(0.25))
    np.testing.assert_allclose(ly, q1 + slope * (lx - scipy.stats.norm.ppf(0.25)), rtol=1e-12)
    np.testing.assert_array_equal(lx, [x[0], x[-1]])


def test_qq_residuals_without_line(sleep_fit):
    assert _artists(plots.qq_residuals(sleep_fit, line=False), "qqline") == []


@pytest.mark.parametrize(("name", "group"), CATERPILLAR_CASES)
def test_qq_ranef(request, tmp_path, name, group):
    res = _fit(request, name)
    axes = plots.qq_ranef(res, group)
    _render(axes[0].figure, tmp_path / f"qq_ranef_{name}_{group}.png")
    modes = res.ranef[group]
    sd = np.sqrt(np.diagonal(res.ranef_condvar()[group], axis1=1, axis2=2))
    assert len(axes) == modes.shape[1]
    for j, ax in enumerate(axes):
        x, y = _xy(_only(ax, "points"))
        np.testing.assert_allclose(x, _r_quantiles(len(modes)), rtol=1e-13)
        order = np.argsort(modes.iloc[:, j].to_numpy(), kind="stable")
        np.testing.assert_array_equal(y, modes.iloc[order, j])
        seg = _segments(_only(ax, "intervals"))
        np.testing.assert_array_equal(seg[:, :, 0], np.column_stack([x, x]))
        np.testing.assert_allclose(seg[:, 0, 1], y - Z95 * sd[order, j], rtol=1e-12)
        np.testing.assert_allclose(seg[:, 1, 1], y + Z95 * sd[order, j], rtol=1e-12)


# --------------------------------------------------------------------------- profile zeta


def test_zeta_from_table(sleep_sigma_profile, tmp_path):
    axes = plots.zeta(sleep_sigma_profile)
    _render(axes[0].figure, tmp_path / "zeta_sigma.png")
    assert len(axes) == 1
    x, y = _xy(_only(axes[0], "zeta"))
    np.testing.assert_array_equal(x, sleep_sigma_profile["value"])
    np.testing.assert_array_equal(y, sleep_sigma_profile["zeta"])
    quantiles = sorted(_xy(line)[1][0] for line in _artists(axes[0], "quantile"))
    np.testing.assert_allclose(quantiles, [-Z95, Z95], rtol=1e-12)
    assert axes[0].get_xlabel() == "sigma"


def test_zeta_from_fit_profiles_which(sleep_fit, sleep_sigma_profile):
    axes = sleep_fit.plot_zeta("sigma", level=0.9)
    x, y = _xy(_only(axes[0], "zeta"))
    np.testing.assert_allclose(x, sleep_sigma_profile["value"], rtol=1e-10)
    np.testing.assert_allclose(y, sleep_sigma_profile["zeta"], rtol=1e-8, atol=1e-10)
    quantiles = sorted(_xy(line)[1][0] for line in _artists(axes[0], "quantile"))
    np.testing.assert_allclose(quantiles, scipy.stats.norm.ppf([0.05, 0.95]), rtol=1e-12)


def test_zeta_panels_one_per_parameter():
    # a table of two parameters, as profile() lays it out (made up: only the layout counts)
    table = pd.DataFrame({"parameter": ["a", "a", "a", "b", "b"],
                          "value": [1.0, 2.0, 3.0, 0.1, 0.2],
                          "zeta": [-1.5, 0.0, 2.5, -0.3, 0.4]})
    axes = plots.zeta(table)
    assert [ax.get_xlabel() for ax in axes] == ["a", "b"]
    np.testing.assert_array_equal(_xy(_only(axes[1], "zeta"))[1], [-0.3, 0.4])
    only_b = plots.zeta(table, which=["b"])
    assert [ax.get_xlabel() for ax in only_b] == ["b"]


# --------------------------------------------------------------------------- axes, methods


def test_plots_draw_on_the_callers_axes(sleep_fit):
    fig, grid = plt.subplots(2, 3)
    assert plots.resid_fitted(sleep_fit, ax=grid[0, 0]) is grid[0, 0]
    assert plots.qq_residuals(sleep_fit, ax=grid[0, 1]) is grid[0, 1]
    cat = plots.caterpillar(sleep_fit, ax=grid[1, :2])
    assert list(cat) == list(grid[1, :2])
    assert len(_artists(grid[1, 1], "points")) == 1
    qq = plots.qq_ranef(sleep_fit, ax=[grid[0, 2], grid[1, 2]])
    assert list(qq) == [grid[0, 2], grid[1, 2]]


def test_result_methods_are_the_module_functions(sleep_fit):
    pairs = [
        (sleep_fit.plot_caterpillar()[1], plots.caterpillar(sleep_fit)[1]),
        (sleep_fit.plot_qq_ranef("Subject")[0], plots.qq_ranef(sleep_fit)[0]),
        (sleep_fit.plot_resid_fitted(), plots.resid_fitted(sleep_fit)),
        (sleep_fit.plot_qq_residuals(), plots.qq_residuals(sleep_fit)),
    ]
    for mine, theirs in pairs:
        for a, b in zip(_xy(_only(mine, "points")), _xy(_only(theirs, "points")), strict=True):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- errors


def test_unknown_group_lists_the_valid_ones(penicillin_fit):
    with pytest.raises(ModelSpecError, match=r"'batch'.*\['plate', 'sample'\]"):
        plots.caterpillar(penicillin_fit, "batch")
    with pytest.raises(ModelSpecError, match="'batch'"):
        penicillin_fit.plot_qq_ranef("batch")


def test_wrong_number_of_axes(sleep_fit):
    _, ax = plt.subplots()
    with pytest.raises(ModelSpecError, match="must hold 2 Axes.*got 1"):
        plots.caterpillar(sleep_fit, ax=ax)
    with pytest.raises(ModelSpecError, match="matplotlib Axes"):
        plots.resid_fitted(sleep_fit, ax="left")
    with pytest.raises(ModelSpecError, match="matplotlib Axes"):
        plots.qq_ranef(sleep_fit, ax=[ax, None])


def test_not_a_fit_or_table(sleep):
    with pytest.raises(ModelSpecError, match="needs a fitted model.*DataFrame"):
        plots.caterpillar(sleep)
    with pytest.raises(ModelSpecError, match=r"no column \['parameter', 'value', 'zeta'\]"):
        plots.zeta(sleep)
    with pytest.raises(ModelSpecError, match="needs a profile table"):
        plots.zeta([1, 2, 3])


def test_bad_which_and_level(sleep_sigma_profile):
    with pytest.raises(ModelSpecError, match=r"unknown parameter \['Days'\].*\['sigma'\]"):
        plots.zeta(sleep_sigma_profile, which="Days")
    with pytest.raises(ModelSpecError, match="level"):
        plots.zeta(sleep_sigma_profile, level=1.5)


def test_bad_level_of_intervals(sleep_fit):
    with pytest.raises(ModelSpecError, match="level"):
        plots.caterpillar(sleep_fit, level=95)


def test_missing_matplotlib_names_the_extra(sleep_fit, monkeypatch):
    # a None entry in sys.modules makes the import fail as an absent package does
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"lmm_sparse\[plot\]"):
        plots.resid_fitted(sleep_fit)
