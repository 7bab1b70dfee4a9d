"""Pass 2 over the chunks: each chunk's sums, and their merge.

A chunk contributes plain sums over its rows, with ``W = [1, X - shift, y - y_shift]``
(the full X, aliased columns included: which columns are aliased is known only from all
rows, and dropping a column of a sum is exact):

* W'W, (m, m) with m = p_all + 2;
* per term, Z_i'W as (levels, k_i, m), over the global levels (a level a chunk lacks has
  zeros), so these add position by position;
* the blocks of Z'Z: diagonal blocks over all levels (add by position), blocks between two
  terms only for the level pairs that co-occur in the chunk, so they are merged by their
  (row level, column level) keys.

The column of ones makes any later shift of X's and y's columns an exact linear map of
these sums (see :mod:`~lmm_sparse.chunked.finish`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..crossprod import ZtZBlock, random_effects_cross_products
from ..terms import make_re_structure
from .scan import ChunkPlan, complete_rows

__all__ = ["PartialSums", "chunk_sums", "merge_sums"]


@dataclass(frozen=True)
class PartialSums:
    """The sums of one chunk or of several, merged (terms in lme4's order).

    Fields
    ------
    n: complete rows.
    WtW: W'W.
    ZtW: per term Z_i'W, (levels, k_i, m).
    blocks: the nonzero blocks of the lower triangle of Z'Z, as
        :func:`~lmm_sparse.crossprod.random_effects_cross_products` gives them.
    ones: per column of the full X, whether every value is 1 (an intercept).
    y_range: smallest and largest response.
    """

    n: int
    WtW: np.ndarray
    ZtW: tuple[np.ndarray, ...]
    blocks: tuple[ZtZBlock, ...]
    ones: np.ndarray
    y_range: tuple[float, float]


def chunk_sums(chunk: pd.DataFrame, plan: ChunkPlan) -> PartialSums | None:
    """Pass 2's map step; None for a chunk without complete rows."""
    frame = complete_rows(chunk, plan.columns)
    if len(frame) == 0:
        return None
    y, X = plan.fixed_matrices(frame)
    W = np.column_stack([np.ones(len(y)), X - plan.shift, y - plan.y_shift])
    # The global numbers of levels give the same term order as the whole data.
    re = make_re_structure(plan.raw_terms(frame))
    blocks, ZtW = random_effects_cross_products(re, W)
    return PartialSums(n=len(y), WtW=W.T @ W, ZtW=ZtW, blocks=blocks,
                       ones=np.all(X == 1.0, axis=0), y_range=(float(y.min()), float(y.max())))


def _merge_block(a: ZtZBlock, b: ZtZBlock, ncols: int) -> ZtZBlock:
    if a.i == a.j:  # every level present in both, in the same order
        return ZtZBlock(i=a.i, j=a.j, rows=a.rows, cols=a.cols, C=a.C + b.C)
    keys = np.concatenate([a.rows * ncols + a.cols, b.rows * ncols + b.cols])
    C = np.concatenate([a.C, b.C])
    uniq, inverse = np.unique(keys, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    summed = np.add.reduceat(C[order], starts, axis=0)
    return ZtZBlock(i=a.i, j=a.j, rows=uniq // ncols, cols=uniq % ncols, C=summed)


def merge_sums(a: PartialSums | None, b: PartialSums | None) -> PartialSums | None:
    """Pass 2's reduce step (None is the empty chunk)."""
    if a is None or b is None:
        return b if a is None else a
    nlevels = [Z.shape[0] for Z in a.ZtW]
    return PartialSums(
        n=a.n + b.n,
        WtW=a.WtW + b.WtW,
        ZtW=tuple(x + y for x, y in zip(a.ZtW, b.ZtW, strict=True)),
        blocks=tuple(_merge_block(x, y, nlevels[x.j])
                     for x, y in zip(a.blocks, b.blocks, strict=True)),
        ones=a.ones & b.ones,
        y_range=(min(a.y_range[0], b.y_range[0]), max(a.y_range[1], b.y_range[1])),
    )
