"""Leading-block kernel: eliminate the first term's block diagonal, factor the dense rest.

Write the PLS matrix with the first term (the one with the most levels) first:

    A + I = [A11 + I   A21'    ]      A11 block diagonal: one k0 x k0 block per level
            [A21       A22 + I ]

Then ``L = [L11 0; L21 L22]`` with ``L11`` the per-level Cholesky factors of A11 + I,
``L21 = A21 L11^{-T}`` (same sparsity as A21) and ``L22 L22' = A22 + I - L21 L21'``, a dense
q2 x q2 Schur complement factored by LAPACK. Eliminating a block-diagonal leading factor
this way is what MixedModels.jl's blocked Cholesky does; it replaces thousands of tiny
supernodal updates by a few batched small factorizations and one BLAS-3 factorization.
The results equal the CHOLMOD kernel's to rounding.

Cost of :meth:`SchurKernel.factor`: O(l0 k0^3) for L11, O(nnz(A21) k0) for L21,
O(products in L21 L21') for the update and O(q2^3 / 3) for L22; ``flops`` estimates it.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.sparse as sp

from .crossprod import CrossProducts, block_values, left_template, right_template
from .errors import ModelSpecError
from .gradient import add_block_sums
from .kernel_sparse import block_entries, block_positions, fixed_pattern
from .lead_groups import LeadGroups, make_lead_groups
from .terms import ReStructure, template_times
from .threads import THREADED_FLOPS, blas_limit

__all__ = ["SchurKernel"]

# The per-level data gram's multiply-adds below which grouping the leading levels is not
# tried: the grouping's one-off cost (a few ms) is then more than the evaluations save.
_MIN_GROUPED_WORK = 2**18

# LAPACK directly: scipy.linalg.solve_triangular's checks cost more than a small solve
_dtrtrs = scipy.linalg.lapack.dtrtrs

# Most bytes of the dense update's three q1 x q2 work arrays (the 1M-row benchmark design,
# 5,000 x 2,000, uses 240 MB).
_DENSE_WORK_BYTES = 2 * 2**30

# Most run pairs (two rows of A21 meeting one leading level) stored for the selected
# inverse: three arrays of this length, ~24 bytes per pair.
_PAIR_BUDGET = 8_000_000


def _lower_inverse(L: np.ndarray) -> np.ndarray:
    """Inverses of a stack of small lower-triangular matrices, (l, k, k), by forward
    substitution vectorized over the stack: O(k^3) array operations on length-l vectors,
    several times faster than a batched general inverse for k of 2 to 6."""
    k = L.shape[1]
    X = np.zeros_like(L)
    d = 1.0 / np.diagonal(L, axis1=1, axis2=2)
    for j in range(k):
        X[:, j, j] = d[:, j]
        for i in range(j + 1, k):
            X[:, i, j] = -np.einsum("lm,lm->l", L[:, i, j:i], X[:, j:i, j]) * d[:, i]
    return X


def _fill_lower(U: np.ndarray, width: int = 256) -> np.ndarray:
    """Copy the upper triangle of the square C-order U into its lower triangle, in place,
    by blocks of columns: a third of the time of ``U + np.triu(U, 1).T`` for q2 = 2000,
    and no second q2 x q2 array."""
    n = U.shape[0]
    for s in range(0, n, width):
        e = min(n, s + width)
        U[e:, s:e] = U[s:e, e:].T
        D = U[s:e, s:e]
        D[np.tril_indices(e - s, -1)] = D.T[np.tril_indices(e - s, -1)]
    return U


def _levelwise(M: np.ndarray, B: np.ndarray) -> np.ndarray:
    """M[l] @ B[l] for every level: (l, k, k) by (l, k, m); a broadcast product for k = 1,
    where numpy's batched matmul of 1 x 1 matrices is several times slower."""
    return M * B if M.shape[1] == 1 else M @ B


class SchurKernel:
    """Block-diagonal elimination of term 0 and a dense factor of the Schur complement."""

    def __init__(self, re: ReStructure, cp: CrossProducts) -> None:
        self.re, self.cp = re, cp
        lead = re.terms[0]
        self.k0, self.l0 = lead.k, lead.nlevels
        self.q1 = self.k0 * self.l0
        self.q2 = re.q - self.q1
        self._diag0 = next(b for b in cp.blocks if b.i == 0 and b.j == 0)
        self._cross = [b for b in cp.blocks if b.i > 0 and b.j == 0]
        self._rest = [b for b in cp.blocks if b.i > 0 and b.j > 0]
        self._setup_cross()
        self._setup_rest()

    def _setup_cross(self) -> None:
        """Fixed CSR patterns of A21 (q2 x q1) and of the block diagonal L11^{-T}."""
        rows, cols = [], []
        for block in self._cross:
            a, b = block_entries(block, self.re)
            r, c = block_positions(block, self.re, a, b)
            rows.append(r - self.q1)
            cols.append(c)
        if rows:
            r, c = np.concatenate(rows), np.concatenate(cols)
        else:
            r = c = np.zeros(0, dtype=np.int64)
        self._A21, self._perm21 = fixed_pattern(r, c, (self.q2, self.q1), "csr")
        # In CSR order the entries of a row of A21 that meet one leading level are k0
        # consecutive values (dense blocks, sorted columns): record that level per run, so
        # that L21 = A21 L11^{-T} is computed run by run on A21's own pattern.
        self._run_level = self._A21.indices[:: self.k0] // self.k0
        self._csr_rows = np.repeat(np.arange(self.q2), np.diff(self._A21.indptr))
        # L21 L21' as a dense BLAS product when L21 is fairly dense, else sparse.
        per_column = np.bincount(self._A21.indices, minlength=self.q1).astype(float)
        sparse_flops = float(np.sum(per_column**2))
        dense_flops = float(self.q2) ** 2 * self.q1 / 2
        # BLAS-3 runs ~40x more multiply-adds per second than scipy's sparse product
        # (measured on poems: 17M sparse multiply-adds took 34 ms, 200M in dsyrk 8 ms)
        # The dense update keeps three dense q1 x q2 arrays (G12, E and B): above
        # _DENSE_WORK_BYTES the sparse update is used, slower but within memory.
        self._dense_update = (dense_flops < 40 * sparse_flops
                              and 3 * 8 * self.q1 * self.q2 <= _DENSE_WORK_BYTES)
        self.flops = self.l0 * self.k0**3 / 3 + float(self.q2) ** 3 / 3 + (
            dense_flops if self._dense_update else sparse_flops
        )
        # Work that a second BLAS thread speeds up: the big dense products. LAPACK's
        # Cholesky and inverse of a q2 ~ 1000 matrix ran slower with two OpenBLAS threads
        # than with one here (InstEval: 180 vs 108 ms per evaluation with gradient), while
        # the dense update and P22 H gained (sim360k: 560 vs 650-780 ms).
        self.parallel_flops = dense_flops if self._dense_update else 0.0
        self._dense_work: dict[str, np.ndarray] = {}
        self._g12: np.ndarray | None = None  # dense path: Z_1'Z_2 as (l0, k0, q2), on first use
        self._templates: list[np.ndarray] = []  # of the last factor
        self._l21_stale = False  # dense path: L21's values not yet formed for the last factor
        self._pairs: tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None = None  # on first use
        # how P21 = -P22 H is formed on A21's pattern (see _pattern_product)
        runs_per_level = np.bincount(self._run_level, minlength=self.l0).astype(np.int64)
        self._npairs = int(np.sum(runs_per_level**2))
        # at most this fraction of the q2 x q2 Schur complement can be nonzero: the pairs of
        # rows of A21 that meet one leading level, plus A22's own blocks
        rest_entries = sum(b.C.size for b in self._rest)
        self.fill_bound = min(1.0, (self._npairs * self.k0 + 2 * rest_entries) / max(1, self.q2**2))
        if self._dense_update:
            self._p21_path = "dense"
        elif self._npairs <= _PAIR_BUDGET and 4 * self._npairs <= self._A21.nnz * self.q2:
            self._p21_path = "pairs"
        else:
            self._p21_path = "chunks"
        # (cross-products, their lead groups or None, Z_2'[X y]): see xy_gram
        self._lead: tuple[CrossProducts, LeadGroups | None, np.ndarray | None] | None = None

    # Made on first use: what only the sparse path or the selected inverse needs (making
    # them all up front cost sim1M's dense path a second).

    @cached_property
    def _L21(self) -> sp.csr_matrix:
        """L21 = A21 L11^{-T} on A21's pattern (values set by _update_sparse_l21)."""
        return self._A21.copy()

    @cached_property
    def _H(self) -> sp.csr_matrix:
        """H = A21 A11^{-1} on A21's pattern (values set by inverse_blocks)."""
        return self._A21.copy()

    @cached_property
    def _run_sum(self) -> sp.csr_matrix:
        """Sums the per-run k0 x k0 products of each leading level (selected inverse)."""
        nruns = len(self._run_level)
        return sp.csr_matrix(
            (np.ones(nruns), (self._run_level, np.arange(nruns))), shape=(self.l0, nruns)
        )

    @cached_property
    def _col_sort(self) -> tuple[np.ndarray, np.ndarray]:
        """A21's entries in column order: their CSR positions and their columns."""
        order = np.argsort(self._A21.indices, kind="stable")
        return order, self._A21.indices[order]

    def _setup_rest(self) -> None:
        """Flat indices into the dense q2 x q2 matrix of the lower triangle of A22."""
        self._rest_index = []
        for block in self._rest:
            a, b = block_entries(block, self.re)
            r, c = block_positions(block, self.re, a, b)
            self._rest_index.append(((r - self.q1) * self.q2 + (c - self.q1), a, b))
        # every entry of each block (both triangles of diagonal ones), for the inverse
        self._rest_full = []
        for block in self._rest:
            ki, kj = self.re.terms[block.i].k, self.re.terms[block.j].k
            a, b = np.indices((ki, kj)).reshape(2, -1)
            r, c = block_positions(block, self.re, a, b)
            self._rest_full.append(((r - self.q1) * self.q2 + (c - self.q1)).reshape(-1, ki, kj))

    def factor(self, templates: list[np.ndarray]) -> None:
        A11 = block_values(self._diag0, templates)
        A11 += np.eye(self.k0)
        if self.k0 == 1:  # scalar blocks: avoid one LAPACK call per level
            L11 = np.sqrt(A11)
            self._L11inv = 1.0 / L11
        else:
            try:
                L11 = np.linalg.cholesky(A11)
            except np.linalg.LinAlgError:
                raise ModelSpecError("a leading diagonal block is not positive definite") from None
            self._L11inv = _lower_inverse(L11)
        self._L11 = L11
        if self.q2 == 0:
            self._L22 = np.zeros((0, 0))
            return
        self._templates = templates
        if self._dense_update:
            # E = G21 Lambda_0 L11^{-T}, so L21 = Lambda_2' E, and Y = E E', so
            # L21 L21' = Lambda_2' Y Lambda_2: the same BLAS product as L21 L21', and Y is
            # what the gradient needs (logdet_sums). E is formed densely, level by level,
            # from the dense G21 (zeros included): a batched product of small blocks, where
            # forming it on A21's pattern took gathers and scatters several times slower.
            # L21 itself (sparse) is formed only when asked for (_sparse_l21).
            E = self._lead_times_g12(self._L11inv @ templates[0].T, "E").reshape(
                self.q1, self.q2).T
            Y = E @ E.T  # numpy takes dsyrk for this product and fills both triangles
            LY = self._lambda2_t(templates, Y)
            self._LY = LY  # Lambda_2' Y = (Y Lambda_2)', which the gradient needs
            S = -self._lambda2_t(templates, LY.T)
            self._l21_stale = True
        else:
            self._update_sparse_l21(templates)
            S = -(self._L21 @ self._L21.T).toarray()
        flat = S.reshape(-1)  # a view: S is C-contiguous
        for block, (index, a, b) in zip(self._rest, self._rest_index, strict=True):
            flat[index] += block_values(block, templates)[:, a, b].ravel()
        S[np.diag_indices(self.q2)] += 1.0
        with self._lapack_threads():
            L22, info = scipy.linalg.lapack.dpotrf(S, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise ModelSpecError("the Schur complement of the PLS system is not positive definite")
        self._L22 = L22

    def _update_sparse_l21(self, templates: list[np.ndarray]) -> None:
        """A21 = Lambda_2' G21 Lambda_0 and L21 = A21 L11^{-T} on A21's sparse pattern."""
        if self._cross:
            self._A21.data[:] = np.concatenate([
                left_template(templates[b.i], right_template(b.C, templates[0])).ravel()
                for b in self._cross
            ])[self._perm21]
        self._L21.data[:] = self._times_L11inv_t(self._A21.data)
        self._l21_stale = False

    def _sparse_l21(self) -> sp.csr_matrix:
        """L21 of the last factor on A21's pattern (the dense path forms it on demand)."""
        if self._l21_stale:
            self._update_sparse_l21(self._templates)
        return self._L21

    def _dense_g12(self) -> np.ndarray:
        """G12 = Z_1'Z_2 (unscaled) as a dense (l0, k0, q2) array, zeros off A21's pattern;
        made once. Row k0 m + a holds column a of leading level m, as in L21's transpose."""
        if self._g12 is None:
            G = np.zeros(self.q1 * self.q2)
            if self._cross:  # A21's entries at their flat positions in the transpose
                flat = self._A21.indices * self.q2 + self._csr_rows
                G[flat] = np.concatenate([b.C.ravel() for b in self._cross])[self._perm21]
            self._g12 = G.reshape(self.l0, self.k0, self.q2)
        return self._g12

    def lead_cross(self) -> np.ndarray | None:
        """Z_1'Z_2 as a dense q1 x q2 array on the dense path (for
        :class:`~lmm_sparse.crossprod.ZtZOperator`), else None."""
        if not self._dense_update or self.q2 == 0:
            return None
        return self._dense_g12().reshape(self.q1, self.q2)

    def _work(self, name: str) -> np.ndarray:
        """The dense (l0, k0, q2) work array ``name``, made on first use and kept: the
        dense arrays are large."""
        out = self._dense_work.get(name)
        if out is None:
            out = self._dense_work[name] = np.empty((self.l0, self.k0, self.q2))
        return out

    def _lead_times_g12(self, K: np.ndarray, name: str) -> np.ndarray:
        """K[m] @ G12[m] for every leading level m, (l0, k0, q2), into the work array
        ``name``."""
        G, out = self._dense_g12(), self._work(name)
        if self.k0 == 1:  # numpy's batched matmul of 1 x 1 matrices is several times slower
            return np.multiply(K, G, out=out)
        return np.matmul(K, G, out=out)

    def _rest_times_g12(self, templates: list[np.ndarray], name: str) -> np.ndarray:
        """G12 Lambda_2 (q1 x q2) into the work array ``name``: each rest term's columns
        times its template, one broadcast matmul per term on views of the columns (4 times
        faster than scaled sums of the strided slices, q1 x q2 = 5000 x 2000)."""
        G, out = self._dense_g12().reshape(self.q1, self.q2), self._work(name).reshape(
            self.q1, self.q2)
        start = 0
        for term, T in zip(self.re.terms[1:], templates[1:], strict=True):
            cols = slice(start, start + term.nlevels * term.k)
            shape = (self.q1, term.nlevels, term.k)
            if term.k == 1:
                np.multiply(G[:, cols], T[0, 0], out=out[:, cols])
            else:
                np.matmul(G[:, cols].reshape(shape), T, out=out[:, cols].reshape(shape))
            start = cols.stop
        return out

    def _lapack_threads(self):
        """One BLAS thread for LAPACK's Cholesky factor and inverse of the Schur complement
        when evaluations run on more: OpenBLAS's threaded dpotrf/dpotri were several times
        slower than its single-threaded ones here (q2 = 2000: dpotri 0.22 s on one thread,
        2.8 s on two with the other core busy; q2 = 1156: 0.04 s against 1.6 s), while the
        big products (dsyrk, dtrsm) do gain from the second thread."""
        return blas_limit(1) if self.parallel_flops >= THREADED_FLOPS else nullcontext()

    def _times_L11inv_t(self, values: np.ndarray) -> np.ndarray:
        """Values on A21's pattern times L11^{-T}: each run of k0 values (one row of A21 at
        one leading level) times its level's block, run @ L11inv[level].T."""
        runs = values.reshape(-1, self.k0)
        return np.einsum("rb,rab->ra", runs, self._L11inv[self._run_level]).ravel()

    def logdet_sums(self, templates: list[np.ndarray]) -> list[np.ndarray] | None:
        """:func:`lmm_sparse.gradient.logdet_sums` without P21 on A21's pattern, on the dense
        path (None elsewhere: then the gradient uses :meth:`inverse_blocks`).

        With ``B = Lambda_2' G21`` and ``N_m = B_m' P22 B_m`` per leading level m (from one
        triangular solve ``L22^{-1} B``), ``Q_m = T0 A11_m^{-1}`` and ``Y`` of
        :meth:`factor`, the sums over the blocks of Z'Z are:

        * leading term: ``sum_m C_mm T0 P11_mm - N_m Q_m`` with
          ``P11_mm = A11_m^{-1} + Q_m' N_m Q_m`` (diagonal, then cross blocks);
        * rest term i, cross blocks: ``-sum_{l in i} [Y Lambda_2 P22]_ll``; its blocks with
          other rest terms as in the general formula, from P22.

        Cost: q2^2 q1 for the solve and 2 q2^3 / 3 for P22, against 2 q2^2 q1 for P21 on
        the pattern through P22 H, and no q2 x q1 gather. Reads the last factor.
        """
        if not self._dense_update or self.q2 == 0:
            return None
        k0, l0, q2 = self.k0, self.l0, self.q2
        P22 = self._schur_inverse()
        # B' = G12 Lambda_2 (q1 x q2, C order), so B is its Fortran-order transpose and
        # F = L22^{-1} B is solved in place
        Bt = self._rest_times_g12(templates, "B")
        F = scipy.linalg.blas.dtrsm(1.0, self._L22, Bt.T, lower=1, overwrite_b=1)
        Ft = F.T.reshape(l0, k0, q2)  # a view: F is Fortran order
        N = np.einsum("lbq,lcq->lbc", Ft, Ft)
        A11inv = np.einsum("lba,lbc->lac", self._L11inv, self._L11inv)
        Q = templates[0] @ A11inv
        P11 = A11inv + Q.transpose(0, 2, 1) @ N @ Q
        CT0 = right_template(self._diag0.C, templates[0])
        out = [np.einsum("lab,lbc->ac", CT0, P11) - np.einsum("lab,lbc->ac", N, Q)]
        # [Y Lambda_2 P22]_ll summed over the levels l of a rest term, from the columns of
        # (Y Lambda_2)' and of P22 (symmetric)
        start = 0
        for term in self.re.terms[1:]:
            cols = slice(start, start + term.nlevels * term.k)
            Zi = self._LY[:, cols].reshape(q2, term.nlevels, term.k)
            Pi = P22[:, cols].reshape(q2, term.nlevels, term.k)
            out.append(-np.einsum("alr,als->rs", Zi, Pi))
            start = cols.stop
        flat = P22.reshape(-1)
        add_block_sums(out, self._rest, templates, [flat[index] for index in self._rest_full])
        return out

    def _schur_inverse(self) -> np.ndarray:
        """P22 = (L22 L22')^{-1}, both triangles, C order."""
        with self._lapack_threads():
            Pl, info = scipy.linalg.lapack.dpotri(self._L22, lower=1)
        if info != 0:
            raise ModelSpecError("the Schur complement of the PLS system is singular")
        return _fill_lower(Pl.T)  # dpotri fills the lower triangle only: P22's upper in C order

    def xy_gram(self, templates: list[np.ndarray], cp: CrossProducts) -> np.ndarray | None:
        """``B'(A + I)^{-1} B`` for ``B = Lambda' Z'[X y]`` of ``cp``, through groups of
        alike leading levels (:mod:`lmm_sparse.lead_groups`), or None where grouping does
        not pay (then :meth:`gram` does it level by level). Reads the factor of the last
        :meth:`factor` call, which must be at ``templates``."""
        if self._lead is None or self._lead[0] is not cp:
            self._lead = (cp, *self._make_lead_groups(cp))
        _, groups, rest = self._lead
        if groups is None:
            return None
        M = groups.weights(templates[0])
        gram = groups.lead_gram(M)
        if self.q2 == 0:
            return gram
        rhs = self._lambda2_t(templates, rest - groups.cross_sum(M))
        c2 = _dtrtrs(self._L22, rhs, lower=1)[0]
        return gram + c2.T @ c2

    def _make_lead_groups(
        self, cp: CrossProducts
    ) -> tuple[LeadGroups | None, np.ndarray | None]:
        """The lead groups of ``cp`` (None where grouping does not pay) and, with them, the
        rest terms' rows of Z'[X y] stacked (q2 x (p + 1))."""
        m = cp.p + 1
        generic = self.q1 * m * (m + self.k0) + self._A21.nnz * m
        if generic < _MIN_GROUPED_WORK:  # a small model: grouping costs more than it saves
            return None, None
        G21 = self._A21.copy()  # unscaled Z_2'Z_1 on A21's pattern
        if self._cross:
            G21.data[:] = np.concatenate([b.C.ravel() for b in self._cross])[self._perm21]
        # tall, thin products: a second BLAS thread only waits (fggk21: 31 ms on one
        # thread, over a second on two when the other core was busy)
        with blas_limit(1):
            groups = make_lead_groups(self._diag0.C, cp.ZtXy[0], G21, generic)
        if groups is None or not self.q2:
            return groups, None
        return groups, np.concatenate([Z.reshape(-1, m) for Z in cp.ZtXy[1:]], axis=0)

    def _lambda2_t(
        self, templates: list[np.ndarray], V: np.ndarray, transpose: bool = True
    ) -> np.ndarray:
        """Lambda_2' V (or Lambda_2 V) for a q2 x m matrix V in the rest terms' rows."""
        out, start = np.empty(V.shape), 0  # C order (factor indexes S through a flat view)
        for term, T in zip(self.re.terms[1:], templates[1:], strict=True):
            size = term.nlevels * term.k
            block = V[start : start + size].reshape(term.nlevels, term.k, -1)
            out[start : start + size] = template_times(T, block, transpose=transpose).reshape(
                size, -1)
            start += size
        return out

    def logdet(self) -> float:
        d11 = np.diagonal(self._L11, axis1=1, axis2=2)
        return 2.0 * float(np.sum(np.log(d11)) + np.sum(np.log(np.diag(self._L22))))

    def _forward(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = B.shape[1]
        B1 = B[: self.q1].reshape(self.l0, self.k0, m)
        c1 = _levelwise(self._L11inv, B1).reshape(self.q1, m)
        if self.q2 == 0:
            return c1, np.zeros((0, m))
        rhs = B[self.q1 :] - self._l21_times(c1)
        c2 = _dtrtrs(self._L22, rhs, lower=1)[0]
        return c1, c2

    def _l21_times(self, V: np.ndarray) -> np.ndarray:
        """L21 V (q2 x m), through E on the dense path (L21 = Lambda_2' E)."""
        if not self._dense_update or self.q2 == 0:
            return self._L21 @ V
        E = self._dense_work["E"].reshape(self.q1, self.q2).T
        return self._lambda2_t(self._templates, E @ V)

    def _l21t_times(self, V: np.ndarray) -> np.ndarray:
        """L21' V (q1 x m), through E on the dense path."""
        if not self._dense_update or self.q2 == 0:
            return self._L21.T @ V
        Et = self._dense_work["E"].reshape(self.q1, self.q2)
        return Et @ self._lambda2_t(self._templates, V, transpose=False)

    def half_solve(self, B: np.ndarray) -> np.ndarray:
        """L^{-1} B for a dense B (no permutation: the block order is the elimination order)."""
        vector = B.ndim == 1
        c1, c2 = self._forward(B[:, None] if vector else B)
        H = np.concatenate([c1, c2], axis=0)
        return H[:, 0] if vector else H

    def gram(self, B: np.ndarray) -> np.ndarray:
        """B' (A + I)^{-1} B = W'W with W = L^{-1} B, without stacking W's two blocks."""
        c1, c2 = self._forward(B)
        return c1.T @ c1 + c2.T @ c2

    def solve(self, B: np.ndarray) -> np.ndarray:
        """(A + I)^{-1} B = L^{-T} L^{-1} B."""
        vector = B.ndim == 1
        c1, c2 = self._forward(B[:, None] if vector else B)
        m = c1.shape[1]
        u2 = scipy.linalg.solve_triangular(self._L22, c2, lower=True, trans="T",
                                           check_finite=False)
        r1 = (c1 - self._l21t_times(u2)).reshape(self.l0, self.k0, m)
        u1 = _levelwise(self._L11inv.transpose(0, 2, 1), r1).reshape(self.q1, m)
        U = np.concatenate([u1, u2], axis=0)
        return U[:, 0] if vector else U

    supports_inverse_blocks = True

    def inverse_blocks(self) -> list[np.ndarray]:
        """(A + I)^{-1} on the stored blocks of Z'Z (a selected inverse), in ``cp.blocks`` order.

        With ``H = A21 A11^{-1}`` (A21's pattern) and the Schur complement ``S = L22 L22'``:
        ``P22 = S^{-1}``, ``P21 = -P22 H`` and ``P11 = A11^{-1} + H' P22 H = A11^{-1} - H' P21``.
        Only P21's entries on A21's pattern and P11's diagonal blocks are formed. Cost:
        O(2 q2^3 / 3) for P22 plus P21 (see :meth:`_pattern_product`). Reads the factor of
        the last :meth:`factor` call.
        """
        k0, l0 = self.k0, self.l0
        A11inv = np.einsum("lba,lbc->lac", self._L11inv, self._L11inv)
        out: dict[tuple[int, int], np.ndarray] = {(0, 0): A11inv}
        if self.q2:
            P22 = self._schur_inverse()
            H = self._H
            runs = np.einsum("rb,rba->ra", self._sparse_l21().data.reshape(-1, k0),
                             self._L11inv[self._run_level])
            H.data[:] = runs.ravel()
            P21 = self._pattern_product(P22, H, runs)
            outer = np.einsum("ra,rb->rab", runs, P21.reshape(-1, k0))
            out[0, 0] = A11inv - (self._run_sum @ outer.reshape(-1, k0 * k0)).reshape(l0, k0, k0)
            entries = np.empty_like(P21)
            entries[self._perm21] = P21
            start = 0
            for block in self._cross:
                size = block.C.size
                out[block.i, 0] = entries[start : start + size].reshape(block.C.shape)
                start += size
            flat = P22.reshape(-1)
            for block, index in zip(self._rest, self._rest_full, strict=True):
                out[block.i, block.j] = flat[index]
        return [out[b.i, b.j] for b in self.cp.blocks]

    def _pattern_product(self, P22: np.ndarray, H: sp.csr_matrix, runs: np.ndarray) -> np.ndarray:
        """-(P22 H) on H's pattern, in CSR storage order (``runs``: H's values by run).

        Three ways, chosen once from the structure: "dense" (the update is dense anyway: one
        BLAS product, 2 q2^2 q1 flops), "pairs" (entry (a, l) needs P22 only at rows a', a
        of A21 that meet level l: a sparse matrix over pairs of runs of the same level,
        filled from P22, times H's runs; O(pairs k0)) and "chunks" (sparse H' times dense
        P22 in column chunks, O(nnz(H) q2)).
        """
        rows, cols = self._csr_rows, H.indices
        if self._p21_path == "dense":
            return -(P22 @ H.toarray())[rows, cols]
        if self._p21_path == "pairs":
            W, index, order = self._run_pairs()
            W.data[:] = P22.reshape(-1)[index]
            out = np.empty_like(runs)
            out[order] = -(W @ runs[order])
            return out.ravel()
        vals = np.empty(H.nnz)
        Ht = H.T.tocsr()  # (P22 H)[a, b] = (H' P22)[b, a]: rows of H' in chunks
        chunk = max(1, 2**22 // max(1, self.q2))
        for c0 in range(0, self.q1, chunk):
            c1 = min(self.q1, c0 + chunk)
            col_order, col_sorted = self._col_sort
            lo, hi = np.searchsorted(col_sorted, [c0, c1])
            idx = col_order[lo:hi]
            R = Ht[c0:c1] @ P22
            vals[idx] = -R[cols[idx] - c0, rows[idx]]
        return vals

    def _run_pairs(self) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """Pairs of runs of the same leading level, with the runs ordered by level.

        In that order the pairs form a block-diagonal matrix of dense blocks, one per level,
        whose CSR arrays are written directly. Returns the matrix, the flat index into P22
        of each stored entry, and the order of the runs.
        """
        if self._pairs is None:
            level = self._run_level
            order = np.argsort(level, kind="stable")
            counts = np.bincount(level, minlength=self.l0)
            start = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rep = counts[level[order]]  # row i of the matrix has its level's count of entries
            indptr = np.concatenate([[0], np.cumsum(rep)])
            within = np.arange(indptr[-1]) - np.repeat(indptr[:-1], rep)
            indices = np.repeat(start[level[order]], rep) + within
            nruns = len(level)
            W = sp.csr_matrix((np.empty(len(indices)), indices, indptr), shape=(nruns, nruns))
            row = self._csr_rows[:: self.k0][order]  # row of A21 of each run, in level order
            self._pairs = (W, np.repeat(row, rep) * self.q2 + row[indices], order)
        return self._pairs

    def describe(self) -> str:
        return (
            f"leading block {self.l0} x ({self.k0} x {self.k0}), "
            f"dense Schur complement {self.q2} x {self.q2}"
        )
