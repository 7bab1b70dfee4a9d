"""lmer() on Dask DataFrames equals the in-memory fit of the same data.

The reference is the in-memory path on the pandas frame (itself checked against lme4 in
test_lme4_parity.py): the Dask path must give the same numbers from cross-products
accumulated partition by partition, to 1e-8 relative. Most fits run on a distributed
LocalCluster started here; one uses Dask's default scheduler.
"""

from __future__ import annotations

import warnings

# dask and distributed: the "dask" extra, installed by [test] (a missing install fails)
import dask.dataframe as dd
import distributed
import numpy as np
import pandas as pd
import pytest

from lmm_sparse import DataError, ModelSpecError, RankDeficiencyWarning, datasets, lmer

RTOL = 1e-8


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def assert_same_fit(ours, ref):
    """fixef, theta, sigma, objective and varcorr to 1e-8 relative."""
    np.testing.assert_allclose(ours.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=RTOL, atol=0)
    assert list(ours.fixef.index) == list(ref.fixef.index)
    np.testing.assert_allclose(ours.theta, ref.theta, rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours.sigma, ref.sigma, rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours.objective, ref.objective, rtol=RTOL, atol=0)
    for column in ("vcov", "sdcor"):
        np.testing.assert_allclose(ours.varcorr[column].to_numpy(),
                                   ref.varcorr[column].to_numpy(), rtol=RTOL, atol=0)
    assert ours.varcorr[["grp", "var1", "var2"]].equals(ref.varcorr[["grp", "var1", "var2"]])
    assert ours.nobs == ref.nobs and ours.ngroups == ref.ngroups
    assert ours.dropped == ref.dropped


def fit_both(formula, df, ddf, **options):
    """The Dask fit and the in-memory fit, both from lme4's default start.

    Both run the same optimizer on criteria equal to rounding (see
    test_criterion_and_gradient_equal_in_memory). L-BFGS-B's stopping point is itself
    only as precise as its tolerances: on ``sleepstudy_with_condition`` with
    ``(1 | Subject)`` the in-memory fit of the same rows in another order moves theta by
    3.6e-8 relative (2 of 6 row permutations), and so does the Dask fit; the models here
    are ones where the optimizer stops at the same point to 1e-8.
    """
    ours = lmer(formula, ddf, **options)
    return ours, lmer(formula, df, **options)


def sleepstudy_with_condition() -> pd.DataFrame:
    """sleepstudy sorted by day with a categorical fixed effect of the day's phase: in 4
    partitions of the sorted rows each partition lacks some phases, one phase never occurs
    (an all-zero, aliased dummy column, dropped as in memory)."""
    df = datasets.load("sleepstudy").sort_values("Days", kind="stable").reset_index(drop=True)
    phase = np.where(df.Days < 3, "early", np.where(df.Days < 7, "mid", "late"))
    df["phase"] = pd.Categorical(phase, categories=["early", "mid", "late", "never"])
    return df


def uneven_groups() -> pd.DataFrame:
    """A grouping factor with very unequal group sizes, sorted by group: one group fills
    most of the first partition, the small groups only the last ones."""
    rng = np.random.default_rng(7)
    sizes = np.r_[150, 60, rng.integers(2, 6, size=40)]
    g = np.repeat([f"g{i:02d}" for i in range(len(sizes))], sizes)
    x = rng.normal(size=len(g))
    effect = rng.normal(scale=0.8, size=len(sizes))
    codes = np.repeat(np.arange(len(sizes)), sizes)
    y = 1.0 + 0.5 * x + effect[codes] + rng.normal(size=len(g))
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_sleepstudy_on_cluster(client):
    df = datasets.load("sleepstudy")
    ours, ref = fit_both("Reaction ~ Days + (Days | Subject)", df,
                         dd.from_pandas(df, npartitions=4))
    assert_same_fit(ours, ref)
    pd.testing.assert_frame_equal(ours.ranef["Subject"], ref.ranef["Subject"], rtol=RTOL)


def test_default_start(client):
    """Both paths from lme4's start values: the same optimum to 1e-8 on these data."""
    for name, formula in (("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                          ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")):
        df = datasets.load(name)
        assert_same_fit(lmer(formula, dd.from_pandas(df, npartitions=4)), lmer(formula, df))


def test_criterion_and_gradient_equal_in_memory(client):
    """The cross-products themselves: criterion and exact gradient at fixed theta."""
    df = sleepstudy_with_condition()
    formula = "Reaction ~ phase + Days + (Days | Subject)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        ours = lmer(formula, dd.from_pandas(df, npartitions=4, sort=False)).model
        ref = lmer(formula, df).model
    for theta in ([1.0, 0.0, 1.0], [0.9, 0.1, 0.2], [2.0, -0.5, 0.01]):
        f_ours, g_ours = ours.objective_and_gradient(np.array(theta))
        f_ref, g_ref = ref.objective_and_gradient(np.array(theta))
        np.testing.assert_allclose(f_ours, f_ref, rtol=1e-12)
        np.testing.assert_allclose(g_ours, g_ref, rtol=1e-8, atol=1e-9)


def test_penicillin_crossed_on_cluster(client):
    df = datasets.load("Penicillin")
    # sorted by sample: every partition meets only some samples, but most plates
    ddf = dd.from_pandas(df.sort_values("sample", kind="stable"), npartitions=4, sort=False)
    ours, ref = fit_both("diameter ~ 1 + (1 | plate) + (1 | sample)", df, ddf)
    assert_same_fit(ours, ref)


def test_categorical_levels_missing_from_partitions(client):
    df = sleepstudy_with_condition()
    formula = "Reaction ~ phase + Days + (Days | Subject)"
    with pytest.warns(RankDeficiencyWarning, match=r"phase\[T.never\]"):
        ours = lmer(formula, dd.from_pandas(df, npartitions=4, sort=False))
    with pytest.warns(RankDeficiencyWarning):
        ref = lmer(formula, df)
    assert ours.dropped == ("phase[T.never]",)
    assert_same_fit(ours, ref)


def test_rows_with_missing_values(client):
    df = datasets.load("sleepstudy").astype({"Days": float, "Subject": object})
    df.loc[[3, 50, 51, 120], "Reaction"] = np.nan
    df.loc[[7, 90], "Days"] = np.nan
    df.loc[[150], "Subject"] = None
    ddf = dd.from_pandas(df, npartitions=4)
    ours, ref = fit_both("Reaction ~ Days + (Days | Subject)", df, ddf)
    assert ours.nobs == len(df) - 7
    assert_same_fit(ours, ref)
    # the lazy fitted values keep the index of the rows used; equal to the in-memory ones
    fitted = ours.fitted.compute()
    assert list(fitted.index) == list(df.dropna().index)
    np.testing.assert_allclose(fitted.to_numpy(), ref.fitted, rtol=RTOL)
    np.testing.assert_allclose(ours.residuals.compute().to_numpy(), ref.residuals,
                               rtol=1e-7, atol=1e-9 * np.abs(ref.residuals).max())


def test_uneven_grouping_factor(client):
    df = uneven_groups()
    ddf = dd.from_pandas(df, npartitions=5, sort=False)
    ours, ref = fit_both("y ~ x + (1 | g)", df, ddf, reml=False)
    assert ours.ngroups == {"g": 42}
    assert_same_fit(ours, ref)


def test_from_parquet_files(client, tmp_path):
    df = sleepstudy_with_condition()
    # Written by pyarrow, read back with categories only known per partition.
    dd.from_pandas(df, npartitions=4, sort=False).to_parquet(tmp_path / "sleep")
    ddf = dd.read_parquet(tmp_path / "sleep")
    assert ddf.npartitions == 4
    formula = "Reaction ~ phase * Days + (1 | Subject)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficiencyWarning)
        ours, ref = fit_both(formula, df, ddf)
    assert_same_fit(ours, ref)


def test_default_scheduler_without_cluster():
    df = datasets.load("Penicillin")
    ddf = dd.from_pandas(df, npartitions=3)
    ours, ref = fit_both("diameter ~ 1 + (1 | plate) + (1 | sample)", df, ddf, reml=False)
    assert_same_fit(ours, ref)


def test_nested_interaction_and_uncentred_covariate():
    # (1 | a/b) needs the global combinations of two factors; x + 1e6 the exact centring
    df = datasets.load("sleepstudy").assign(half=lambda d: np.where(d.Days < 5, "a", "b"),
                                            x=lambda d: d.Days + 1e6)
    ddf = dd.from_pandas(df, npartitions=4)
    ours, ref = fit_both("Reaction ~ x + (1 | Subject/half)", df, ddf)
    assert ours.ngroups == {"half:Subject": 36, "Subject": 18}
    assert_same_fit(ours, ref)


def test_empty_partition_is_skipped():
    df = datasets.load("sleepstudy")
    ddf = dd.from_pandas(df, npartitions=4)
    ddf = ddf[ddf.Days.map_partitions(lambda d: d.index >= 45, meta=("Days", bool))]
    ours, ref = fit_both("Reaction ~ Days + (1 | Subject)", df.iloc[45:], ddf)
    assert_same_fit(ours, ref)


def test_prefit_checks_match_in_memory():
    df = datasets.load("sleepstudy").assign(one="a", row=lambda d: np.arange(len(d)))
    ddf = dd.from_pandas(df, npartitions=3)
    for formula in ("Reaction ~ Days + (1 | one)",  # a single level
                    "Reaction ~ Days + (1 | row)"):  # as many effects as rows
        with pytest.raises(ModelSpecError) as dask_error:
            lmer(formula, ddf)
        with pytest.raises(ModelSpecError) as memory_error:
            lmer(formula, df)
        assert str(dask_error.value) == str(memory_error.value)
    nothing = df.assign(Reaction=np.nan)
    with pytest.raises(DataError, match="no complete rows"):
        lmer("Reaction ~ Days + (1 | Subject)", dd.from_pandas(nothing, npartitions=2))
    with pytest.raises(DataError, match="is constant"):
        lmer("Reaction ~ Days + (1 | Subject)",
             dd.from_pandas(df.assign(Reaction=3.0), npartitions=2))


def test_stateful_transform_refused():
    ddf = dd.from_pandas(datasets.load("sleepstudy"), npartitions=2)
    with pytest.raises(ModelSpecError, match=r"stateful transform.*center\(Days\)"):
        lmer("Reaction ~ center(Days) + (1 | Subject)", ddf)


def test_methods_needing_rows_raise():
    df = datasets.load("sleepstudy")
    res = lmer("Reaction ~ Days + (1 | Subject)", dd.from_pandas(df, npartitions=2))
    for call in (lambda: res.simulate(1), lambda: res.refit(df.Reaction),
                 lambda: res.coef_table("kenward-roger"), lambda: res.anova(),
                 lambda: res.predict(df), lambda: res.model.frame, lambda: res.model.X):
        with pytest.raises(DataError, match="Dask DataFrame"):
            call()
    # what needs only the cross-products works
    ref = lmer("Reaction ~ Days + (1 | Subject)", df)
    np.testing.assert_allclose(res.confint("wald").to_numpy(), ref.confint("wald").to_numpy(),
                               rtol=1e-7)
    np.testing.assert_allclose(res.coef_table()["df"], ref.coef_table()["df"], rtol=1e-6)
    assert res.summary().splitlines()[6] == ref.summary().splitlines()[6]  # quartiles


def test_aliased_numeric_column_dropped_as_in_memory():
    df = uneven_groups().assign(x2=lambda d: 2 * d.x + 1, x3=lambda d: d.x ** 2)
    ddf = dd.from_pandas(df, npartitions=3)
    with pytest.warns(RankDeficiencyWarning, match="x2"):
        ours = lmer("y ~ x + x2 + x3 + (1 | g)", ddf)
    with pytest.warns(RankDeficiencyWarning, match="x2"):
        ref = lmer("y ~ x + x2 + x3 + (1 | g)", df)
    assert ours.dropped == ref.dropped == ("x2",)
    assert_same_fit(ours, ref)


def test_weights_and_offset_are_refused_for_dask_frames():
    df = datasets.load("sleepstudy")
    ddf = dd.from_pandas(df, npartitions=3)
    for option in ({"weights": np.ones(len(df))}, {"offset": "Days"}):
        with pytest.raises(ModelSpecError, match="Dask DataFrames"):
            lmer("Reaction ~ Days + (Days | Subject)", ddf, **option)
