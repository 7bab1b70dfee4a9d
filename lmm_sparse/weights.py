"""Prior weights and offsets: lme4's ``lmer(..., weights = w, offset = o)``.

With prior weights w the residual of row i has variance ``sigma^2 / w_i``; an offset o is a
known term of the linear predictor, ``y = o + X beta + Z b + e``. lme4 evaluates both in
the data (a column name or one value per row), puts them in its model frame, so that a row
with a missing weight or offset is dropped with the others (``na.omit``), and refuses
negative weights.

Here they are resolved in three steps: :func:`per_row_columns` turns the arguments into
per-row arrays over the data (errors name the argument), the model frame carries them
through the complete-case rule under lme4's names ``(weights)`` and ``(offset)``, and
:func:`take_prior_weights` takes them back out of the frame and checks their values. The
arithmetic is in :mod:`lmm_sparse.crossprod` (the rows scaled by sqrt(w) before the one
pass) and :mod:`lmm_sparse.results` (fitted values with the offset, lme4's log-weights
term in the criterion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["PriorWeights", "WEIGHTS", "OFFSET", "per_row_columns", "take_prior_weights"]

# lme4's names for them in the model frame; no formula can name such a column.
WEIGHTS = "(weights)"
OFFSET = "(offset)"


@dataclass(frozen=True)
class PriorWeights:
    """The prior weights and offset of the rows used in the fit.

    Fields
    ------
    weights: positive prior weights, shape (n,), or None (all 1).
    offset_argument: the ``offset=`` argument's values, shape (n,), or None.
    offset_terms: the sum of the formula's ``offset(...)`` terms, shape (n,), or None.
    """

    weights: np.ndarray | None = None
    offset_argument: np.ndarray | None = None
    offset_terms: np.ndarray | None = None

    @property
    def offset(self) -> np.ndarray | None:
        """The whole offset (argument plus formula terms, as lme4 adds them), or None."""
        parts = [o for o in (self.offset_argument, self.offset_terms) if o is not None]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    @property
    def log_weights(self) -> float:
        """sum(log w): lme4's ``ldW``, subtracted from its deviance and REML criterion."""
        return 0.0 if self.weights is None else float(np.sum(np.log(self.weights)))

    def add_offset(self, eta: np.ndarray) -> np.ndarray:
        """``offset + eta`` (eta itself without an offset)."""
        return eta if self.offset is None else self.offset + eta

    def residual_sd(self, sigma: float) -> float | np.ndarray:
        """The residual standard deviation of every row, sigma / sqrt(w)."""
        return sigma if self.weights is None else sigma / np.sqrt(self.weights)


def _as_values(value: Any, data: pd.DataFrame, argument: str) -> np.ndarray:
    """One float per row of ``data`` (NaN where missing) from a column name or array."""
    if isinstance(value, str):
        if value not in data.columns:
            raise DataError(
                f"{argument}={value!r} is not a column of the data (columns: "
                f"{', '.join(map(str, data.columns[:20]))}{', ...' if data.shape[1] > 20 else ''})"
            )
        value = data[value]
    what = f"{argument} ({type(value).__name__})"
    if isinstance(value, pd.DataFrame):
        if value.shape[1] != 1:
            raise DataError(f"{what} must be one column, got {value.shape[1]} columns")
        value = value.iloc[:, 0]
    if isinstance(value, pd.Series):
        dtype = value.dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise DataError(f"{what} must be numeric, got values of type {dtype}")
        values = value.to_numpy(dtype=float, na_value=np.nan)
    else:
        raw = np.asarray(value)
        if raw.dtype.kind not in "iuf":
            raise DataError(f"{what} must be numeric, got values of type {raw.dtype}")
        values = raw.astype(float)
    if values.ndim != 1:
        raise DataError(f"{what} must be one value per row, got shape {values.shape}")
    if len(values) != len(data):
        raise DataError(
            f"{what} has {len(values)} values; the data has {len(data)} rows (one value "
            "per row of the data, as lme4 evaluates it in the data)"
        )
    return values


def per_row_columns(data: pd.DataFrame, weights: Any, offset: Any) -> dict[str, np.ndarray]:
    """The model frame's extra columns for lme4's ``weights``/``offset`` arguments: a
    column name of ``data`` or one number per row; None for neither."""
    out = {}
    if weights is not None:
        out[WEIGHTS] = _as_values(weights, data, "weights")
    if offset is not None:
        out[OFFSET] = _as_values(offset, data, "offset")
    return out


def _checked(values: np.ndarray, argument: str) -> np.ndarray:
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"{argument} has {int(bad.sum())} infinite value(s), first at position "
            f"{int(np.argmax(bad))} of the rows used in the fit"
        )
    return values


def take_prior_weights(frame: pd.DataFrame) -> tuple[pd.DataFrame, PriorWeights]:
    """The model frame without the ``(weights)``/``(offset)`` columns, and their values.

    Weights must be positive: lme4 refuses negative ones, and a zero weight makes its
    criterion infinite (log 0 in ``ldW``), so both are an error here; drop such rows.
    """
    extra = [name for name in (WEIGHTS, OFFSET) if name in frame.columns]
    if not extra:
        return frame, PriorWeights()
    values = {name: frame[name].to_numpy(dtype=float) for name in extra}
    frame = frame.drop(columns=extra)
    weights = values.get(WEIGHTS)
    if weights is not None:
        _checked(weights, "weights")
        bad = weights <= 0
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(
                f"weights must be positive: {int(bad.sum())} value(s) <= 0, first "
                f"{weights[first]:g} at position {first} of the rows used in the fit (lme4 "
                "refuses negative weights, and a zero weight makes its criterion infinite: "
                "drop those rows instead)"
            )
    offset = values.get(OFFSET)
    if offset is not None:
        _checked(offset, "offset")
    return frame, PriorWeights(weights=weights, offset_argument=offset)
