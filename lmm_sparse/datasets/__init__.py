"""Classic linear-mixed-model data sets shipped with lmm_sparse.

The data are stored as gzip-compressed CSV files in ``datasets/data`` and read with
:func:`pandas.read_csv` unchanged: text columns stay text and integer id columns stay
integers (the model code turns grouping columns into factors itself).

>>> from lmm_sparse import datasets
>>> datasets.list()[:3]
['sleepstudy', 'dietox', 'Penicillin']
>>> datasets.load("sleepstudy").shape
(180, 3)

See ``datasets/README.md`` for rows, columns, origin and licence of each data set.
"""

from __future__ import annotations

import builtins
import functools
from importlib import resources

import pandas as pd

__all__ = ["describe", "list", "list_datasets", "load"]

_LME4 = (
    "Distributed with the R package lme4: Bates, D., Maechler, M., Bolker, B. & Walker, S. "
    "(2015). Fitting Linear Mixed-Effects Models Using lme4. Journal of Statistical "
    "Software 67(1), 1-48. doi:10.18637/jss.v067.i01"
)
_NLME = (
    "Distributed with the R package nlme: Pinheiro, J. C. & Bates, D. M. (2000). "
    "Mixed-Effects Models in S and S-PLUS. Springer, New York."
)

# Canonical name -> description and citation (returned by describe()).
_DESCRIPTIONS: dict[str, str] = {
    "sleepstudy": (
        "sleepstudy: average reaction time (ms) per day for 18 subjects in a sleep-deprivation "
        "study (3 hours in bed per night), days 0-9. 180 rows; columns Reaction, Days, Subject. "
        "Classic model: Reaction ~ Days + (Days | Subject). "
        "Original study: Belenky, G. et al. (2003), Journal of Sleep Research 12, 1-12. " + _LME4
    ),
    "dietox": (
        "dietox: weekly weights of 72 slaughter pigs under vitamin E and copper diets. "
        "861 rows; columns Pig, Evit, Cu, Litter, Start, Weight, Feed, Time (Feed has NA). "
        "Classic model: Weight ~ Time + (1 | Pig) (the statsmodels MixedLM example). "
        "Lauridsen, C., Hojsgaard, S. & Sorensen, M. T. (1999), Journal of Animal Science 77, "
        "906-916; distributed with the R package geepack (Halekoh, Hojsgaard & Yan 2006, "
        "Journal of Statistical Software 15(2))."
    ),
    "Penicillin": (
        "Penicillin: diameters of growth-inhibition zones for 6 penicillin samples on 24 "
        "plates. 144 rows; columns diameter, plate, sample. "
        "Classic model (crossed): diameter ~ 1 + (1 | plate) + (1 | sample). "
        "Original source: Davies, O. L. & Goldsmith, P. L. (1972), Statistical Methods in "
        "Research and Production. " + _LME4
    ),
    "Pastes": (
        "Pastes: strength of a chemical paste, 3 casks sampled from each of 10 delivery "
        "batches, 2 assays per cask. 60 rows; columns strength, batch, cask, sample. "
        "Classic model (nested): strength ~ 1 + (1 | batch/cask). "
        "Original source: Davies, O. L. & Goldsmith, P. L. (1972), Statistical Methods in "
        "Research and Production. " + _LME4
    ),
    "Dyestuff": (
        "Dyestuff: yield of dyestuff (grams of standard colour) from 5 samples of each of 6 "
        "batches of an intermediate product. 30 rows; columns Batch, Yield. "
        "Classic model: Yield ~ 1 + (1 | Batch). "
        "Original source: Davies, O. L. & Goldsmith, P. L. (1972), Statistical Methods in "
        "Research and Production. " + _LME4
    ),
    "Dyestuff2": (
        "Dyestuff2: simulated data with the layout of Dyestuff (6 batches x 5 samples); "
        "the batch variance estimate is zero (singular fit). 30 rows; columns Batch, Yield. "
        "Classic model: Yield ~ 1 + (1 | Batch). "
        "Original source: Box, G. E. P. & Tiao, G. C. (1973), Bayesian Inference in "
        "Statistical Analysis. " + _LME4
    ),
    "InstEval": (
        "InstEval: university lecture evaluations by students at ETH Zurich (ratings 1-5). "
        "73421 rows; columns s (student), d (lecturer), studage, lectage, service, dept, y. "
        "Classic model (large, crossed): y ~ service + (1 | s) + (1 | d) + (1 | dept:service). "
        "Instructor-evaluation data from ETH Zurich as distributed with lme4. " + _LME4
    ),
    "ergoStool": (
        "ergoStool: effort (Borg scale) for 9 subjects to rise from each of 4 stool types. "
        "36 rows; columns effort, Type, Subject. "
        "Classic model: effort ~ Type + (1 | Subject). " + _NLME
    ),
    "Machines": (
        "Machines: productivity scores of 6 workers on 3 machine brands, 3 replicates each. "
        "54 rows; columns Worker, Machine, score. "
        "Classic model: score ~ Machine + (1 | Worker) + (1 | Worker:Machine). "
        "Original source: Milliken, G. A. & Johnson, D. E. (1992), Analysis of Messy Data, "
        "Vol. I. " + _NLME
    ),
    "kb07": (
        "kb07: response times from a crossed psycholinguistic experiment, 56 subjects x 32 "
        "items, with 2-level factors spkr, prec and load. 1789 rows; columns subj, item, "
        "spkr, prec, load, rt_trunc, rt_raw. Typical model: rt_trunc ~ 1 + spkr*prec*load + "
        "(1+spkr+prec+load | subj) + (1+spkr+prec+load | item). "
        "Kronmueller, E. & Barr, D. J. (2007). Perspective-free pragmatics: Broken precedents "
        "and the recovery-from-preemption hypothesis. Journal of Memory and Language 56, "
        "436-455; as distributed with the Julia package MixedModels.jl."
    ),
}

_CANONICAL: dict[str, str] = {name.lower(): name for name in _DESCRIPTIONS}


def _canonical(name: str) -> str:
    """Return the canonical spelling of ``name`` (case-insensitive) or raise ValueError."""
    key = str(name).strip().lower()
    if key.endswith(".csv.gz"):
        key = key[: -len(".csv.gz")]
    try:
        return _CANONICAL[key]
    except KeyError:
        raise ValueError(
            f"unknown data set {name!r}; available: {', '.join(_DESCRIPTIONS)}"
        ) from None


@functools.cache
def _read(canonical: str) -> pd.DataFrame:
    path = resources.files(__name__).joinpath("data", f"{canonical}.csv.gz")
    with path.open("rb") as fh:
        return pd.read_csv(fh, compression="gzip")


def list_datasets() -> builtins.list[str]:
    """Return the canonical names of the packaged data sets."""
    return [*_DESCRIPTIONS]


def load(name: str) -> pd.DataFrame:
    """Load a packaged data set by name (case-insensitive) as a new DataFrame.

    Columns are as in the CSV file, without conversions. Each call returns an
    independent copy, so modifying it does not affect later calls.
    """
    return _read(_canonical(name)).copy(deep=True)


def describe(name: str) -> str:
    """Return a short description of a data set with its origin and citation."""
    return _DESCRIPTIONS[_canonical(name)]


# Public name lmm_sparse.datasets.list(); defined last so nothing above sees it.
list = list_datasets
