"""The workloads of the benchmark suite: which data, which formula, how each library sees it.

* real data: InstEval (packaged) and the rows of ``tests/data/reference/cases_large.csv``
  (read from that file, so the suite fits exactly the models the parity tests check);
* simulated subjects x items designs (:mod:`benchmarks.simulate`, sizes ``SIM_DESIGNS``);
* the n-scaling check: one design with every cell replicated 1, 4 and 16 times.

A workload is plain data (it goes to the worker processes as JSON); :func:`load_data`
turns it into the data frame every library fits, with the factor columns as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .common import REPO, StatsmodelsSpec, as_factors
from .simulate import FACTORS as SIM_FACTORS
from .simulate import FORMULA as SIM_FORMULA
from .simulate import SIM_DESIGNS, nscale_designs, simulate

# The packaged data sets are read from their files, as lmm_sparse.datasets.load() reads
# them, without importing lmm_sparse: the peak memory of a mixedlm, statsmodels or data
# writing process then holds nothing of lmm_sparse's.
PACKAGED = REPO / "lmm_sparse" / "datasets" / "data"
CASES_LARGE = REPO / "tests" / "data" / "reference" / "cases_large.csv"
TEST_DATA = REPO / "tests" / "data" / "datasets"
# Above this many entries of the dense n x q variance-component design that statsmodels
# builds (through patsy) for one all-rows group, it is not attempted: 2e7 doubles are
# 160 MB, and each of its evaluations works on that matrix (O(n q^2) for the solves).
STATSMODELS_MAX_DENSE = 2e7

KINDS = ("real", "sim", "nscale")


@dataclass(frozen=True)
class Workload:
    id: str
    kind: str  # one of KINDS
    data: str  # packaged or tests/data/datasets name, or a simulate design id
    formula: str  # lme4 syntax, used verbatim by lmm_sparse, lme4 and mixedlm
    reml: bool
    factors: tuple[str, ...]  # columns made factors: text in Python, factor() in R

    @property
    def criterion_name(self) -> str:
        return "REML" if self.reml else "ML deviance"


def _real_workloads() -> list[Workload]:
    rows = [
        Workload("InstEval", "real", "InstEval",
                 "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", False,
                 ("s", "d", "dept", "service")),
    ]
    table = pd.read_csv(CASES_LARGE, dtype=str, keep_default_na=False)
    for case in table.to_dict("records"):
        rows.append(Workload(
            case["id"], "real", case["data"], case["formula"],
            case["reml"].strip().upper() == "TRUE",
            tuple(f for f in case["factors"].split(";") if f),
        ))
    return rows


def all_workloads() -> list[Workload]:
    """Every workload of the suite, in the order they run (small to large within a kind)."""
    sims = [Workload(name, "sim", name, SIM_FORMULA, False, SIM_FACTORS) for name in SIM_DESIGNS]
    nscale = [
        Workload(name, "nscale", name, SIM_FORMULA, False, SIM_FACTORS)
        for name in nscale_designs()
    ]
    return [*_real_workloads(), *sims, *nscale]


def data_path(name: str) -> Path:
    """The file of a real data set: packaged, else tests/data/datasets."""
    for folder in (PACKAGED, TEST_DATA):
        if (folder / f"{name}.csv.gz").is_file():
            return folder / f"{name}.csv.gz"
    raise FileNotFoundError(f"data set {name!r} is neither in {PACKAGED} nor in {TEST_DATA}")


def load_data(w: Workload) -> pd.DataFrame:
    if w.kind == "sim":
        df = simulate(SIM_DESIGNS[w.data])
    elif w.kind == "nscale":
        df = simulate(nscale_designs()[w.data])
    else:
        df = pd.read_csv(data_path(w.data))
    return as_factors(df, w.factors)


def design_rows(w: Workload) -> int | None:
    """Rows of a simulated design without simulating it (None for real data)."""
    designs = {**SIM_DESIGNS, **nscale_designs()}
    return designs[w.data].rows if w.kind in ("sim", "nscale") else None


# --------------------------------------------------------------------------- statsmodels

_BAR = re.compile(r"\(\s*([^()|]+?)\s*(\|\|?)\s*([^()|]+?)\s*\)")


def _top_level_chunks(rhs: str) -> list[str]:
    """The right-hand side split at the '+' signs outside parentheses."""
    chunks, depth, start = [], 0, 0
    for pos, char in enumerate(rhs):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "+" and depth == 0:
            chunks.append(rhs[start:pos].strip())
            start = pos + 1
    return [*chunks, rhs[start:].strip()]


def _fixed_part(formula: str) -> str:
    """The formula without its random-effects terms (``y ~ 1`` if nothing is left)."""
    lhs, _, rhs = formula.partition("~")
    kept = [c for c in _top_level_chunks(rhs) if c and not _BAR.fullmatch(c)]
    return f"{lhs.strip()} ~ {' + '.join(kept) or '1'}"


def _vc_term(group: str) -> str:
    return "0 + " + ":".join(f"C({g.strip()})" for g in group.split(":"))


def statsmodels_spec(w: Workload) -> tuple[StatsmodelsSpec | None, str]:
    """The workload written for statsmodels' MixedLM, or None and why it cannot be.

    MixedLM has one grouping column with a correlated random-effects covariance, plus
    independent scalar variance components within its groups. So one term ``(x | g)`` is
    ``groups=g, re_formula="~x"``; crossed random intercepts ``(1 | a) + (1 | b)`` are
    variance components in one group of all rows; correlated slopes on crossed factors
    have no such form.
    """
    terms = _BAR.findall(w.formula)
    fixed = _fixed_part(w.formula)
    if len(terms) == 1 and terms[0][1] == "|" and ":" not in terms[0][2]:
        lhs, _, group = terms[0]
        return StatsmodelsSpec(fixed, groups=group, re_formula=f"~{lhs}", re_term=group), ""
    if terms and all(lhs == "1" and bar == "|" for lhs, bar, _ in terms):
        vc = {group: _vc_term(group) for _, _, group in terms}
        return StatsmodelsSpec(fixed, groups=None, re_formula="0", vc_formula=vc), ""
    return None, (
        "correlated random slopes on crossed factors (MixedLM takes crossed "
        "factors only as independent variance components in one group)"
    )


def statsmodels_too_large(spec: StatsmodelsSpec, df: pd.DataFrame) -> str:
    """Why statsmodels is not attempted on this data ("" if it is)."""
    if spec.vc_formula is None:
        return ""
    q = sum(
        len(df[[g.strip() for g in group.split(":")]].drop_duplicates())
        for group in spec.vc_formula
    )
    entries = len(df) * q
    if entries <= STATSMODELS_MAX_DENSE:
        return ""
    return (
        f"one group of n={len(df):,} rows with q={q:,} variance-component "
        f"columns, built densely by patsy (n*q*8 B = {entries * 8 / 1e9:,.1f} GB) and worked "
        f"on in every evaluation, O(n q^2)"
    )


def describe_source(w: Workload) -> str:
    if w.kind in ("sim", "nscale"):
        return f"simulated ({w.data}, benchmarks/simulate.py)"
    path = data_path(w.data).relative_to(REPO)
    if path.parent == PACKAGED.relative_to(REPO):
        return f"`lmm_sparse.datasets.load({w.data!r})` (`{path}`)"
    return f"`{path}`"
