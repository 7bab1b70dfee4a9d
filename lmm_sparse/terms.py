"""The random-effects structure: Z, the Lambda(theta) template and the theta layout.

This is lme4's ``reTrms`` as a frozen object. Terms are sorted by decreasing number of
levels (lme4's order, which also tends to give CHOLMOD a good elimination order). Term
``i`` with ``k_i`` coefficients and ``l_i`` levels owns the columns
``offsets[i] : offsets[i] + l_i * k_i`` of Z, level-major: column
``offsets[i] + level * k_i + j`` holds coefficient ``j`` of ``level``.

Lambda(theta) is block diagonal: for term ``i`` the same lower-triangular ``k_i x k_i``
template ``T_i`` repeated for every level. ``T_i`` is filled column-major from its slice
of theta (lme4's order: for k = 2, ``theta = [T11, T21, T22]``), so that the covariance of
one level's effects is ``sigma^2 T_i T_i'``. Diagonal elements are bounded below by 0,
off-diagonal ones are free.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from .design import RawTerm

__all__ = ["ReStructure", "make_re_structure", "lme4_term_order", "template_times"]


@dataclass(frozen=True)
class ReStructure:
    """Frozen random-effects structure (lme4's reTrms).

    Fields
    ------
    terms: the raw terms in lme4's order (decreasing number of levels).
    offsets: first column of each term in Z (lme4's Gp without its last entry), length m.
    theta_offsets: first element of each term's slice of theta, length m + 1.
    theta0: start values: 1 on template diagonals, 0 elsewhere.
    lower: lower bounds: 0 on diagonals, -inf elsewhere.
    q: number of columns of Z.
    """

    terms: tuple[RawTerm, ...]
    offsets: tuple[int, ...]
    theta_offsets: tuple[int, ...]
    theta0: np.ndarray
    lower: np.ndarray
    q: int

    @property
    def ntheta(self) -> int:
        return len(self.theta0)

    def term_theta(self, theta: np.ndarray, i: int) -> np.ndarray:
        return theta[self.theta_offsets[i] : self.theta_offsets[i + 1]]

    def template(self, theta: np.ndarray, i: int) -> np.ndarray:
        """Lower-triangular template T_i of term i for this theta."""
        k = self.terms[i].k
        T = np.zeros((k, k))
        T.T[_triu(k)] = self.term_theta(theta, i)  # column-major lower triangle
        return T

    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        return [self.template(theta, i) for i in range(len(self.terms))]

    def Z(self) -> sp.csc_matrix:
        """The n x q random-effects model matrix, built from level codes (never dense)."""
        blocks = []
        for term in self.terms:
            n, k = term.X.shape
            rows = np.repeat(np.arange(n), k)
            cols = (term.codes[:, None] * k + np.arange(k)).ravel()
            blocks.append(
                sp.csc_matrix((term.X.ravel(), (rows, cols)), shape=(n, term.nlevels * k))
            )
        return sp.hstack(blocks, format="csc")

    def Lambda(self, theta: np.ndarray) -> sp.csc_matrix:
        """Block-diagonal relative covariance factor Lambda(theta), q x q."""
        blocks = [
            sp.kron(sp.identity(term.nlevels), sp.csr_matrix(T))
            for term, T in zip(self.terms, self.templates(theta), strict=True)
        ]
        return sp.block_diag(blocks, format="csc")

    def template_columns(self) -> list[np.ndarray]:
        """Indices into theta of every template column, its diagonal element first."""
        out = []
        for i, term in enumerate(self.terms):
            start, k = self.theta_offsets[i], term.k
            for j in range(k):
                # column j of a k x k lower triangle starts after the columns before it
                first = start + j * k - j * (j - 1) // 2
                out.append(np.arange(first, first + k - j))
        return out


@lru_cache(maxsize=64)
def _triu(k: int) -> tuple[np.ndarray, np.ndarray]:
    """np.triu_indices(k), made once per k: templates are built in every evaluation."""
    return np.triu_indices(k)


def template_theta(T: np.ndarray) -> np.ndarray:
    """A k x k matrix's entries in theta's layout (its lower triangle, column by column):
    the inverse of :meth:`ReStructure.template`."""
    return T.T[_triu(T.shape[0])]


def template_times(T: np.ndarray, V: np.ndarray, transpose: bool = False) -> np.ndarray:
    """T @ V[l] (or T' @ V[l]) for every level of a (levels, k, m) array; a scalar product
    for k = 1, where numpy's batched matmul of 1 x 1 matrices is several times slower."""
    if T.shape == (1, 1):
        return T[0, 0] * V
    return (T.T if transpose else T) @ V


def lme4_term_order(nlevels: list[int]) -> list[int]:
    """lme4's term order (mkReTrms): formula order if the numbers of levels never increase
    along it; otherwise decreasing numbers of levels with ties in *reverse* formula order
    (lme4 reverses an ascending stable sort). The tie rule decides the order of theta and
    of the variance components, e.g. in ``(1 | Dog) + (0 + day | Dog) + (1 | Dog:Side)``."""
    positions = list(range(len(nlevels)))
    if all(b <= a for a, b in zip(nlevels, nlevels[1:], strict=False)):
        return positions
    return sorted(positions, key=lambda i: (-nlevels[i], -i))


def make_re_structure(raw_terms: list[RawTerm]) -> ReStructure:
    """Order the terms as lme4 does and lay out Z's columns and theta."""
    terms = tuple(raw_terms[i] for i in lme4_term_order([t.nlevels for t in raw_terms]))
    offsets, theta_offsets, theta0, lower = [], [0], [], []
    col = 0
    for term in terms:
        k = term.k
        offsets.append(col)
        col += term.nlevels * k
        rows, cols = np.triu_indices(k)  # transposed: column-major lower triangle
        on_diag = rows == cols
        theta0.append(on_diag.astype(float))
        lower.append(np.where(on_diag, 0.0, -np.inf))
        theta_offsets.append(theta_offsets[-1] + len(rows))
    return ReStructure(
        terms=terms,
        offsets=tuple(offsets),
        theta_offsets=tuple(theta_offsets),
        theta0=np.concatenate(theta0),
        lower=np.concatenate(lower),
        q=col,
    )
