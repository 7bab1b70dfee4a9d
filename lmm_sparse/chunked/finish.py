"""From the summed chunk sums to the in-memory path's cross-products.

The sums hold ``W = [1, X_s, y_s]`` with ``X_s = X - 1 shift'`` and ``y_s = y - y_shift``
(:mod:`~lmm_sparse.chunked.partial`). Any matrix whose columns are X's and y's columns
shifted by constants is ``W A`` for a small matrix A, so its sums are ``A' W'W A`` and
``Z'W A``: exact linear algebra on small matrices, no second look at the data. This gives
what :func:`~lmm_sparse.crossprod.make_cross_products` computes from the rows:

* the aliased columns, found from X's Gram matrix (:func:`independent_columns_gram`);
* X centred on its exact global column means when its first kept column is the intercept;
* ``y0 = y - X_c beta0`` with beta0 the least-squares coefficients, through the normal
  equations of the centred X (any beta0 gives the same fit; the in-memory path takes
  lstsq's, so the two differ by rounding only).

The shift is a pilot mean (of the first rows), so the columns of A that remove it are
small: uncentred columns lose no more precision than in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..crossprod import CrossProducts
from ..design import _RANK_TOL, drop_aliased
from ..errors import DataError
from .partial import PartialSums
from .scan import ChunkPlan

__all__ = ["FinishedDesign", "independent_columns_gram", "finish_cross_products"]

# A unit-scaled Gram matrix whose Cholesky diagonal stays above this (squared) is clearly
# of full rank: the in-memory path's fast test (design._independent_columns).
_CLEARLY_FULL_RANK = 1e-10


@dataclass(frozen=True)
class FinishedDesign:
    """The cross-products and what the fixed design needs besides its n rows.

    Fields
    ------
    cp: the cross-products, as the in-memory path builds them.
    names: kept column names of X; keep: their indices in the full X; dropped: aliased
        column names.
    y_norm: |y|, for the check that the fixed effects leave a residual.
    """

    cp: CrossProducts
    names: tuple[str, ...]
    keep: tuple[int, ...]
    dropped: tuple[str, ...]
    y_norm: float


def independent_columns_gram(gram: np.ndarray) -> list[int]:
    """A maximal set of linearly independent columns, earliest first, from X'X alone.

    The rule of the in-memory path (R's qr(), lme4's rank check): a column is dropped when
    the part of it left after projecting out the kept earlier columns is at most 1e-7 of
    its norm. From the Gram matrix that part is the square root of a Schur complement,
    ``g_jj - g_Sj' G_SS^-1 g_Sj``; exactly aliased columns (dummies summing to the
    intercept, a copied column) leave ~1e-8 of the norm at most, well under the threshold.
    """
    p = gram.shape[0]
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    if p == 0:
        return []
    unit = gram / np.outer(np.where(norms > 0, norms, 1.0), np.where(norms > 0, norms, 1.0))
    if np.all(norms > 0):
        try:
            R = np.linalg.cholesky(unit)
            if np.min(np.diag(R)) ** 2 > _CLEARLY_FULL_RANK:
                return list(range(p))
        except np.linalg.LinAlgError:
            pass
    keep: list[int] = []
    for j in range(p):
        if norms[j] == 0:
            continue
        left = unit[j, j]
        if keep:
            g = unit[keep, j]
            left -= g @ scipy.linalg.solve(unit[np.ix_(keep, keep)], g, assume_a="pos")
        if math.sqrt(max(left, 0.0)) > _RANK_TOL:
            keep.append(j)
    return keep


def _check_design(sums: PartialSums, plan: ChunkPlan) -> None:
    """The in-memory path's checks of the fixed design, from global information."""
    p_all = len(plan.names_all)
    if sums.n <= p_all:
        names = ", ".join(plan.names_all[:6]) + (", ..." if p_all > 6 else "")
        raise DataError(f"{sums.n} observations cannot estimate {p_all} fixed-effects "
                        f"columns ({names})")
    lo, hi = sums.y_range
    if lo == hi:
        raise DataError(
            f"response {plan.parsed.response!r} is constant (every value is {lo:g}): there "
            "is no variation for the model to explain (lme4: response is constant)"
        )


def finish_cross_products(sums: PartialSums, plan: ChunkPlan) -> FinishedDesign:
    """The cross-products of the whole data from its summed chunk sums."""
    _check_design(sums, plan)
    n, m = sums.n, sums.WtW.shape[0]
    p_all, G = m - 2, sums.WtW
    raw = np.zeros((m, p_all + 1))  # the uncentred X and y
    raw[1 : p_all + 1, :p_all] = np.eye(p_all)
    raw[0, :p_all], raw[0, p_all], raw[m - 1, p_all] = plan.shift, plan.y_shift, 1.0
    raw_gram = raw.T @ G @ raw
    keep = independent_columns_gram(raw_gram[:p_all, :p_all])
    dropped = drop_aliased(plan.names_all, keep, stacklevel=5)
    p = len(keep)
    means = G[0, 1 : p_all + 1][keep] / n + plan.shift[keep]
    centred = p >= 2 and bool(sums.ones[keep[0]])
    center = np.where(np.arange(p) == 0, 0.0, means) if centred else np.zeros(p)
    A = np.zeros((m, p + 1))  # [X_c, y_s]: X centred (or not), y shifted by its mean
    A[np.add(keep, 1), np.arange(p)] = 1.0
    A[0, :p] = plan.shift[keep] - center
    y_mean = G[0, m - 1] / n + plan.y_shift
    A[m - 1, p] = 1.0
    # With an intercept, shifting y by a constant changes only beta0's first element.
    A[0, p] = plan.y_shift - y_mean if centred else plan.y_shift
    M = A.T @ G @ A
    shift_beta = np.zeros(p)
    if p:
        shift_beta = scipy.linalg.cho_solve(scipy.linalg.cho_factor(M[:p, :p]), M[:p, p])
    A[:, p] -= A[:, :p] @ shift_beta  # y0 = y_s - X_c shift_beta
    XyXy = A.T @ G @ A
    beta0 = shift_beta.copy()
    if centred:
        beta0[0] += y_mean
    cp = CrossProducts(
        n=n, p=p, blocks=sums.blocks, ZtXy=tuple(Z @ A for Z in sums.ZtW),
        XyXy=(XyXy + XyXy.T) / 2, beta0=beta0, center=center,
    )
    return FinishedDesign(cp=cp, names=tuple(plan.names_all[j] for j in keep),
                          keep=tuple(keep), dropped=dropped,
                          y_norm=math.sqrt(max(raw_gram[p_all, p_all], 0.0)))
