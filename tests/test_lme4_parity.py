"""Parity with lme4 on real data: every case of the reference files, fitted and compared.

* ``cases.csv`` / ``lme4_public.json``: the classic ten data sets;
* ``cases_extra.csv`` / ``lme4_extra.json``: further real data sets and formulas (nested,
  crossed, correlated and uncorrelated slopes, a categorical slope, ``0 +`` and ``- 1``,
  transforms, ML and REML, a singular fit, several terms on one factor);
* ``cases_large.csv`` / ``lme4_large.json``: large crossed designs (marked slow).

The acceptance rules are implemented once, in ``conftest.compare_to_lme4``.
"""

from __future__ import annotations

import warnings

import pytest
from conftest import case_data, case_formula, compare_to_lme4, load_reference, read_cases

import lmm_sparse

SUITES = [
    ("cases.csv", "lme4_public.json", False),
    ("cases_extra.csv", "lme4_extra.json", False),
    ("cases_large.csv", "lme4_large.json", True),
]


def _params():
    params = []
    for cases_file, ref_file, slow in SUITES:
        for case in read_cases(cases_file):
            marks = [pytest.mark.slow] if slow else []
            params.append(pytest.param(case, ref_file, id=case["id"], marks=marks))
    return params


def _fit(case: dict, **kwargs):
    data = case_data(case)
    with warnings.catch_warnings():
        # singular fits and convergence doubts warn, as lme4 does; the values are checked
        warnings.simplefilter("ignore", lmm_sparse.errors.LmmSparseWarning)
        return lmm_sparse.lmer(case_formula(case), data, reml=case["reml"], **kwargs)


@pytest.mark.parametrize(("case", "ref_file"), _params())
def test_matches_lme4(case, ref_file):
    ref = load_reference(ref_file)[case["id"]]
    assert ref["formula"] == case["formula"], "cases file and reference disagree"
    res = _fit(case)
    compare_to_lme4(res, ref, label=case["id"])


def test_every_case_has_a_reference():
    for cases_file, ref_file, _ in SUITES:
        ids = [case["id"] for case in read_cases(cases_file)]
        assert len(ids) == len(set(ids)), f"duplicate ids in {cases_file}"
        assert sorted(ids) == sorted(load_reference(ref_file)), f"{cases_file} vs {ref_file}"


SMALL_EXTRA = [c for c in read_cases("cases_extra.csv")]


@pytest.mark.parametrize("kernel", ["cholmod", "schur"])
@pytest.mark.parametrize("case", SMALL_EXTRA, ids=[c["id"] for c in SMALL_EXTRA])
def test_kernels_match_lme4(case, kernel):
    """The forced CHOLMOD path and the Schur path reach lme4's answer too."""
    ref = load_reference("lme4_extra.json")[case["id"]]
    compare_to_lme4(_fit(case, kernel=kernel), ref, label=f"{case['id']}, kernel={kernel}")
