"""Simulated subjects x items designs for the benchmark suite (seeded, deterministic).

Every subject meets a random subset of the items (a fraction of the subject x item cells
is kept, drawn at random without replacement, so the row count is exact). Two predictors
vary within items and within subjects:

* ``a``: a +-0.5 condition contrast, counterbalanced as in a Latin square (the parity of
  subject + item number), so each subject and each item sees both conditions;
* ``b``: a continuous covariate, standard normal per cell.

The response follows ``y ~ 1 + a + b + (1 + a | subj) + (1 + a | item)``: correlated
random intercepts and ``a`` slopes by subject and by item, and a normal residual. A cell
may be replicated (``replicates`` rows with the same subject, item, a and b and their own
residuals): the n-scaling check grows n that way while q, the number of random effects,
stays fixed.

The sizes are the table ``SIM_DESIGNS`` (and ``NSCALE_*`` for the n-scaling check); the
benchmark suite and the tests read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FORMULA = "y ~ 1 + a + b + (1 + a | subj) + (1 + a | item)"
FACTORS = ("subj", "item")
SEED = 20240611

# True parameters: fixed effects (intercept, a, b), residual sd, and per grouping factor
# the sds of (intercept, a slope) and their correlation.
BETA = (0.5, 0.3, 0.2)
SIGMA = 1.0
SUBJ_SD, SUBJ_CORR = (0.6, 0.3), 0.4
ITEM_SD, ITEM_CORR = (0.4, 0.2), -0.3


@dataclass(frozen=True)
class SimDesign:
    subjects: int
    items: int
    kept: float  # fraction of subject x item cells present
    replicates: int = 1  # rows per present cell

    @property
    def cells(self) -> int:
        return round(self.kept * self.subjects * self.items)

    @property
    def rows(self) -> int:
        return self.cells * self.replicates


# The simulated workloads of the suite: id -> design. sim360k is fixed by the spec.
SIM_DESIGNS: dict[str, SimDesign] = {
    "sim10k": SimDesign(125, 200, 0.4),
    "sim100k": SimDesign(500, 500, 0.4),
    "sim360k": SimDesign(1_500, 600, 0.4),
    "sim1M": SimDesign(2_500, 1_000, 0.4),
}

# n-scaling check: one design, every cell present, each cell replicated r times.
NSCALE_BASE = SimDesign(100, 50, 1.0)
NSCALE_REPLICATES = (1, 4, 16)


def nscale_designs() -> dict[str, SimDesign]:
    return {
        f"nscale_x{r}": SimDesign(NSCALE_BASE.subjects, NSCALE_BASE.items, NSCALE_BASE.kept, r)
        for r in NSCALE_REPLICATES
    }


def _effects(rng: np.random.Generator, levels: int, sd: tuple[float, float], corr: float):
    """Correlated (intercept, slope) pairs, one row per level."""
    cov = np.array([[sd[0] ** 2, corr * sd[0] * sd[1]], [corr * sd[0] * sd[1], sd[1] ** 2]])
    return rng.multivariate_normal(np.zeros(2), cov, size=levels, method="cholesky")


def _labels(prefix: str, count: int) -> np.ndarray:
    """Zero-padded labels, so that text order is numeric order (as R's factor() sorts)."""
    width = len(str(count))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, count + 1)], dtype=object)


def kept_cells(design: SimDesign, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Subject and item indices of the present cells, in subject-major order."""
    total = design.subjects * design.items
    if design.cells == total:
        flat = np.arange(total)
    else:
        flat = np.sort(rng.choice(total, size=design.cells, replace=False))
    return np.divmod(flat, design.items)


@dataclass(frozen=True)
class _Cells:
    """The random effects and the present cells with their predictors (no residuals)."""

    subj_re: np.ndarray
    item_re: np.ndarray
    s: np.ndarray
    i: np.ndarray
    a: np.ndarray
    b: np.ndarray


def _cells(design: SimDesign, rng: np.random.Generator) -> _Cells:
    # Random effects first, so a design's effects do not depend on how many cells it keeps.
    subj_re = _effects(rng, design.subjects, SUBJ_SD, SUBJ_CORR)
    item_re = _effects(rng, design.items, ITEM_SD, ITEM_CORR)
    s, i = kept_cells(design, rng)
    a = np.where((s + i) % 2 == 0, -0.5, 0.5)
    b = rng.standard_normal(len(s))
    return _Cells(subj_re, item_re, s, i, a, b)


def _rows(design: SimDesign, cells: _Cells, rows: slice, rng: np.random.Generator
          ) -> pd.DataFrame:
    """The rows of the cells ``rows`` (a slice of the present cells), residuals from rng."""
    # Replicates repeat a cell's row (same subject, item, a and b) with fresh residuals.
    s, i, a, b = (np.repeat(v[rows], design.replicates)
                  for v in (cells.s, cells.i, cells.a, cells.b))
    mean = (
        BETA[0] + cells.subj_re[s, 0] + cells.item_re[i, 0]
        + (BETA[1] + cells.subj_re[s, 1] + cells.item_re[i, 1]) * a
        + BETA[2] * b
    )
    y = mean + SIGMA * rng.standard_normal(len(s))
    return pd.DataFrame({
        "subj": _labels("S", design.subjects)[s],
        "item": _labels("I", design.items)[i],
        "a": a,
        "b": b,
        "y": y,
    })


def simulate(design: SimDesign, seed: int = SEED) -> pd.DataFrame:
    """One data set: columns subj, item (text), a, b, y; ``design.rows`` rows."""
    rng = np.random.default_rng(seed)
    return _rows(design, _cells(design, rng), slice(None), rng)


def simulate_chunk(design: SimDesign, chunk: int, chunks: int, seed: int = SEED
                   ) -> pd.DataFrame:
    """Chunk ``chunk`` of ``chunks`` of a data set too big for one frame.

    The cells (and their random effects and predictors) are those of :func:`simulate`;
    the chunks split them in order, and each chunk draws its residuals from its own
    generator, so chunks can be made independently (in parallel) and the data set does
    not depend on which process makes which chunk. Its residuals differ from
    :func:`simulate`'s.
    """
    if not 0 <= chunk < chunks:
        raise ValueError(f"chunk must be in 0..{chunks - 1}, got {chunk}")
    cells = _cells(design, np.random.default_rng(seed))
    bounds = np.linspace(0, len(cells.s), chunks + 1).round().astype(int)
    rows = slice(bounds[chunk], bounds[chunk + 1])
    return _rows(design, cells, rows, np.random.default_rng([seed, chunk]))
