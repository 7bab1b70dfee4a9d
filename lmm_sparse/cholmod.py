"""The only module that talks to CHOLMOD (through scikit-sparse 0.4.x).

:class:`SparseCholesky` analyzes a fixed sparsity pattern once (fill-reducing ordering,
symbolic factorization) and refactors it numerically in place for each new set of values:
``L D L' = P (A + beta I) P'``. Whether the simplicial (LDL', D != I) or the supernodal
(LL', D = I) factorization is used is decided once by timing one factorization of each,
because which one wins depends on the structure (nested factors favour simplicial, dense
crossed blocks supernodal) and on the BLAS.

Every solve the PLS kernel needs is a *half solve*: ``H = D^{-1/2} L^{-1} P B`` so that
``H'H = B' (A + beta I)^{-1} B``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from sksparse import cholmod as _cholmod

from .errors import ModelSpecError

__all__ = ["SparseCholesky"]


class SparseCholesky:
    """CHOLMOD factor of a symmetric matrix given by its lower triangle (CSC).

    Fields
    ------
    pattern: the analyzed lower-triangular CSC matrix; refactor() writes its values.
    mode: "simplicial" or "supernodal", as chosen by timing.
    """

    def __init__(self, lower: sp.csc_matrix, values: np.ndarray, mode: str = "auto") -> None:
        self.pattern = lower
        self.pattern.data[:] = values
        modes = ("simplicial", "supernodal") if mode == "auto" else (mode,)
        best = None
        for candidate in modes:
            factor = self._analyze(candidate)
            start = time.perf_counter()
            self._factorize(factor, 1.0)
            elapsed = time.perf_counter() - start
            if best is None or elapsed < best[0]:
                best = (elapsed, candidate, factor)
        _, self.mode, self._factor = best
        self._dinv_sqrt: np.ndarray | None = None

    def _analyze(self, mode: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _cholmod.CholmodTypeConversionWarning)
            return _cholmod.analyze(self.pattern, mode=mode, ordering_method="default")

    def _factorize(self, factor, beta: float) -> None:
        try:
            factor.cholesky_inplace(self.pattern, beta=beta)
        except _cholmod.CholmodNotPositiveDefiniteError as exc:
            raise ModelSpecError(
                f"the penalized system is not positive definite ({exc}); "
                "check the data for extreme values"
            ) from None

    def refactor(self, values: np.ndarray, beta: float = 1.0) -> None:
        """Numeric factorization of ``A + beta I`` where A has the given values."""
        self.pattern.data[:] = values
        self._factorize(self._factor, beta)
        if self.mode == "simplicial":
            d = self._factor.solve_D(np.ones(self.pattern.shape[0]))  # 1 / diag(D)
            self._dinv_sqrt = np.sqrt(d)
        else:
            self._dinv_sqrt = None

    def logdet(self) -> float:
        """log det(A + beta I)."""
        return float(self._factor.logdet())

    def half_solve(self, B):
        """``D^{-1/2} L^{-1} P B`` (dense or sparse B): its cross-product is B'(A+I)^{-1}B."""
        simplicial = self._dinv_sqrt is not None
        H = self._factor.solve_L(self._factor.apply_P(B), use_LDLt_decomposition=simplicial)
        if not simplicial:
            return H
        if sp.issparse(H):
            return sp.diags(self._dinv_sqrt) @ H
        return H * (self._dinv_sqrt[:, None] if H.ndim == 2 else self._dinv_sqrt)

    def solve(self, B: np.ndarray) -> np.ndarray:
        """(A + beta I)^{-1} B."""
        return self._factor.solve_A(B)

    def nnz_L(self) -> int:
        """Number of entries of L (a measure of the per-evaluation cost).

        Extracting L converts a supernodal factor to simplicial form, so this works on a
        copy and leaves the factor in use intact.
        """
        return int(self._factor.copy().L().nnz)
