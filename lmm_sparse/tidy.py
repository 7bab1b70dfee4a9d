"""One row per parameter, as R's ``broom.mixed::tidy()`` of an lmer fit.

Columns, with broom's names so that R and Python code read the same table:

* ``effect``: "fixed" or "ran_pars";
* ``group``: NA (None) for fixed effects, the grouping factor, or "Residual";
* ``term``: the coefficient name for fixed effects; ``sd__<coef>``, ``cor__<coef1>.<coef2>``
  and ``sd__Observation`` (the residual standard deviation) for the variance parameters;
* ``estimate``, ``std.error``, ``statistic``, ``df``, ``p.value``: for fixed effects the row
  of :meth:`LmerResult.coef_table` (Satterthwaite's t tests by default, lmerTest's table);
  NaN for the variance parameters, as broom.mixed gives none;
* ``conf.low``, ``conf.high`` with ``conf_int=True``: the rows of
  :meth:`LmerResult.confint` (``conf_method`` "wald", broom's default, "profile" or "boot").

The variance parameters come from ``result.varcorr`` in broom.mixed's order, which is
lme4's ``as.data.frame(VarCorr(m), order = "lower.tri")``: per term the lower triangle of
its covariance column by column (sd of the first coefficient, its correlations with the
later ones, sd of the second, ...), the residual last. Only the result's own tables are
read, so a result loaded from JSON (:mod:`lmm_sparse.serialize`) can be tidied too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import ModelSpecError

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["TIDY_COLUMNS", "EFFECTS", "RanPar", "ran_pars", "tidy"]

TIDY_COLUMNS = ("effect", "group", "term", "estimate", "std.error", "statistic", "df",
                "p.value")
EFFECTS = ("fixed", "ran_pars")
_CONF_METHODS = ("wald", "profile", "boot")
_RESIDUAL = "Residual"


@dataclass(frozen=True)
class RanPar:
    """One variance parameter of the fit.

    Fields
    ------
    group: the grouping factor, or "Residual".
    term: broom.mixed's name (``sd__Days``, ``cor__(Intercept).Days``, ``sd__Observation``).
    estimate: the standard deviation or correlation.
    confint_name: the row of ``result.confint()`` for it (``sd_Days|Subject``,
        ``cor_Days.(Intercept)|Subject``, ``sigma``).
    """

    group: str
    term: str
    estimate: float
    confint_name: str


def _ran_par(row: Any) -> RanPar:
    group, var1, var2 = row["grp"], row["var1"], row["var2"]
    if group == _RESIDUAL:
        return RanPar(_RESIDUAL, "sd__Observation", float(row["sdcor"]), "sigma")
    if pd.isna(var2):
        return RanPar(group, f"sd__{var1}", float(row["sdcor"]), f"sd_{var1}|{group}")
    # lme4's profile names a correlation by (row, column) of the lower triangle, broom.mixed
    # by (var1, var2) = (column, row): the same pair in the opposite order.
    return RanPar(group, f"cor__{var1}.{var2}", float(row["sdcor"]),
                  f"cor_{var2}.{var1}|{group}")


def ran_pars(varcorr: pd.DataFrame) -> list[RanPar]:
    """The variance parameters of ``varcorr`` in broom.mixed's (lower-triangle) order.

    ``varcorr`` lists each term's sds, then its correlations; here every sd is followed by
    the correlations of its coefficient with the later ones of the same group.
    """
    rows = [row for _, row in varcorr.iterrows()]
    is_cor = [not pd.isna(r["var2"]) and r["grp"] != _RESIDUAL for r in rows]
    pending = [i for i, cor in enumerate(is_cor) if cor]
    out: list[RanPar] = []
    for i, row in enumerate(rows):
        if is_cor[i]:
            continue
        out.append(_ran_par(row))
        # its correlations: later rows of the same group whose first coefficient it is
        mine = [j for j in pending if j > i and rows[j]["grp"] == row["grp"]
                and rows[j]["var1"] == row["var1"]]
        out.extend(_ran_par(rows[j]) for j in mine)
        pending = [j for j in pending if j not in mine]
    return out


def _effects(effects: str | Iterable[str]) -> tuple[str, ...]:
    chosen = (effects,) if isinstance(effects, str) else tuple(effects)
    unknown = [e for e in chosen if e not in EFFECTS]
    if unknown or not chosen:
        raise ModelSpecError(f"effects must be chosen among {EFFECTS}, got {effects!r}")
    return chosen


def _conf_method(method: str) -> str:
    key = str(method).strip().lower()
    if key not in _CONF_METHODS:
        raise ModelSpecError(f"conf_method must be one of {_CONF_METHODS}, got {method!r}")
    return key


def _fixed_rows(result: LmerResult, ddf: str | None) -> pd.DataFrame:
    table = result.coef_table(ddf=ddf)
    statistic = table["t_value"] if "t_value" in table else table["z_value"]
    df = table["df"] if "df" in table else np.full(len(table), np.nan)
    return pd.DataFrame({
        "effect": "fixed",
        "group": pd.Series([None] * len(table), dtype=object),
        "term": [str(name) for name in table.index],
        "estimate": table["estimate"].to_numpy(float),
        "std.error": table["std_error"].to_numpy(float),
        "statistic": np.asarray(statistic, float),
        "df": np.asarray(df, float),
        "p.value": table["p_value"].to_numpy(float),
    })


def _ran_par_rows(pars: list[RanPar]) -> pd.DataFrame:
    nan = np.full(len(pars), np.nan)
    return pd.DataFrame({
        "effect": "ran_pars",
        "group": pd.Series([p.group for p in pars], dtype=object),
        "term": [p.term for p in pars],
        "estimate": np.array([p.estimate for p in pars], dtype=float),
        "std.error": nan, "statistic": nan, "df": nan, "p.value": nan,
    })


def tidy(
    result: LmerResult,
    *,
    effects: str | Iterable[str] = EFFECTS,
    ddf: str | None = "satterthwaite",
    conf_int: bool = False,
    conf_level: float = 0.95,
    conf_method: str = "wald",
    **confint_options: Any,
) -> pd.DataFrame:
    """The fit as one row per parameter (see the module docstring).

    ``effects``: "fixed", "ran_pars" or both (default). ``ddf``: the df method of the fixed
    effects' tests, as :meth:`LmerResult.coef_table` (None: z tests, df NaN).
    ``conf_int``: add ``conf.low``/``conf.high`` from ``result.confint(conf_method,
    conf_level, **confint_options)`` (``nsim``, ``seed``, ``n_jobs``, ``progress`` for the
    bootstrap and the profile).
    """
    chosen = _effects(effects)
    method = _conf_method(conf_method) if conf_int else None
    if confint_options and not conf_int:
        raise ModelSpecError(f"{sorted(confint_options)} only apply with conf_int=True")
    pars = ran_pars(result.varcorr)
    parts = []
    if "fixed" in chosen:
        parts.append(_fixed_rows(result, ddf))
    if "ran_pars" in chosen:
        parts.append(_ran_par_rows(pars))
    table = pd.concat(parts, ignore_index=True)[list(TIDY_COLUMNS)]
    if method is not None:
        intervals = result.confint(method, conf_level, **confint_options)
        keys = ((list(result.fixef.index) if "fixed" in chosen else [])
                + ([p.confint_name for p in pars] if "ran_pars" in chosen else []))
        bounds = intervals.reindex(keys).to_numpy(float)
        table["conf.low"], table["conf.high"] = bounds[:, 0], bounds[:, 1]
    return table
