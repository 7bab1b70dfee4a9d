"""The benchmark simulator (benchmarks/simulate.py): sizes, kept cells, determinism, columns.

Only the data are checked here; nothing is fitted or timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# `python -m pytest` from the repository root finds the benchmarks package by itself; a
# bare `pytest` puts only tests/ on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.simulate import (  # noqa: E402
    NSCALE_BASE,
    NSCALE_REPLICATES,
    SIM_DESIGNS,
    SimDesign,
    nscale_designs,
    simulate,
)

SMALL = SimDesign(subjects=30, items=40, kept=0.4)


def test_design_table_sizes():
    # sim360k is fixed by the specification: 1,500 subjects x 600 items at 0.4.
    assert SIM_DESIGNS["sim360k"] == SimDesign(1_500, 600, 0.4)
    assert SIM_DESIGNS["sim360k"].rows == 360_000
    assert SIM_DESIGNS["sim10k"].rows == 10_000
    for design in SIM_DESIGNS.values():
        assert design.rows == round(design.subjects * design.items * design.kept)


@pytest.mark.parametrize("name", ["sim10k", "sim100k"])
def test_row_count_and_kept_fraction(name):
    design = SIM_DESIGNS[name]
    df = simulate(design)
    assert len(df) == design.rows
    cells = df[["subj", "item"]].drop_duplicates()
    assert len(cells) == len(df)  # one row per kept cell
    assert len(cells) / (design.subjects * design.items) == pytest.approx(design.kept)
    assert df["subj"].nunique() == design.subjects
    assert df["item"].nunique() == design.items


def test_missing_cells_are_drawn_at_random():
    df = simulate(SMALL)
    per_subject = df.groupby("subj").size()
    # Not a fixed block pattern: the kept counts vary between subjects.
    assert per_subject.nunique() > 1
    assert per_subject.mean() == pytest.approx(SMALL.items * SMALL.kept)


def test_deterministic_under_the_seed():
    pd.testing.assert_frame_equal(simulate(SMALL), simulate(SMALL))
    pd.testing.assert_frame_equal(simulate(SMALL, seed=7), simulate(SMALL, seed=7))
    assert not simulate(SMALL, seed=7)["y"].equals(simulate(SMALL)["y"])


def test_columns_have_the_advertised_structure():
    df = simulate(SMALL)
    assert list(df.columns) == ["subj", "item", "a", "b", "y"]
    assert set(df["a"]) == {-0.5, 0.5}
    # a varies within subjects and within items (Latin-square counterbalancing), so both
    # the subject and the item slopes of a are identified.
    assert (df.groupby("subj")["a"].nunique() == 2).all()
    assert (df.groupby("item")["a"].nunique() == 2).all()
    for col in ("b", "y"):
        assert df[col].dtype == np.float64 and np.isfinite(df[col]).all()
    assert abs(df["b"].mean()) < 0.2 and df["b"].std() == pytest.approx(1, abs=0.15)
    # Zero-padded labels: text order is numeric order.
    labels = sorted(df["subj"].unique())
    assert labels[0] == "S01" and labels[-1] == f"S{SMALL.subjects}"


def test_nscale_replicates_cells_with_fixed_q():
    designs = nscale_designs()
    assert [d.replicates for d in designs.values()] == list(NSCALE_REPLICATES)
    base = simulate(designs[f"nscale_x{NSCALE_REPLICATES[0]}"])
    assert len(base) == NSCALE_BASE.subjects * NSCALE_BASE.items  # every cell kept
    r = NSCALE_REPLICATES[1]
    grown = simulate(designs[f"nscale_x{r}"])
    assert len(grown) == r * len(base)
    # Same subjects, items and predictor values (so the same q); only residuals differ.
    keys = ["subj", "item", "a", "b"]
    pd.testing.assert_frame_equal(grown[keys].drop_duplicates().reset_index(drop=True),
                                  base[keys])
    assert (grown.groupby(["subj", "item"]).size() == r).all()
    assert (grown.groupby(["subj", "item"])["y"].nunique() == r).all()
