"""Diagnostic plots of a fitted model, as lme4's lattice methods draw them, with matplotlib.

* :func:`caterpillar`: conditional modes with prediction intervals, one panel per
  coefficient of a grouping factor, levels sorted by the first coefficient (lme4's
  ``dotplot(ranef(m, condVar = TRUE))``);
* :func:`resid_fitted`: residuals against fitted values with a zero line (lme4's
  ``plot(m)``);
* :func:`qq_residuals`: normal QQ plot of the residuals with the line through the
  quartiles (R's ``qqnorm(resid(m)); qqline(resid(m))``);
* :func:`qq_ranef`: normal QQ plot of the conditional modes, one panel per coefficient
  (lme4's ``qqmath(ranef(m, condVar = TRUE))``);
* :func:`zeta`: the profile zeta of each parameter against its value with the lines at
  ``+-z`` of the confidence level (lme4's ``xyplot(profile(m))``).

matplotlib is an optional extra (``pip install 'lmm_sparse[plot]'``), imported only when a
plot is drawn. Every function draws on the Axes given (``ax``) or on a new figure, and
returns what it drew on: one Axes, or a 1-d array of Axes for the multi-panel plots. The
artists carry a ``gid`` ("points", "intervals", "zero", "qqline", "zeta", "quantile") so
that a caller (and the tests) can find the plotted data again.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.stats

from .errors import ModelSpecError
from .profile.levels import zeta_targets

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["caterpillar", "resid_fitted", "qq_residuals", "qq_ranef", "zeta",
           "normal_quantiles"]

_INSTALL_HINT = "pip install 'lmm_sparse[plot]'"
# Level names on the caterpillar's axis: beyond this many they overlap and are left out.
_MAX_LEVEL_LABELS = 60
_PROFILE_COLUMNS = ("parameter", "value", "zeta")


# ------------------------------------------------------------------------------ plumbing


def _pyplot():
    """matplotlib.pyplot, or an ImportError that says how to install the extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            f"lmm_sparse's plots need matplotlib, an optional extra: {_INSTALL_HINT}"
        ) from exc
    return plt


def _check_result(res: Any, function: str) -> LmerResult:
    from .results import LmerResult

    if not isinstance(res, LmerResult):
        raise ModelSpecError(
            f"{function}() needs a fitted model (the LmerResult of lmm_sparse.lmer), got "
            f"{type(res).__name__}"
        )
    return res


def _is_axes(obj: Any) -> bool:
    from matplotlib.axes import Axes

    return isinstance(obj, Axes)


def _single_axes(ax: Any):
    """The caller's Axes, or one on a new figure."""
    plt = _pyplot()
    if ax is None:
        return plt.subplots(figsize=(5.0, 4.0), layout="constrained")[1]
    if not _is_axes(ax):
        raise ModelSpecError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax


def _panel_axes(ax: Any, n: int, what: str, *, ncols: int, size: tuple[float, float],
                share: str) -> np.ndarray:
    """``n`` Axes as a 1-d array: the caller's (an Axes or an array of them, one per
    panel) or a new figure's grid of ``ncols`` columns sharing the ``share`` axis."""
    plt = _pyplot()
    if ax is None:
        ncols = min(n, ncols)
        nrows = math.ceil(n / ncols)
        fig, grid = plt.subplots(
            nrows, ncols, squeeze=False, layout="constrained",
            figsize=(size[0] * ncols, size[1] * nrows),
            sharex=share == "x", sharey=share == "y",
        )
        for extra in grid.ravel()[n:]:  # an incomplete last row
            fig.delaxes(extra)
        return grid.ravel()[:n]
    axes = np.asarray(ax, dtype=object).ravel()
    if not all(_is_axes(a) for a in axes):
        raise ModelSpecError("ax must be a matplotlib Axes, an array of them or None")
    if axes.size != n:
        raise ModelSpecError(f"ax must hold {n} Axes (one per {what}), got {axes.size}")
    return axes


def _group_name(res: LmerResult, group: str | None) -> str:
    """The grouping factor asked for; by default the first (lme4's order of terms)."""
    names = list(res.ranef)
    if group is None:
        return names[0]
    if group not in res.ranef:
        raise ModelSpecError(f"unknown grouping factor {group!r}; the model's are {names}")
    return group


def _interval_z(level: float | None) -> float | None:
    """The normal quantile of a two-sided interval at ``level`` (None: no intervals)."""
    return None if level is None else zeta_targets([level])[1]


def _conditional_sd(res: LmerResult, group: str) -> np.ndarray:
    """(levels, coefficients) conditional standard deviations of a factor's modes."""
    condvar = res.ranef_condvar()[group]
    return np.sqrt(np.diagonal(condvar, axis1=1, axis2=2))


def normal_quantiles(n: int) -> np.ndarray:
    """Standard normal quantiles at R's plotting positions ``ppoints(n)``, the x values of
    R's ``qqnorm``: ``(i - a) / (n + 1 - 2 a)``, ``a = 3/8`` for ``n <= 10``, else 1/2."""
    a = 0.375 if n <= 10 else 0.5
    positions = (np.arange(1, n + 1) - a) / (n + 1 - 2 * a)
    return scipy.stats.norm.ppf(positions)


# ------------------------------------------------------------------------------ the plots


def caterpillar(res: LmerResult, group: str | None = None, ax: Any = None, *,
                order: bool = True, level: float | None = 0.95) -> np.ndarray:
    """Conditional modes of one grouping factor with prediction intervals, as lme4's
    ``dotplot(ranef(m, condVar = TRUE))``.

    One panel per coefficient of the factor (``res.ranef[group]``'s columns), one row per
    level: the mode and the interval ``mode +- z sd``, ``sd`` the conditional standard
    deviation (``res.ranef_condvar()``) and ``z`` the normal quantile of ``level`` (1.96 at
    0.95; ``None`` draws no intervals), and a line at zero.

    Parameters
    ----------
    res: the fitted model.
    group: the grouping factor; default the first of ``res.ranef``.
    ax: an array of Axes, one per coefficient (or one Axes for a single coefficient);
        default a new figure with panels side by side sharing the level axis.
    order: levels sorted by their mode of the first coefficient, smallest at the bottom
        (lme4's order); False keeps the order of ``res.ranef[group]``.
    level: the prediction intervals' level.

    Returns
    -------
    The Axes, one per coefficient.
    """
    res = _check_result(res, "caterpillar")
    group = _group_name(res, group)
    z = _interval_z(level)
    modes = res.ranef[group]
    sd = _conditional_sd(res, group)
    nlev = len(modes)
    # a stable sort keeps tied levels in their order, as R's reorder()
    rows = np.argsort(modes.iloc[:, 0].to_numpy(), kind="stable") if order else np.arange(nlev)
    height = min(12.0, max(3.0, 0.2 * nlev + 1.0))
    axes = _panel_axes(ax, modes.shape[1], f"coefficient of {group}", ncols=modes.shape[1],
                       size=(3.2, height), share="y")
    position = np.arange(nlev)
    labels = modes.index[rows].astype(str)
    for j, (panel, coef) in enumerate(zip(axes, modes.columns, strict=True)):
        values = modes.iloc[rows, j].to_numpy()
        panel.axvline(0.0, color="0.6", linewidth=0.8, gid="zero")
        if z is not None:
            half = z * sd[rows, j]
            panel.hlines(position, values - half, values + half, color="black",
                         linewidth=1.0, gid="intervals")
        panel.plot(values, position, "o", markersize=4, gid="points")
        panel.set_title(str(coef))
        panel.set_yticks(position, labels if nlev <= _MAX_LEVEL_LABELS else [])
    axes[0].set_ylabel(group)
    return axes


def resid_fitted(res: LmerResult, ax: Any = None):
    """Residuals against fitted values with a line at zero, as lme4's ``plot(m)``
    (residuals ``y - X beta - Z b``, ``res.residuals``; ``res.fitted``). Returns the Axes."""
    res = _check_result(res, "resid_fitted")
    ax = _single_axes(ax)
    ax.axhline(0.0, color="0.6", linewidth=0.8, gid="zero")
    ax.plot(res.fitted, res.residuals, "o", markersize=3, alpha=0.7, gid="points")
    ax.set_xlabel("Fitted values")
    ax.set_ylabel("Residuals")
    return ax


def qq_residuals(res: LmerResult, ax: Any = None, *, line: bool = True):
    """Normal QQ plot of the residuals, as R's ``qqnorm(resid(m))``: the sorted residuals
    against :func:`normal_quantiles`, and with ``line`` R's ``qqline``, the line through
    the first and third quartiles of the residuals and of the normal. Returns the Axes."""
    res = _check_result(res, "qq_residuals")
    ax = _single_axes(ax)
    _qq_points(ax, np.asarray(res.residuals, dtype=float), line=line)
    ax.set_ylabel("Residuals")
    return ax


def _qq_points(ax, sample: np.ndarray, *, line: bool,
               half_width: np.ndarray | None = None) -> None:
    """Sorted ``sample`` against normal quantiles on ``ax`` (with vertical intervals of
    ``half_width``, given in the sample's order, and R's quartile line if asked)."""
    rows = np.argsort(sample, kind="stable")
    x, y = normal_quantiles(sample.size), sample[rows]
    if half_width is not None:
        half = half_width[rows]
        ax.vlines(x, y - half, y + half, color="black", linewidth=1.0, gid="intervals")
    ax.plot(x, y, "o", markersize=3, gid="points")
    if line:
        # R's qqline: quartiles of the data (type 7, numpy's default) against the normal's
        q_data = np.percentile(sample, [25.0, 75.0])
        q_norm = scipy.stats.norm.ppf([0.25, 0.75])
        slope = (q_data[1] - q_data[0]) / (q_norm[1] - q_norm[0])
        ends = np.array([x[0], x[-1]])
        ax.plot(ends, q_data[0] + slope * (ends - q_norm[0]), color="0.4", linewidth=1.0,
                gid="qqline")
    ax.set_xlabel("Standard normal quantiles")


def qq_ranef(res: LmerResult, group: str | None = None, ax: Any = None, *,
             level: float | None = 0.95, line: bool = False) -> np.ndarray:
    """Normal QQ plot of one grouping factor's conditional modes, one panel per
    coefficient, as lme4's ``qqmath(ranef(m, condVar = TRUE))``: each coefficient's
    sorted modes against :func:`normal_quantiles` (x; lme4 draws the quantiles on y), with
    the intervals ``mode +- z sd`` of :func:`caterpillar` (``level=None``: none) and, with
    ``line``, R's quartile line. ``group`` and ``ax`` as :func:`caterpillar`. Returns the
    Axes, one per coefficient."""
    res = _check_result(res, "qq_ranef")
    group = _group_name(res, group)
    z = _interval_z(level)
    modes = res.ranef[group]
    sd = _conditional_sd(res, group)
    axes = _panel_axes(ax, modes.shape[1], f"coefficient of {group}", ncols=3,
                       size=(3.5, 3.3), share="x")
    for j, (panel, coef) in enumerate(zip(axes, modes.columns, strict=True)):
        _qq_points(panel, modes.iloc[:, j].to_numpy(dtype=float), line=line,
                   half_width=None if z is None else z * sd[:, j])
        panel.set_title(f"{group}: {coef}")
    return axes


def _profile_table(source: Any, which: Any) -> pd.DataFrame:
    """A profile table: the caller's, or ``source.profile(which)`` for a fitted model."""
    from .results import LmerResult

    if isinstance(source, LmerResult):
        return source.profile(which, progress=False)
    if not isinstance(source, pd.DataFrame):
        raise ModelSpecError(
            "zeta() needs a profile table (res.profile()) or a fitted model, got "
            f"{type(source).__name__}"
        )
    missing = [c for c in _PROFILE_COLUMNS if c not in source.columns]
    if missing:
        raise ModelSpecError(f"the profile table has no column {missing}: pass the table "
                             "res.profile() returns")
    if which is None:
        return source
    names = list(dict.fromkeys(source["parameter"]))
    wanted = [which] if isinstance(which, str) else list(which)
    unknown = [w for w in wanted if w not in names]
    if unknown or not wanted:
        raise ModelSpecError(f"unknown parameter {unknown} in which; the profile table "
                             f"holds {names}")
    return source[source["parameter"].isin(wanted)]


def zeta(profile_or_res: Any, which: Any = None, ax: Any = None, *,
         level: float = 0.95) -> np.ndarray:
    """The profile zeta of each parameter against its value, as lme4's
    ``xyplot(profile(m))``, with dashed lines at ``zeta = +-z`` (1.96 for ``level`` 0.95):
    the profile interval is where the curve lies between them.

    Parameters
    ----------
    profile_or_res: a table from ``res.profile()`` (:func:`lmm_sparse.profile.profile`),
        or a fitted model, which is then profiled (``res.profile(which)``: all
        parameters by default, which takes a while for large models).
    which: parameter names to plot (for a model also "theta_" and "beta_"); default all
        of the table's.
    ax: an array of Axes, one per parameter; default a new figure, three panels a row.
    level: the confidence level whose quantiles are marked.

    Returns
    -------
    The Axes, one per parameter, in the table's order.
    """
    z = zeta_targets([level])[1]
    table = _profile_table(profile_or_res, which)
    names = list(dict.fromkeys(table["parameter"]))
    if not names:
        raise ModelSpecError("the profile table has no rows")
    axes = _panel_axes(ax, len(names), "parameter", ncols=3, size=(3.2, 3.0), share="y")
    for panel, name in zip(axes, names, strict=True):
        rows = table[table["parameter"] == name]
        for sign in (-1.0, 1.0):
            panel.axhline(sign * z, color="0.5", linestyle="--", linewidth=0.8,
                          gid="quantile")
        panel.plot(rows["value"].to_numpy(dtype=float), rows["zeta"].to_numpy(dtype=float),
                   "-o", markersize=3, gid="zeta")
        panel.set_xlabel(str(name))
    axes[0].set_ylabel("zeta")
    return axes
