"""The only module that talks to CHOLMOD (through scikit-sparse 0.4.x).

:class:`SparseCholesky` analyzes a fixed sparsity pattern once (fill-reducing ordering,
symbolic factorization) and refactors it numerically in place for each new set of values:
``L D L' = P (A + beta I) P'``. Whether the simplicial (LDL', D != I) or the supernodal
(LL', D = I) factorization is used is decided once from the symbolic factor by CHOLMOD's
own rule (flops per entry of L), so that the same data always take the same path.

Every solve the PLS kernel needs is a *half solve*: ``H = D^{-1/2} L^{-1} P B`` so that
``H'H = B' (A + beta I)^{-1} B``.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sksparse import cholmod as _cholmod

from .errors import ModelSpecError

__all__ = ["SparseCholesky"]

_SUPERNODAL_RATIO = 40.0  # CHOLMOD's default Common->supernodal_switch


class SparseCholesky:
    """CHOLMOD factor of a symmetric matrix given by its lower triangle (CSC).

    Fields
    ------
    pattern: the analyzed lower-triangular CSC matrix; refactor() writes its values.
    mode: "simplicial" or "supernodal".
    nnz_L: entries of L.
    flops: multiply-adds of one numeric factorization (sum of squared column counts).
    """

    def __init__(self, lower: sp.csc_matrix, values: np.ndarray, mode: str = "auto") -> None:
        self.pattern = lower
        self.pattern.data[:] = values
        factor = self._analyze("simplicial" if mode == "auto" else mode)
        self._factorize(factor, 1.0)
        counts = np.diff(factor.copy().L().indptr).astype(float)
        self.nnz_L = int(counts.sum())
        self.flops = float(np.sum(counts**2))  # multiply-adds of one numeric factorization
        # CHOLMOD's own rule for its automatic choice: supernodal pays off once there are
        # many flops per entry of L (dense trailing blocks), simplicial otherwise. Applied
        # here, not by timing, so the same data always take the same path.
        self.mode = mode
        if mode == "auto":
            dense = self.flops >= _SUPERNODAL_RATIO * self.nnz_L
            self.mode = "supernodal" if dense else "simplicial"
            if self.mode == "supernodal":
                factor = self._analyze("supernodal")
                self._factorize(factor, 1.0)
        self._factor = factor
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

