"""t tests of each fixed effect and F tests of each fixed term, with a choice of df.

``ddf`` chooses the denominator degrees of freedom, as lmerTest's ``ddf`` argument:

* ``"satterthwaite"`` (:mod:`lmm_sparse.satterthwaite`), lmerTest's default;
* ``"kenward-roger"`` (:mod:`lmm_sparse.kenward_roger`, REML fits only): the small-sample
  adjusted covariance of beta and its df, as pbkrtest;
* ``"residual"``: n - p, the df of an ordinary regression (a rough upper bound);
* ``None``: no df, i.e. z tests (normal) and chi-square tests of q F (Wald), what
  lme4's own summary() and anova() imply without lmerTest.

The F tables follow lmerTest's columns: ``Mean Sq = F sigma^2`` (F before any
Kenward-Roger scaling), ``Sum Sq = NumDF Mean Sq``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from .contrasts import ANOVA_TYPES, contrasts
from .errors import ModelSpecError
from .satterthwaite import FTest, satterthwaite_df, satterthwaite_ftest, varpar_covariance

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["DDF_METHODS", "coef_table", "anova_table", "resolve_ddf", "resolve_type"]

DDF_METHODS = ("satterthwaite", "kenward-roger", "residual", None)
_TYPE_NAMES = {"1": 1, "2": 2, "3": 3, "I": 1, "II": 2, "III": 3}


def resolve_ddf(ddf: str | None) -> str | None:
    """The df method named by ``ddf`` (case-insensitive; lmerTest's spellings work)."""
    if ddf is None:
        return None
    key = str(ddf).strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {"kr": "kenward-roger", "kenwardroger": "kenward-roger", "lme4": None}
    if key in aliases:
        return aliases[key]
    if key not in DDF_METHODS:
        raise ModelSpecError(f"ddf must be one of {DDF_METHODS}, got {ddf!r}")
    return key


def resolve_type(type: int | str) -> int:
    """ANOVA type 1, 2 or 3 (also "I", "II", "III")."""
    if isinstance(type, str) and type.strip().upper() in _TYPE_NAMES:
        return _TYPE_NAMES[type.strip().upper()]
    if isinstance(type, int | np.integer) and not isinstance(type, bool) and type in ANOVA_TYPES:
        return int(type)
    raise ModelSpecError(f"type must be 1, 2 or 3 (or 'I', 'II', 'III'), got {type!r}")


def _cached(result: LmerResult, key: str, make):
    cache = result._cache
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _varpar(result: LmerResult):
    return _cached(result, "varpar", lambda: varpar_covariance(result))


def _kr(result: LmerResult):
    from .kenward_roger import kr_adjustment

    if result.model.prior.weights is not None:
        # pbkrtest (the reference) builds the residual covariance as sigma^2 I whatever the
        # weights, so there is no correct value to match: refuse rather than differ.
        raise ModelSpecError(
            "ddf='kenward-roger' is not available for a fit with prior weights (pbkrtest "
            "ignores lme4's weights); use ddf='satterthwaite'"
        )

    return _cached(result, "kenward_roger", lambda: kr_adjustment(result))


def coef_table(result: LmerResult, ddf: str | None = "satterthwaite") -> pd.DataFrame:
    """Estimate, std_error, df, t_value and p_value per fixed effect (z_value without df)."""
    method = resolve_ddf(ddf)
    beta = result.fixef.to_numpy()
    p = beta.size
    eye = np.eye(p)
    if method == "kenward-roger":
        from .kenward_roger import kr_ddf

        adj = _kr(result)
        se = np.sqrt(np.diag(np.asarray(adj.PhiA, float)))
        df = np.array([kr_ddf(adj, eye[j]) for j in range(p)])
    elif method == "satterthwaite":
        vc = _varpar(result)
        pairs = [satterthwaite_df(vc, eye[j]) for j in range(p)]
        se = np.sqrt([v for v, _ in pairs])
        df = np.array([d for _, d in pairs])
    else:
        se = np.sqrt(np.diag(result.vcov.to_numpy()))
        df = np.full(p, result.nobs - p, dtype=float) if method == "residual" else None
    stat = beta / se
    table = {"estimate": beta, "std_error": se}
    if df is None:
        table["z_value"] = stat
        table["p_value"] = 2 * stats.norm.sf(np.abs(stat))
    else:
        table["df"] = df
        table["t_value"] = stat
        table["p_value"] = 2 * stats.t.sf(np.abs(stat), df)
    return pd.DataFrame(table, index=result.fixef.index)


def _simple_ftest(result: LmerResult, L: np.ndarray, dendf: float) -> FTest:
    """Wald F with a fixed denominator df (inf: chi-square of q F on q df)."""
    beta = result.fixef.to_numpy()
    V = result.vcov.to_numpy()
    Lb = L @ beta
    q = np.linalg.matrix_rank(L @ V @ L.T)
    F = float(Lb @ np.linalg.pinv(L @ V @ L.T) @ Lb) / q
    pv = stats.chi2.sf(q * F, q) if math.isinf(dendf) else stats.f.sf(F, q, dendf)
    return FTest(F, int(q), dendf, float(pv), F)


def ftest(result: LmerResult, L: np.ndarray, ddf: str | None = "satterthwaite") -> FTest:
    """F test of ``L beta = 0`` (L: rows x p in the order of result.fixef)."""
    method = resolve_ddf(ddf)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    beta = result.fixef.to_numpy()
    if L.shape[1] != beta.size:
        raise ModelSpecError(f"L must have {beta.size} columns (one per fixed effect), "
                             f"got {L.shape[1]}")
    if method == "satterthwaite":
        return satterthwaite_ftest(_varpar(result), L, beta)
    if method == "kenward-roger":
        from .kenward_roger import kr_ftest

        t = kr_ftest(_kr(result), L, beta)
        return FTest(float(t.F), int(t.numdf), float(t.dendf), float(t.p_value),
                     float(t.unscaled))
    dendf = float(result.nobs - beta.size) if method == "residual" else math.inf
    return _simple_ftest(result, L, dendf)


def anova_table(
    result: LmerResult, type: int | str = 3, ddf: str | None = "satterthwaite"
) -> pd.DataFrame:
    """One F test per fixed term, as lmerTest's ``anova(m, type, ddf)``."""
    method = resolve_ddf(ddf)
    hypotheses = contrasts(result.model, resolve_type(type))
    rows = {}
    for term, L in hypotheses.items():
        t = ftest(result, L, method)
        mean_sq = t.unscaled * result.sigma**2
        rows[term] = {"sum_sq": mean_sq * t.numdf, "mean_sq": mean_sq, "num_df": t.numdf,
                      "den_df": t.dendf, "f_value": t.F, "p_value": t.p_value}
    columns = ["sum_sq", "mean_sq", "num_df", "den_df", "f_value", "p_value"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "term"
    table.attrs["heading"] = (f"Type {'I' * resolve_type(type)} analysis of variance, "
                              f"{method or 'no'} denominator df")
    return table
