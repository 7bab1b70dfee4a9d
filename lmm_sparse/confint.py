"""Confidence intervals for every parameter, as lme4's ``confint(m, oldNames = FALSE)``.

Rows: the standard deviations and correlations of each random-effect term (``sd_x|g``,
``cor_x.y|g``), ``sigma``, then the fixed effects. Three methods:

* ``"profile"`` (lme4's default): where the signed root of the likelihood-ratio
  statistic crosses the normal quantiles (:mod:`lmm_sparse.profile`);
* ``"wald"``: ``beta_j +- z_{1 - alpha/2} se_j`` for the fixed effects; the variance
  parameters get no Wald interval (NaN), as in lme4, because their sampling distribution
  is far from normal near zero;
* ``"boot"``: percentile intervals of a parametric bootstrap
  (:mod:`lmm_sparse.bootstrap`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .errors import ModelSpecError
from .profile.levels import check_level, percent_labels

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["CONFINT_METHODS", "confint", "wald_confint", "level_columns"]

CONFINT_METHODS = ("profile", "wald", "boot")


def level_columns(level: float) -> list[str]:
    """R's column names for a two-sided interval: ``["2.5 %", "97.5 %"]`` for 0.95."""
    check_level(level)
    return percent_labels(level)


def wald_confint(result: LmerResult, level: float = 0.95) -> pd.DataFrame:
    """Wald intervals of the fixed effects; NaN rows for the variance parameters."""
    from .parameters import varpar_names

    columns = level_columns(level)
    z = stats.norm.ppf((1 + level) / 2)
    se = np.sqrt(np.diag(result.vcov.to_numpy()))
    beta = result.fixef.to_numpy()
    fixed = pd.DataFrame(np.column_stack([beta - z * se, beta + z * se]),
                         index=result.fixef.index, columns=columns)
    varpar = pd.DataFrame(np.nan, index=varpar_names(result), columns=columns)
    return pd.concat([varpar, fixed])


def confint(
    result: LmerResult,
    method: str = "profile",
    level: float = 0.95,
    *,
    which: list[str] | None = None,
    nsim: int = 500,
    seed: int | None = None,
    boot_type: str = "perc",
    n_jobs: int | None = 1,
    progress: bool = True,
) -> pd.DataFrame:
    """Intervals by ``method`` (see the module docstring); ``which`` selects rows.

    Bootstrap options (lme4's defaults): ``nsim`` replicates, ``boot_type`` "perc"
    (percentile), "basic" or "norm"; ``seed`` makes them reproducible.
    """
    key = str(method).strip().lower()
    if key not in CONFINT_METHODS:
        raise ModelSpecError(f"method must be one of {CONFINT_METHODS}, got {method!r}")
    check_level(level)
    if key == "profile":
        from .profile import confint_profile

        table = confint_profile(result, level=level, which=which, progress=progress,
                                n_jobs=n_jobs)
    elif key == "wald":
        table = wald_confint(result, level)
    else:
        from .bootstrap import boot_confint

        boot = result.bootstrap(nsim=nsim, seed=seed, n_jobs=n_jobs, progress=progress)
        table = boot_confint(boot, level=level, type=boot_type)
    if which is not None and key != "profile":
        unknown = [w for w in which if w not in table.index]
        if unknown:
            raise ModelSpecError(f"unknown parameter(s) {unknown}; known: {list(table.index)}")
        table = table.loc[list(which)]
    return table
