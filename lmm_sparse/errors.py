"""Exceptions and warnings raised by lmm_sparse.

Every error a user can cause subclasses :class:`LmmSparseError`, itself a
``ValueError``, so ``except ValueError`` keeps working for callers that do not
know our types. Messages name the column, term or value at fault.
"""

from __future__ import annotations

__all__ = [
    "LmmSparseError",
    "FormulaError",
    "DataError",
    "ModelSpecError",
    "LmmSparseWarning",
    "ConvergenceWarning",
    "SingularFitWarning",
    "RankDeficiencyWarning",
]


class LmmSparseError(ValueError):
    """Base class of every error caused by the user's formula or data."""


class FormulaError(LmmSparseError):
    """The formula cannot be parsed or names something that does not exist."""


class DataError(LmmSparseError):
    """The data cannot support the model (missing columns, bad values, no rows)."""


class ModelSpecError(LmmSparseError):
    """The model or test asked for cannot be done: formula and data are valid separately
    but the model is not estimable, or an argument is out of its range (reml, kernel,
    optimizer, ddf, type, level, nsim, ...)."""


class LmmSparseWarning(UserWarning):
    """Base class of lmm_sparse warnings."""


class ConvergenceWarning(LmmSparseWarning):
    """The optimizer stopped where the gradient or Hessian checks have doubts."""


class SingularFitWarning(LmmSparseWarning):
    """A variance is estimated at zero or a correlation at +-1 (boundary fit)."""


class RankDeficiencyWarning(LmmSparseWarning):
    """Fixed-effects columns were aliased and dropped."""
