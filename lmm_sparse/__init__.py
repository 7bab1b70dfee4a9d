"""lmm_sparse: linear mixed-effects models with lme4's formulas and answers, in Python.

The random-effects design (nested, crossed and grouped terms alike) is one sparse Z with a
block-diagonal relative covariance factor Lambda(theta); the penalized least-squares system
``Lambda' Z'Z Lambda + I`` is factored per evaluation (CHOLMOD, or a leading-block Schur
factorization where that is faster) and only theta is optimized.

>>> import lmm_sparse
>>> df = lmm_sparse.datasets.load("sleepstudy")
>>> res = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)", df)
>>> print(res.summary())  # doctest: +SKIP
"""

from . import datasets, errors
from .errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    LmmSparseError,
    ModelSpecError,
    RankDeficiencyWarning,
    SingularFitWarning,
)
from .lrt import anova
from .model import LinearMixedModel, lmer
from .results import LmerResult

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "anova",
    "LinearMixedModel",
    "LmerResult",
    "datasets",
    "errors",
    "LmmSparseError",
    "FormulaError",
    "DataError",
    "ModelSpecError",
    "ConvergenceWarning",
    "SingularFitWarning",
    "RankDeficiencyWarning",
    "__version__",
]
