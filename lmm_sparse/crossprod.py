"""Cross-products of the data with the random-effects structure, computed once.

Everything the n observations contribute to the PLS system is summarised here in O(n)
work: the nonzero blocks of Z'Z (per pair of levels that co-occur), Z'[X y] per term and
[X y]'[X y]. After this nothing in a fit touches n-sized arrays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from .terms import ReStructure

__all__ = [
    "ZtZBlock",
    "CrossProducts",
    "ZtZOperator",
    "ResponseUpdate",
    "inverse_gram",
    "make_cross_products",
    "working_response",
    "weighted_rows",
    "random_effects_cross_products",
    "block_values",
    "left_template",
    "right_template",
]


@dataclass(frozen=True)
class ZtZBlock:
    """The nonzero k_i x k_j blocks of Z'Z between terms i >= j.

    Fields
    ------
    i, j: term indices (i >= j, so these blocks lie in the lower triangle of Z'Z).
    rows: level of term i of each block, shape (nblocks,).
    cols: level of term j of each block, shape (nblocks,).
    C: sum over the rows where both levels occur of X_i[r]' X_j[r], (nblocks, k_i, k_j).
    """

    i: int
    j: int
    rows: np.ndarray
    cols: np.ndarray
    C: np.ndarray


@dataclass(frozen=True)
class CrossProducts:
    """Everything the data contribute to the PLS system, computed once.

    Fields
    ------
    n: number of observations.
    p: number of fixed-effects columns.
    blocks: the nonzero blocks of the lower triangle of Z'Z (diagonal terms first).
    ZtXy: per term, Z_i'[X y0] reshaped to (levels, k_i, p + 1).
    XyXy: [X y0]'[X y0], (p + 1, p + 1).
    beta0: the least-squares coefficients of y on X; ``y0 = y - X beta0``.
    center: column means subtracted from X's columns, when X's first column is the
        intercept (0 for the intercept itself; all 0 without one). "X" in the fields above
        is this centred X_c = X S, S = I - e_1 center'.

    X enters centred. The model is the same (X_c spans the same space; beta_c = S^-1 beta
    changes only the intercept, and det S = 1 leaves log det(R_X'R_X) unchanged), but an
    uncentred covariate (a year, x + 1e6) no longer makes X'X - W'W a small difference of
    huge numbers: measured, x + 1e6 moved the criterion by up to 4e-6 relative before.
    :meth:`from_y0` and :meth:`to_y0` convert between the two coordinates.
    log_weights: sum(log w) of the prior weights (lme4's ldW; 0 without weights).

    With prior weights w and an offset o (lme4's ``weights``, ``offset``), X, y and Z enter
    as W^1/2 X, W^1/2 (y - o) and W^1/2 Z (:func:`working_response`, :func:`weighted_rows`):
    the residual variance sigma^2 / w_i becomes sigma^2 for the scaled rows, so the PLS
    system and its criterion are those of an unweighted model, except that the density of
    y carries the Jacobian: lme4's criterion is this one minus ``log_weights``.

    The response enters as its least-squares residual y0. The PLS solution is the same up
    to ``beta = beta(y0) + beta0`` (adding X c to y only shifts beta by c), but pwrss is no
    longer a small difference of large cross-products: without this the criterion carries
    rounding noise of ~1e-12 relative, which a gradient-based optimizer's line search
    chases (measured: 73 instead of 17 evaluations on lexdec).
    """

    n: int
    p: int
    blocks: tuple[ZtZBlock, ...]
    ZtXy: tuple[np.ndarray, ...]
    XyXy: np.ndarray
    beta0: np.ndarray
    center: np.ndarray
    log_weights: float = 0.0

    def from_y0(self, beta_y0: np.ndarray, RX_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """beta (fitted to y0, centred X) and R_X of the centred X -> beta and R_X of X.

        beta = S (beta_y0 + beta0); R_X = R_X,c S^-1, S^-1 = I + e_1 center': only the first
        row of R_X changes, so it stays upper triangular.
        """
        beta = beta_y0 + self.beta0
        if not self.center.any():
            return beta, RX_c
        beta = beta.copy()
        beta[0] -= self.center @ beta
        RX = RX_c.copy()
        RX[0] += RX_c[0, 0] * self.center
        return beta, RX

    def to_y0(self, beta: np.ndarray) -> np.ndarray:
        """beta of X -> the coordinates the cross-products use (centred X, fitted to y0)."""
        if not self.center.any():
            return beta - self.beta0
        beta_c = np.array(beta, dtype=float)
        beta_c[0] += self.center @ beta_c
        return beta_c - self.beta0

    def centred_RX(self, RX: np.ndarray) -> np.ndarray:
        """R_X of X -> R_X of the centred X (R_X,c = R_X S)."""
        if not self.center.any():
            return RX
        RX_c = RX.copy()
        RX_c[0] -= RX[0, 0] * self.center
        return RX_c


def inverse_gram(R: np.ndarray) -> np.ndarray:
    """``(R'R)^{-1}`` for an upper-triangular R, through R's triangular inverse; for R_X it
    is vcov(beta) / sigma^2, the matrix Satterthwaite, the profile and the gradient use."""
    if R.shape[0] == 0:
        return np.zeros((0, 0))
    # LAPACK directly: scipy's solve_triangular wrapper costs more than a small p's work,
    # and the criterion's gradient asks for this at every evaluation
    Rinv, info = scipy.linalg.lapack.dtrtri(R, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"R_X is singular (dtrtri info {info})")
    return Rinv @ Rinv.T


def centering(X: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Column means to subtract when X's first column is the intercept (see CrossProducts);
    with prior weights the weighted means, which leave the weighted columns orthogonal to
    the weighted intercept (any vector gives the same model: X S for the same S)."""
    p = X.shape[1]
    if p < 2 or not np.all(X[:, 0] == 1.0):
        return np.zeros(p)
    center = X.mean(axis=0) if weights is None else np.average(X, axis=0, weights=weights)
    center[0] = 0.0
    return center


def working_response(
    y: np.ndarray, weights: np.ndarray | None, offset: np.ndarray | None
) -> np.ndarray:
    """W^1/2 (y - offset), the response the cross-products hold (y itself without either)."""
    if offset is not None:
        y = y - offset
    return y if weights is None else y * np.sqrt(weights)


def weighted_rows(
    re: ReStructure, X: np.ndarray, weights: np.ndarray
) -> tuple[ReStructure, np.ndarray]:
    """The structure and X with every row scaled by sqrt(w): W^1/2 Z and W^1/2 X.

    Only the terms' dense model matrices change (Z's pattern comes from the level codes), so
    the scaled structure has the same levels, layout and theta as the original.
    """
    s = np.sqrt(weights)[:, None]
    terms = tuple(dataclasses.replace(t, X=t.X * s) for t in re.terms)
    return dataclasses.replace(re, terms=terms), X * s


def _level_sums(codes: np.ndarray, nlev: int) -> sp.csr_matrix:
    """The (nlev, n) 0/1 matrix whose product with a column sums it within each level."""
    n = len(codes)
    return sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(nlev, n))


def _grouped_cross(S: sp.csr_matrix, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """out[g] = sum over rows r in level g (S = _level_sums) of outer(A[r], B[r]):
    (nlev, kA, kB)."""
    nlev = S.shape[0]
    out = np.empty((nlev, A.shape[1], B.shape[1]))
    for a in range(A.shape[1]):
        out[:, a, :] = S @ (A[:, a : a + 1] * B)
    return out


def _pair_block(re: ReStructure, i: int, j: int) -> ZtZBlock | None:
    ti, tj = re.terms[i], re.terms[j]
    key = ti.codes * tj.nlevels + tj.codes
    pair, uniq = pd.factorize(key, sort=True)
    C = _grouped_cross(_level_sums(pair.astype(np.int64), len(uniq)), ti.X, tj.X)
    return ZtZBlock(i=i, j=j, rows=uniq // tj.nlevels, cols=uniq % tj.nlevels, C=C)


def make_cross_products(
    re: ReStructure,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> CrossProducts:
    """All cross-products of the PLS system in one pass over the data, O(n p^2).

    ``weights``, ``offset``: lme4's prior weights (positive) and offset per row, or None;
    the rows are weighted before the pass (see CrossProducts).
    """
    center = centering(X, weights)
    if center.any():
        X = X - center
    y = working_response(y, weights, offset)
    if weights is not None:
        re, X = weighted_rows(re, X, weights)
    beta0 = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    Xy = np.column_stack([X, y - X @ beta0])
    blocks, ZtXy = random_effects_cross_products(re, Xy)
    return CrossProducts(
        n=len(y), p=X.shape[1], blocks=blocks, ZtXy=ZtXy, XyXy=Xy.T @ Xy, beta0=beta0,
        center=center, log_weights=0.0 if weights is None else float(np.sum(np.log(weights))),
    )


def random_effects_cross_products(
    re: ReStructure, M: np.ndarray
) -> tuple[tuple[ZtZBlock, ...], tuple[np.ndarray, ...]]:
    """The blocks of Z'Z and, per term, Z_i'M as (levels, k_i, M's columns): plain sums
    over the rows, so the sums over the chunks of a data set add up to the whole's (the
    out-of-core fit, :mod:`lmm_sparse.chunked`, relies on this)."""
    blocks = []
    sums = [_level_sums(t.codes, t.nlevels) for t in re.terms]  # each made once, used twice
    for i, (term, S) in enumerate(zip(re.terms, sums, strict=True)):
        levels = np.arange(term.nlevels)
        blocks.append(ZtZBlock(i=i, j=i, rows=levels, cols=levels,
                               C=_grouped_cross(S, term.X, term.X)))
    for i in range(len(re.terms)):
        for j in range(i):
            blocks.append(_pair_block(re, i, j))
    ZtM = tuple(_grouped_cross(S, t.X, M) for t, S in zip(re.terms, sums, strict=True))
    return tuple(blocks), ZtM


class ResponseUpdate:
    """The cross-products of the same model with another response, in O(nnz(Z) + n p).

    A new y changes only Z'y0, X'y0, y0'y0 and beta0 (y0 = y - X beta0); the blocks of Z'Z,
    Z'X and X'X are shared with the original cross-products, so a refit's kernel keeps its
    structure (lme4's refit() likewise only resets the response). Built once per model:
    Z' as a CSR matrix and the Cholesky factor of X'X (the leading block of ``XyXy``).

    beta0 comes from the normal equations with one step of iterative refinement, which
    leaves an X-component in y0 of order eps * cond(X)^2 * |y| at worst: negligible
    against y0 itself, which is all beta0 is for (see CrossProducts; any beta0 gives the
    same fit, beta is corrected by it).

    ``weights``, ``offset``: those the cross-products were made with; a new y is taken on
    the original scale and transformed as the first one was (:func:`working_response`).
    """

    def __init__(
        self,
        re: ReStructure,
        X: np.ndarray,
        cp: CrossProducts,
        weights: np.ndarray | None = None,
        offset: np.ndarray | None = None,
    ) -> None:
        X = X - cp.center if cp.center.any() else X
        if weights is not None:
            re, X = weighted_rows(re, X, weights)
        self.cp, self.X = cp, X  # as the cp hold it
        self._weights, self._offset = weights, offset
        self._Zt = re.Z().T.tocsr()
        self._sizes = [t.nlevels * t.k for t in re.terms]
        p = cp.p
        self._XtX_chol = scipy.linalg.cho_factor(cp.XyXy[:p, :p], lower=True) if p else None

    def _beta0(self, y: np.ndarray) -> np.ndarray:
        if self._XtX_chol is None:
            return np.zeros(0)
        beta0 = scipy.linalg.cho_solve(self._XtX_chol, self.X.T @ y)
        return beta0 + scipy.linalg.cho_solve(self._XtX_chol, self.X.T @ (y - self.X @ beta0))

    def __call__(self, y: np.ndarray) -> CrossProducts:
        cp, p = self.cp, self.cp.p
        y = working_response(y, self._weights, self._offset)
        beta0 = self._beta0(y)
        y0 = y - self.X @ beta0 if p else y
        Zty0 = self._Zt @ y0
        ZtXy, start = [], 0
        for old, size in zip(cp.ZtXy, self._sizes, strict=True):
            part = old.copy()  # Z_i'X is unchanged; only the last column is new
            part[:, :, p] = Zty0[start : start + size].reshape(part.shape[:2])
            ZtXy.append(part)
            start += size
        XyXy = cp.XyXy.copy()
        XyXy[:p, p] = XyXy[p, :p] = self.X.T @ y0
        XyXy[p, p] = y0 @ y0
        return dataclasses.replace(cp, ZtXy=tuple(ZtXy), XyXy=XyXy, beta0=beta0)


def block_values(block: ZtZBlock, templates: list[np.ndarray]) -> np.ndarray:
    """The blocks of Lambda' Z'Z Lambda: T_i' C T_j for every stored block, (nblocks, k_i, k_j).

    Two BLAS matrix products over the stacked blocks instead of one small product per block.
    """
    Ti, Tj = templates[block.i], templates[block.j]
    if Ti.shape == (1, 1) and Tj.shape == (1, 1):
        return block.C * (Ti[0, 0] * Tj[0, 0])
    return left_template(Ti, right_template(block.C, Tj))


def right_template(C: np.ndarray, T: np.ndarray) -> np.ndarray:
    """C_n T for stacked blocks (n, k_i, k_j) and a lower-triangular T.

    As k_j^2 / 2 scaled sums of length-n slices rather than one (n k_i x k_j) @ T product:
    a BLAS call on such a tall, thin matrix was several times slower (0.5 s against 0.09 s
    for a million 2 x 2 blocks, with the evaluation's second BLAS thread on a busy core).
    """
    if T.shape == (1, 1):
        return C * T[0, 0]
    k = T.shape[0]
    out = np.empty(C.shape)
    for b in range(k):  # column b of C T = sum over a >= b of C[:, :, a] T[a, b]
        np.multiply(C[:, :, b], T[b, b], out=out[:, :, b])
        for a in range(b + 1, k):
            out[:, :, b] += C[:, :, a] * T[a, b]
    return out


def left_template(T: np.ndarray, C: np.ndarray) -> np.ndarray:
    """T' C_n for stacked blocks (n, k_i, k_j) and a lower-triangular T (as
    :func:`right_template`: row c of T' C = sum over a >= c of T[a, c] C[:, a, :])."""
    if T.shape == (1, 1):
        return C * T[0, 0]
    k = T.shape[0]
    out = np.empty(C.shape)
    for c in range(k):
        np.multiply(C[:, c, :], T[c, c], out=out[:, c, :])
        for a in range(c + 1, k):
            out[:, c, :] += C[:, a, :] * T[a, c]
    return out


class ZtZOperator:
    """Multiplies Z'Z by a dense matrix through the stored blocks, O(nnz(Z'Z) m).

    Built once per workspace: per block, the sparse 0/1 matrices that add the block
    products into the rows of each level (a scatter-add that, unlike ``np.add.at``, is a
    single sparse product). ``lead_cross``, where a kernel holds it: ``Z_1'Z_2`` as a dense
    q1 x q2 array (term 0 against all the others, zeros included); the blocks of those
    pairs are then two dense BLAS products instead of a million small ones.
    """

    def __init__(
        self, re: ReStructure, cp: CrossProducts, lead_cross: np.ndarray | None = None
    ) -> None:
        self.re, self.cp, self._lead_cross = re, cp, lead_cross
        self._blocks = [b for b in cp.blocks if lead_cross is None or not (b.i > 0 and b.j == 0)]
        self._sum_rows, self._sum_cols = [], []
        for b in self._blocks:
            nb = len(b.rows)
            ones = np.ones(nb)
            self._sum_rows.append(
                sp.csr_matrix((ones, (b.rows, np.arange(nb))), shape=(re.terms[b.i].nlevels, nb))
            )
            self._sum_cols.append(
                sp.csr_matrix((ones, (b.cols, np.arange(nb))), shape=(re.terms[b.j].nlevels, nb))
            )

    def times(self, V: list[np.ndarray]) -> list[np.ndarray]:
        """Z'Z V with V and the result given per term as (levels, k_i, m) arrays."""
        out = [np.zeros_like(v) for v in V]
        if self._lead_cross is not None and len(V) > 1:
            G, m = self._lead_cross, V[0].shape[2]
            rest = np.concatenate([v.reshape(-1, m) for v in V[1:]], axis=0)
            out[0] += (G @ rest).reshape(out[0].shape)
            cross, start = G.T @ V[0].reshape(-1, m), 0
            for o in out[1:]:
                o += cross[start : start + o.shape[0] * o.shape[1]].reshape(o.shape)
                start += o.shape[0] * o.shape[1]
        for b, sum_rows, sum_cols in zip(self._blocks, self._sum_rows, self._sum_cols,
                                         strict=True):
            nb, ki, kj = b.C.shape
            m = V[b.j].shape[2]
            out[b.i] += (sum_rows @ (b.C @ V[b.j][b.cols]).reshape(nb, ki * m)).reshape(-1, ki, m)
            if b.i != b.j:
                CtV = b.C.transpose(0, 2, 1) @ V[b.i][b.rows]
                out[b.j] += (sum_cols @ CtV.reshape(nb, kj * m)).reshape(-1, kj, m)
        return out
