"""General PLS kernel: the whole of ``Lambda' Z'Z Lambda + I`` factored by CHOLMOD.

The sparsity pattern is fixed once (a dense k_i x k_j block wherever Z'Z has a block), so a
theta on the boundary, which zeroes values, keeps the analyzed pattern. Values are written
through a precomputed map, never through sparse products (which would drop explicit zeros
and change the pattern CHOLMOD analyzed).

Cost of :meth:`CholmodKernel.factor`: O(sum of npairs k_i k_j (k_i + k_j)) to form the
values, plus one CHOLMOD numeric factorization.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .cholmod import SparseCholesky
from .crossprod import CrossProducts, ZtZBlock, block_values
from .terms import ReStructure

__all__ = ["CholmodKernel", "fixed_pattern", "block_entries"]


def fixed_pattern(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], fmt: str
) -> tuple[sp.spmatrix, np.ndarray]:
    """A sparse matrix with the given entries and the map from entry order to storage order.

    ``M.data[:] = values[perm]`` then writes values given in entry order. Each entry's
    position is carried through the COO conversion as its value (offset by one, so that
    no tag is zero and dropped).
    """
    nnz = len(rows)
    tag = sp.coo_matrix((np.arange(1, nnz + 1, dtype=float), (rows, cols)), shape=shape)
    M = tag.asformat(fmt)
    M.sort_indices()
    perm = M.data.astype(np.int64) - 1
    if len(perm) != nnz:
        raise AssertionError("duplicate entries in a fixed sparsity pattern")
    return M, perm


def block_entries(block: ZtZBlock, re: ReStructure) -> tuple[np.ndarray, np.ndarray]:
    """Stored (a, b) entries of each k_i x k_j block: the lower triangle on the diagonal."""
    ki, kj = re.terms[block.i].k, re.terms[block.j].k
    a, b = np.indices((ki, kj)).reshape(2, -1)
    if block.i == block.j:
        keep = a >= b
        a, b = a[keep], b[keep]
    return a, b


def block_positions(block: ZtZBlock, re: ReStructure, a: np.ndarray, b: np.ndarray):
    """Row and column in Lambda' Z'Z Lambda of every stored entry of a block."""
    ki, kj = re.terms[block.i].k, re.terms[block.j].k
    base_r = re.offsets[block.i] + block.rows * ki
    base_c = re.offsets[block.j] + block.cols * kj
    return (base_r[:, None] + a).ravel(), (base_c[:, None] + b).ravel()


class CholmodKernel:
    """CHOLMOD factor of the whole PLS matrix, refactored in place for every theta."""

    def __init__(self, re: ReStructure, cp: CrossProducts) -> None:
        self.re, self.cp = re, cp
        self._entries = [block_entries(block, re) for block in cp.blocks]
        positions = [
            block_positions(block, re, a, b)
            for block, (a, b) in zip(cp.blocks, self._entries, strict=True)
        ]
        rows = np.concatenate([r for r, _ in positions])
        cols = np.concatenate([c for _, c in positions])
        lower, self._perm = fixed_pattern(rows, cols, (re.q, re.q), "csc")
        if lower.nnz < 2**31 - 1:
            lower.indices = lower.indices.astype(np.int32)
            lower.indptr = lower.indptr.astype(np.int32)
        self._values = np.empty(len(self._perm))
        self.chol = SparseCholesky(lower, self._lower_values(re.templates(re.theta0)))

    def _lower_values(self, templates: list[np.ndarray]) -> np.ndarray:
        out, start = self._values, 0
        for block, (a, b) in zip(self.cp.blocks, self._entries, strict=True):
            V = block_values(block, templates)[:, a, b].ravel()
            out[start : start + V.size] = V
            start += V.size
        return out[self._perm]

    def factor(self, templates: list[np.ndarray]) -> None:
        self.chol.refactor(self._lower_values(templates))

    def logdet(self) -> float:
        return self.chol.logdet()

    def half_solve(self, B):
        return self.chol.half_solve(B)

    def gram(self, B: np.ndarray) -> np.ndarray:
        """B' (A + I)^{-1} B = W'W with W the half solve."""
        W = self.chol.half_solve(B)
        return W.T @ W

    def solve(self, B: np.ndarray) -> np.ndarray:
        return self.chol.solve(B)

    def describe(self) -> str:
        return f"CHOLMOD {self.chol.mode}, nnz(L) = {self.chol.nnz_L}"

    @property
    def flops(self) -> float:
        return self.chol.flops

    @property
    def parallel_flops(self) -> float:
        """Work that more BLAS threads speed up: CHOLMOD's supernodal updates."""
        return self.chol.flops if self.chol.mode == "supernodal" else 0.0
