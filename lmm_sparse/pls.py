"""Penalized least squares: cross-products made once, one deviance evaluation per theta.

Notation (Bates, Maechler, Bolker & Walker 2015, JSS 67(1), section 3):

* ``A(theta) = Lambda' Z'Z Lambda`` and ``L L' = P (A + I) P'`` (eq. 18), factored by CHOLMOD;
* ``B = Lambda' Z' [X y0]`` (y0: y's least-squares residual on X, see CrossProducts)
  and ``W = L^{-1} P B``; the Schur complement ``M = [X y0]'[X y0] - W'W`` is ``R'R``
  with R upper triangular (p + 1 square);
* its leading p x p block is ``R_X`` (eq. 19), ``beta = R_X^{-1} r_Xy`` (eq. 20),
  and the penalized weighted residual sum of squares is ``pwrss = R[p, p]^2`` (eq. 21);
* ``ldL2 = log det(A + I)``, ``ldRX2 = log det(R_X' R_X)``.

The profiled deviance (eq. 34) and REML criterion (eq. 41):

    ML:   ldL2 + n (1 + log(2 pi pwrss / n))
    REML: ldL2 + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p)))

:class:`~lmm_sparse.crossprod.CrossProducts` (frozen) holds everything the data contribute.
:class:`PLSWorkspace` is the only mutable object of the library: it owns a kernel, the
factor of ``A + I`` (CHOLMOD's, :mod:`lmm_sparse.kernel_sparse`, or the leading-block
Schur factor, :mod:`lmm_sparse.kernel_schur`).

Cost of one evaluation (:meth:`PLSWorkspace.evaluate`), independent of n:
  the kernel's numeric factorization (see each kernel for its cost),
  O(q k (p + 1)) for B, the half solve O(nnz(L) (p + 1)), O(q (p + 1)^2) for W'W, O(p^3) for R.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .crossprod import CrossProducts, ZtZOperator, inverse_gram
from .errors import ModelSpecError
from .gradient import gradient_parts, kernel_logdet_sums
from .kernel_schur import SchurKernel
from .kernel_sparse import CholmodKernel
from .terms import ReStructure, template_times
from .threads import THREADED_FLOPS, default_blas_threads

__all__ = ["PLSEval", "PLSWorkspace", "DensePLS", "profiled_deviance", "KERNELS", "DENSE_MAX_Q"]

KERNELS = ("auto", "cholmod", "schur")
# Above this many columns outside the leading term the dense Schur complement costs more
# than the exact gradient saves; "auto" then takes CHOLMOD (see _choose_kernel).
_SCHUR_MAX_Q2 = 3000
# A dense Schur complement costing more than this per factorization (q2 of about 670) is
# only worth it when at least _SCHUR_MIN_FILL of it can be nonzero.
_SCHUR_DENSE_FLOPS = 1e8
_SCHUR_MIN_FILL = 0.1
# threads.THREADED_FLOPS: big BLAS-3 work per evaluation above which the BLAS's own threads
# are used. High on purpose: on a machine whose other cores are busy, a multi-threaded
# OpenBLAS can run tens of times slower (measured: poems' selected inverse, 15 ms with one
# thread, 550 ms with two while another process used the second core), and the gain on a
# quiet 2-core machine is about 20% (sim360k, 2.2e9 flops).


@dataclass(frozen=True)
class PLSEval:
    """The result of one evaluation at theta.

    Fields
    ------
    theta: where it was evaluated.
    ldL2: log det(Lambda' Z'Z Lambda + I).
    ldRX2: log det(R_X' R_X).
    pwrss: penalized weighted residual sum of squares.
    beta: conditional estimate of the fixed effects.
    RX: upper-triangular R_X, with R_X' R_X = X' V^{-1} X (V relative to sigma^2).
    """

    theta: np.ndarray
    ldL2: float
    ldRX2: float
    pwrss: float
    beta: np.ndarray
    RX: np.ndarray


def profiled_deviance(ev: PLSEval, n: int, p: int, reml: bool) -> float:
    """ML deviance or REML criterion, sigma (and beta) profiled out."""
    if not np.isfinite(ev.pwrss) or ev.pwrss <= 0:
        return math.inf
    if reml:
        nmp = n - p
        return ev.ldL2 + ev.ldRX2 + nmp * (1.0 + math.log(2.0 * math.pi * ev.pwrss / nmp))
    return ev.ldL2 + n * (1.0 + math.log(2.0 * math.pi * ev.pwrss / n))


class _SharedKernel:
    """What workspaces sharing one kernel (:meth:`PLSWorkspace.with_cross_products`) share
    besides it: which of them made the kernel's current factor, at which theta, and the
    Z'Z operator of the gradient (it depends on Z'Z only)."""

    def __init__(self) -> None:
        self.owner: PLSWorkspace | None = None
        self.theta: np.ndarray | None = None
        self.ztz: ZtZOperator | None = None


class PLSWorkspace:
    """The mutable part: a factor of ``Lambda' Z'Z Lambda + I`` at the current theta.

    Fields
    ------
    re: the random-effects structure.
    cp: the cross-products.
    kernel: the factorization in use (CholmodKernel or SchurKernel).
    theta: the theta of the current factor (None before the first evaluation).
    """

    def __init__(self, re: ReStructure, cp: CrossProducts, kernel: str = "auto") -> None:
        if kernel not in KERNELS:
            raise ModelSpecError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.re, self.cp = re, cp
        self.kernel = self._choose_kernel(kernel)
        self._shared = _SharedKernel()
        self._last: tuple[np.ndarray, bool, float, np.ndarray] | None = None

    def with_cross_products(self, cp: CrossProducts) -> PLSWorkspace:
        """A workspace for the same structure and a new response (``cp`` from
        :func:`~lmm_sparse.crossprod.with_response`), sharing this one's kernel.

        The kernel holds the fixed pattern, CHOLMOD's symbolic analysis or the Schur
        kernel's index maps; it reads only ``cp.blocks`` (Z'Z), which a new response leaves
        unchanged. So nothing is analyzed again: the new workspace costs O(1). The two
        workspaces share the kernel's numeric factor too, through one ``_SharedKernel``:
        whichever evaluated last owns it, and the other refactors before reading it.
        """
        if cp.blocks is not self.cp.blocks:
            raise ValueError("a workspace can only be shared with cross-products of the same Z")
        other = object.__new__(PLSWorkspace)
        other.re, other.cp, other.kernel = self.re, cp, self.kernel
        other._shared = self._shared
        other._last = None
        return other

    @property
    def theta(self) -> np.ndarray | None:
        """The theta of the kernel's current factor if this workspace made it, else None."""
        shared = self._shared
        return shared.theta if shared.owner is self else None

    def _mark_factored(self, theta: np.ndarray) -> None:
        self._shared.owner = self
        self._shared.theta = theta

    def _choose_kernel(self, name: str):
        """The kernel asked for; for "auto" the Schur kernel unless its dense part is wasteful.

        Only the Schur kernel gives the selected inverse behind the exact gradient, which
        cuts the optimizer's evaluations several-fold (tens instead of hundreds or
        thousands on models with many thetas): that outweighs a cheaper CHOLMOD
        factorization. CHOLMOD (with a derivative-free optimizer) is used when the dense
        Schur complement would be big and mostly zero, as in nested designs with many
        upper-level groups (each lower level meets one upper level, so the complement is
        block diagonal), or bigger than ``_SCHUR_MAX_Q2``. Chosen from the structure, not
        by timing, so the same data always follow the same path.
        """
        lead = self.re.terms[0]
        q2 = self.re.q - lead.k * lead.nlevels
        if name == "cholmod" or (name == "auto" and q2 > _SCHUR_MAX_Q2):
            return CholmodKernel(self.re, self.cp)
        schur = SchurKernel(self.re, self.cp)
        if name == "auto" and q2**3 / 3 > _SCHUR_DENSE_FLOPS and schur.fill_bound < _SCHUR_MIN_FILL:
            return CholmodKernel(self.re, self.cp)
        return schur

    def lambda_t_ztxy(self, templates: list[np.ndarray]) -> np.ndarray:
        """B = Lambda' Z' [X y], q x (p + 1)."""
        parts = [
            template_times(T, ZtXy, transpose=True).reshape(-1, ZtXy.shape[2])
            for T, ZtXy in zip(templates, self.cp.ZtXy, strict=True)
        ]
        return np.concatenate(parts, axis=0)

    def evaluate(self, theta: np.ndarray) -> PLSEval:
        """Refactor at theta and solve the PLS problem. Cost independent of n."""
        theta = np.array(theta, dtype=float)
        templates = self.re.templates(theta)
        self._last = None  # a new factorization: the remembered value is not reused past it
        self.kernel.factor(templates)
        self._mark_factored(theta)
        M = self.cp.XyXy - self._data_gram(templates)
        p = self.cp.p
        ldL2 = self.kernel.logdet()
        R, info = scipy.linalg.lapack.dpotrf(M, lower=0, clean=1)
        if info != 0:  # y is (numerically) fitted exactly: no residual left
            return PLSEval(theta, ldL2, math.inf, 0.0, np.full(p, np.nan), np.full((p, p), np.nan))
        RX_c = R[:p, :p]
        beta_y0 = _dtrtrs(RX_c, R[:p, p])[0] if p else np.zeros(0)
        beta, RX = self.cp.from_y0(beta_y0, RX_c)  # the cross-products hold y0, centred X
        return PLSEval(
            theta=theta,
            ldL2=ldL2,
            ldRX2=2.0 * float(np.sum(np.log(np.diag(RX_c)))),
            pwrss=float(R[p, p] ** 2),
            beta=beta,
            RX=RX,
        )

    def _data_gram(self, templates: list[np.ndarray]) -> np.ndarray:
        """B'(A + I)^{-1} B for B = Lambda' Z'[X y]: through the kernel's groups of alike
        leading levels where it has them, else from B."""
        grouped = getattr(self.kernel, "xy_gram", None)
        gram = grouped(templates, self.cp) if grouped is not None else None
        return self.kernel.gram(self.lambda_t_ztxy(templates)) if gram is None else gram

    def objective(self, theta: np.ndarray, reml: bool) -> float:
        cached = self._cached(theta, reml)
        if cached is not None:
            return cached[0]
        return profiled_deviance(self.evaluate(theta), self.cp.n, self.cp.p, reml)

    def _cached(self, theta: np.ndarray, reml: bool) -> tuple[float, np.ndarray] | None:
        """The last value and gradient, if computed at this theta and criterion with no
        evaluation since: a fit asks for them again at the optimum (the final value, the
        convergence checks). Any evaluation forgets them, so timing an evaluation and
        then the gradient measures the gradient's real cost."""
        last = self._last
        if last is not None and last[1] == reml and np.array_equal(last[0], theta):
            return last[2], last[3].copy()
        return None

    @property
    def has_gradient(self) -> bool:
        """Whether the kernel provides the selected inverse the exact gradient needs."""
        return getattr(self.kernel, "supports_inverse_blocks", False)

    def objective_and_gradient(self, theta: np.ndarray, reml: bool) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient in theta (:mod:`lmm_sparse.gradient`)."""
        cached = self._cached(theta, reml)
        if cached is not None:
            return cached
        ev, logdet, dpwrss = self.criterion_parts(theta, reml)
        value = profiled_deviance(ev, self.cp.n, self.cp.p, reml)
        if not np.isfinite(value):
            return value, np.full(len(ev.theta), np.nan)
        grad = logdet + (self.cp.n - self.cp.p if reml else self.cp.n) / ev.pwrss * dpwrss
        self._last = (ev.theta.copy(), reml, value, grad.copy())
        return value, grad

    def criterion_parts(
        self, theta: np.ndarray, reml: bool
    ) -> tuple[PLSEval, np.ndarray, np.ndarray]:
        """One evaluation and the exact gradients in theta of its two parts: the
        log-determinants ``ldL2`` (+ ``ldRX2`` for REML) and ``pwrss``.

        The profiled criterion combines them; the Satterthwaite Hessian, with sigma free,
        needs them apart. NaN gradients where pwrss is not positive.
        """
        if not self.has_gradient:
            raise ValueError(f"the {self.describe()} kernel has no exact gradient")
        ev = self.evaluate(theta)
        if not (np.isfinite(ev.pwrss) and ev.pwrss > 0):
            nan = np.full(len(ev.theta), np.nan)
            return ev, nan, nan.copy()
        templates = self.re.templates(ev.theta)
        p, beta = self.cp.p, self.cp.to_y0(ev.beta)  # beta for y0 and the centred X
        # u's right-hand side: one column; REML also needs C_X = A^{-1} Lambda' Z'X
        rhs = self._residual_rhs(templates, beta)
        if reml and p:
            U = self.kernel.solve(np.column_stack([self.lambda_t_ztxy(templates)[:, :p], rhs]))
            u, CX = U[:, p], U[:, :p]
        else:
            u, CX = self.kernel.solve(rhs), None
        logdet, dpwrss = gradient_parts(
            self.re, self.cp, self.ztz(), templates, u, CX, beta, self.cp.centred_RX(ev.RX),
            kernel_logdet_sums(self.kernel, self.cp, templates),
        )
        return ev, logdet, dpwrss

    def ztz(self) -> ZtZOperator:
        """The Z'Z operator of the gradient, made on first use; it depends on Z'Z only, so
        workspaces of :meth:`with_cross_products` share it."""
        if self._shared.ztz is None:
            lead_cross = getattr(self.kernel, "lead_cross", None)
            self._shared.ztz = ZtZOperator(
                self.re, self.cp, lead_cross() if lead_cross is not None else None
            )
        return self._shared.ztz

    def _ensure(self, theta: np.ndarray) -> None:
        if self.theta is None or not np.array_equal(self.theta, theta):
            self.evaluate(theta)

    def spherical_modes(self, ev: PLSEval) -> np.ndarray:
        """u = (A + I)^{-1} Lambda' Z' (y - X beta) at ev.theta (eq. 17), shape (q,)."""
        self._ensure(ev.theta)
        rhs = self._residual_rhs(self.re.templates(ev.theta), self.cp.to_y0(ev.beta))
        return self.kernel.solve(rhs)

    def _residual_rhs(self, templates: list[np.ndarray], beta: np.ndarray) -> np.ndarray:
        """Lambda' Z'(y0 - X beta), shape (q,), for ``beta`` fitted to y0: one column from
        the cross-products, without forming all p + 1 columns of Lambda' Z'[X y0]."""
        p = self.cp.p
        return np.concatenate([
            template_times(T, (Z[:, :, p] - Z[:, :, :p] @ beta)[:, :, None], transpose=True).ravel()
            for T, Z in zip(templates, self.cp.ZtXy, strict=True)
        ])

    def inverse_diagonal_blocks(self, theta: np.ndarray, i: int, chunk: int = 2048) -> np.ndarray:
        """Diagonal k_i x k_i blocks of (A + I)^{-1} for every level of term i.

        With the Schur kernel, from its selected inverse; with CHOLMOD, through sparse half
        solves, whose cost grows with the reach of the unit vectors in L, so this is only
        computed on request (conditional variances of the random effects).
        """
        if self.has_gradient:
            self._ensure(np.asarray(theta, dtype=float))
            index = next(n for n, b in enumerate(self.cp.blocks) if b.i == i and b.j == i)
            return self.kernel.inverse_blocks()[index].copy()
        kernel = self.kernel
        kernel.factor(self.re.templates(np.asarray(theta, dtype=float)))
        self._mark_factored(np.asarray(theta, dtype=float))
        term, off = self.re.terms[i], self.re.offsets[i]
        k, nlev, q = term.k, term.nlevels, self.re.q
        out = np.empty((nlev, k, k))
        per = max(1, chunk // k)
        for start in range(0, nlev, per):
            stop = min(nlev, start + per)
            cols = np.arange(off + start * k, off + stop * k)
            E = sp.csc_matrix((np.ones(len(cols)), (cols, np.arange(len(cols)))),
                              shape=(q, len(cols)))
            Y = sp.csc_matrix(kernel.half_solve(E))
            for a in range(k):
                for b in range(a + 1):
                    dots = np.asarray(Y[:, a::k].multiply(Y[:, b::k]).sum(axis=0)).ravel()
                    out[start:stop, a, b] = out[start:stop, b, a] = dots
        return out

    def blas_threads(self) -> int:
        """BLAS threads worth using in one evaluation: all for large dense work, else one.

        Counted on the kernel's ``parallel_flops`` (big BLAS-3 products): below 1e9 per
        evaluation a second thread gains too little to risk the slowdown it brings on a
        busy machine. ``LinearMixedModel.fit(blas_threads=...)`` overrides this choice.
        """
        return default_blas_threads() if self.kernel.parallel_flops >= THREADED_FLOPS else 1

    def describe(self) -> str:
        return self.kernel.describe()


# Largest q for which DensePLS is used for fits and refits: its evaluation with gradient
# costs O(q^2 r) flops (r: the columns after the leading term, plus p + 1) in a few dozen
# numpy calls, against the sparse kernels' Python-bound overhead of a few hundred
# microseconds. Chosen when the factor was of the whole q x q matrix; a bound on r rather
# than q is not measured yet (docs/performance.md, "What is left").
DENSE_MAX_Q = 120


class DensePLS:
    """The profiled criterion and its exact gradient from dense matrices, for small q.

    Same quantities as :class:`PLSWorkspace` with the same formulas (JSS paper eqs. 18-21,
    34, 41; the gradient of :mod:`lmm_sparse.gradient`), from one symmetric matrix of order
    ``m = q + p + 1`` made once, ``H = [Z X y0]'[Z X y0]`` (``G = Z'Z``, ``F = Z'[X y0]``,
    ``[X y0]'[X y0]``). As in MixedModels.jl's blocked Cholesky, [X y0] is a trailing block
    of the system, so one factorization gives both ``A + I`` and the Schur complement::

        Lambda_e = diag(Lambda, I_{p+1})
        Lambda_e' H Lambda_e + diag(I_q, 0) = [L 0; W' R'] [L' W; 0 R]
        L L' = A + I = Lambda' G Lambda + I        W = L^{-1} Lambda' F
        R'R = [X y0]'[X y0] - W'W                  (R_X, beta, pwrss from R as in evaluate)
        d/dLambda:  2 G Lambda P  -  2 (nmp / pwrss) w u'  [-  2 D Y C_X'  (REML)]

    with ``P = (A + I)^{-1}``, ``u = P Lambda'(F_y - F_X beta)``,
    ``w = F_y - F_X beta - G Lambda u``, ``C_X = P Lambda' F_X``, ``D = F_X - G Lambda C_X``
    and ``Y = (R_X'R_X)^{-1}``; the theta gradient sums the Lambda gradient over the
    positions each theta element fills.

    The leading term's block of ``A + I`` is block diagonal, so the factorization is the
    Schur kernel's in miniature (:meth:`_factored`): per-level k x k factors, then one
    LAPACK Cholesky of the trailing ``r = q - q1 + p + 1`` rows; ``P`` follows from the
    same blocks (:meth:`_inverse`). Lambda is block diagonal with small blocks, so products
    with it are a diagonal scaling plus per-term ``(m, levels, k) @ T`` (O(m^2 k)), and
    ``G Lambda P`` is formed only at Lambda's entries (O(nnz(Lambda) q)). Costs per
    evaluation: O(m^2 k) scaling, O(r^2 q1) for the complement, O(r^3) for its factor; the
    gradient adds O(q^2 r) for P.

    One evaluation costs its factorization step (:meth:`factor`: the same with Z's rows
    only, ``r = q - q1``) plus the p + 1 extra rows and a few O(p^2) reads of the factor.
    At sleepstudy's size (q = 36) an evaluation with gradient costs tens of microseconds,
    against ~1 ms through a sparse kernel, whose cost there is per-call overhead: that is
    what makes small fits and the bootstrap's thousand refits fast. Read-only once built;
    :meth:`with_cross_products` gives one for a new response that shares Z'Z and the maps.
    """

    def __init__(self, re: ReStructure, cp: CrossProducts) -> None:
        q = re.q
        if q > DENSE_MAX_Q:
            raise ValueError(f"DensePLS is for q <= {DENSE_MAX_Q}, got q = {q}")
        self.re = re
        G = np.zeros((q, q))
        for b in cp.blocks:
            ki, kj = re.terms[b.i].k, re.terms[b.j].k
            a, c = np.indices((ki, kj)).reshape(2, -1)
            rows = (re.offsets[b.i] + b.rows[:, None] * ki + a).ravel()
            cols = (re.offsets[b.j] + b.cols[:, None] * kj + c).ravel()
            G[rows, cols] = b.C.ravel()
            G[cols, rows] = b.C.ravel()
        self._G = G
        # Lambda.flat[index] = theta[source]: T_i.T[triu] = theta_i puts theta element e of a
        # template at row cols_e, column rows_e of every level's block (see ReStructure).
        index, source = [], []
        for i, term in enumerate(re.terms):
            k = term.k
            r, c = np.triu_indices(k)
            base = re.offsets[i] + np.arange(term.nlevels)[:, None] * k
            index.append(((base + c) * q + (base + r)).ravel())
            source.append(np.tile(re.theta_offsets[i] + np.arange(len(r)), term.nlevels))
        # the gradient is needed at Lambda's entries only: their rows and columns
        self._rows, self._cols = np.divmod(np.concatenate(index), q)
        self._source = np.concatenate(source)
        self._ntheta = re.ntheta
        # Lambda_e = diag(s) + the blocks of the terms with k > 1: s holds the k = 1 terms'
        # theta at their columns (filled per evaluation from theta[_diag_source]), 1 elsewhere
        diagonal = [(off, t.nlevels, i) for i, (off, t) in enumerate(zip(re.offsets, re.terms,
                                                                         strict=True)) if t.k == 1]
        self._diag_index = np.concatenate(
            [np.arange(off, off + nl) for off, nl, _ in diagonal] or [np.zeros(0, dtype=int)])
        self._diag_source = np.concatenate(
            [np.full(nl, re.theta_offsets[i]) for _, nl, i in diagonal] or [np.zeros(0, dtype=int)])
        self._blocks = tuple(
            (i, off, off + t.nlevels * t.k, t.k)
            for i, (off, t) in enumerate(zip(re.offsets, re.terms, strict=True)) if t.k > 1
        )
        lead = re.terms[0]
        self._lead = (lead.nlevels * lead.k, lead.k)  # the leading term's q1 and k
        self._lead_levels = np.arange(lead.nlevels)
        self._k_diag = np.arange(lead.k)
        q2 = q - lead.nlevels * lead.k
        self._lower_q2 = np.tril(np.ones((q2, q2), dtype=bool))
        self._set_response(cp)

    def _set_response(self, cp: CrossProducts) -> None:
        q = self.re.q
        self._upper_p = np.triu(np.ones((cp.p, cp.p), dtype=bool))
        F = np.concatenate([Z.reshape(-1, Z.shape[2]) for Z in cp.ZtXy], axis=0)
        H = np.empty((q + cp.p + 1,) * 2)
        H[:q, :q], H[:q, q:], H[q:, :q], H[q:, q:] = self._G, F, F.T, cp.XyXy
        self.cp, self._F, self._H = cp, F, H

    def with_cross_products(self, cp: CrossProducts) -> DensePLS:
        """The same structure with a new response's cross-products (shares G, index maps)."""
        other = copy.copy(self)  # shallow: the structure's arrays are shared, never written
        other._set_response(cp)
        return other

    def _lambda_e(self, theta: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int,
                                                                              np.ndarray]]]:
        """Lambda_e at theta as its diagonal part s (length m) and its k > 1 blocks
        (lo, hi, k, template)."""
        s = np.ones(self._H.shape[0])
        s[self._diag_index] = theta[self._diag_source]
        blocks = [(lo, hi, k, self.re.template(theta, i)) for i, lo, hi, k in self._blocks]
        return s, blocks

    @staticmethod
    def _times_lambda(M: np.ndarray, s: np.ndarray, blocks) -> np.ndarray:
        """M Lambda_e for an r x m' matrix M (m' <= m): the columns times s, then each k > 1
        term's columns times its template, per level."""
        r, size = M.shape
        out = M * s[:size]
        for lo, hi, k, T in blocks:
            out[:, lo:hi] = (M[:, lo:hi].reshape(r, -1, k) @ T).reshape(r, hi - lo)
        return out

    @staticmethod
    def _lambda_t_times(M: np.ndarray, s: np.ndarray, blocks) -> np.ndarray:
        """Lambda_e' M for an m' x c matrix M (m' <= m), by rows as _times_lambda by columns."""
        size, c = M.shape
        out = M * s[:size, None]
        for lo, hi, k, T in blocks:
            out[lo:hi] = (T.T @ M[lo:hi].reshape(-1, k, c)).reshape(hi - lo, c)
        return out

    def _factored(self, theta: np.ndarray, size: int) -> _DenseFactor | None:
        """The block Cholesky factor of ``Lambda_e' H Lambda_e + diag(I_q, 0)`` restricted
        to H's leading ``size`` rows and columns, or None if not positive definite.

        The leading term's block of Z'Z is block diagonal (every row is in one level of its
        factor), so it is factored level by level, ``L1_l L1_l' = T' G_l T + I``, and only
        the Schur complement of the ``r = size - q1`` rows after it is dense::

            E = C L1^{-T}       (C = the scaled rows after the leading term, its columns)
            S = S0 - E E' = Sf Sf'   (S0: the scaled trailing block, + I on its Z part)

        At lexdec's size (q1 = 79 of q = 100) that is a Cholesky factor of order 27 instead
        of 106, and far fewer flops for the inverse behind the gradient.
        """
        q1, k = self._lead
        s, blocks = self._lambda_e(theta)
        HL = self._times_lambda(self._H[:size, :size], s, blocks)  # H Lambda_e
        A = self._lambda_t_times(HL, s, blocks)  # Lambda_e' H Lambda_e
        n1 = q1 // k
        D = A[:q1, :q1].reshape(n1, k, n1, k)[self._lead_levels, :, self._lead_levels, :]
        D[:, self._k_diag, self._k_diag] += 1.0  # (n1, k, k), a copy
        if k == 1:
            L1 = np.sqrt(D)
            L1inv = 1.0 / L1
            E = A[q1:, :q1] * L1inv[:, 0, 0]
        else:
            try:  # T' G_l T + I is positive definite unless theta is not finite
                L1 = np.linalg.cholesky(D)
            except np.linalg.LinAlgError:
                return None
            L1inv = np.linalg.inv(L1)
            E = (A[q1:, :q1].reshape(-1, n1, k).transpose(1, 0, 2)
                 @ L1inv.transpose(0, 2, 1)).transpose(1, 0, 2).reshape(-1, q1)
        S = A[q1:, q1:] - E @ E.T
        q2 = self.re.q - q1
        S.ravel()[: min(q2, S.shape[0]) * (S.shape[0] + 1) : S.shape[0] + 1] += 1.0
        if S.size:
            # S.T is S's Fortran-ordered view: LAPACK's upper factor of it, in place, is
            # the lower factor of S in C order, and the other triangle is left as it was.
            _, info = _dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
            if info != 0:
                return None
        return _DenseFactor(HL=HL, A=A, L1=L1, L1inv=L1inv, E=E, Sf=S)

    def factor(self, theta: np.ndarray) -> bool:
        """The factorization step alone: ``Lambda' G Lambda + I = L L'`` (q x q); whether
        it is positive definite. For measuring what an evaluation adds to it."""
        return self._factored(np.asarray(theta, dtype=float), self.re.q) is not None

    def _logs(self, f: _DenseFactor) -> tuple[float, float, float]:
        """ldL2, ldRX2 and pwrss from the factor's diagonals."""
        q2, p = self.re.q - self._lead[0], self.cp.p
        d = f.Sf.ravel()[:: f.Sf.shape[0] + 1]
        lead = np.log(f.L1[:, self._k_diag, self._k_diag]).sum()
        logs = np.log(d[:-1])
        return (2.0 * float(lead + logs[:q2].sum()), 2.0 * float(logs[q2:q2 + p].sum()),
                float(d[-1] ** 2))

    def _solve(self, theta: np.ndarray):
        """The factor at theta (None where not positive definite), R_X (upper, p x p),
        beta for y0, ldL2, ldRX2 and pwrss."""
        q2, p = self.re.q - self._lead[0], self.cp.p
        f = self._factored(theta, self._H.shape[0])
        if f is None:
            return None
        R = f.Sf[q2:, q2:].T  # upper triangular; its strict lower triangle is not R's
        RX = np.where(self._upper_p, R[:p, :p], 0.0)
        beta = _dtrtrs(RX, R[:p, p])[0] if p else np.zeros(0)
        return (f, RX, beta, *self._logs(f))

    def _inverse(self, f: _DenseFactor) -> np.ndarray:
        """P = (A + I)^{-1} (q x q) from the block factor ``L = [L1 0; E2 L22]``:
        with ``X22 = L22^{-1}`` and ``V = E2 L1^{-1}``,

            P22 = X22' X22,   P21 = -P22 V,   P11 = blockdiag(L1^{-T} L1^{-1}) - V' P21.
        """
        (q1, k), q = self._lead, self.re.q
        q2, n1 = q - q1, q1 // k
        L1inv = f.L1inv
        if k == 1:
            V = f.E[:q2] * L1inv[:, 0, 0]
            P11d = L1inv * L1inv
        else:
            V = (f.E[:q2].reshape(q2, n1, k).transpose(1, 0, 2) @ L1inv).transpose(
                1, 0, 2).reshape(q2, q1)
            P11d = L1inv.transpose(0, 2, 1) @ L1inv
        P = np.empty((q, q))
        if q2:
            L22 = np.where(self._lower_q2, f.Sf[:q2, :q2], 0.0)
            X22t = _dtrtri(L22.T, lower=0, overwrite_c=1)[0]  # X22', Fortran order
            P22 = X22t @ X22t.T
            W = P22 @ V
            P[q1:, q1:], P[:q1, :q1] = P22, V.T @ W
            np.negative(W, out=P[q1:, :q1])
            P[:q1, q1:] = P[q1:, :q1].T
        else:
            P[:q1, :q1] = 0.0
        lead = P[:q1, :q1].reshape(n1, k, n1, k)
        lead[self._lead_levels, :, self._lead_levels, :] += P11d
        return P

    def evaluate(self, theta: np.ndarray) -> PLSEval:
        """The PLS solution at theta, as :meth:`PLSWorkspace.evaluate`."""
        theta = np.array(theta, dtype=float)
        p = self.cp.p
        parts = self._solve(theta)
        if parts is None:
            return PLSEval(theta, math.inf, math.inf, 0.0, np.full(p, np.nan),
                           np.full((p, p), np.nan))
        _, RX_c, beta_y0, ldL2, ldRX2, pwrss = parts
        beta, RX = self.cp.from_y0(beta_y0, RX_c)
        return PLSEval(theta=theta, ldL2=ldL2, ldRX2=ldRX2, pwrss=pwrss, beta=beta, RX=RX)

    def objective(self, theta: np.ndarray, reml: bool) -> float:
        """The profiled criterion alone: read from the factor's diagonal, no solve."""
        theta = np.asarray(theta, dtype=float)
        f = self._factored(theta, self._H.shape[0])
        if f is None:
            return math.inf
        ev = PLSEval(theta, *self._logs(f), _NO_BETA, _NO_BETA)
        return profiled_deviance(ev, self.cp.n, self.cp.p, reml)

    def objective_and_gradient(self, theta: np.ndarray, reml: bool) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient in theta (formulas in the class docstring)."""
        theta = np.asarray(theta, dtype=float)
        n, p = self.cp.n, self.cp.p
        parts = self._solve(theta)
        if parts is None:
            return math.inf, np.full(self._ntheta, np.nan)
        f, RX, beta, ldL2, ldRX2, pwrss = parts
        if not (np.isfinite(pwrss) and pwrss > 0):
            return math.inf, np.full(self._ntheta, np.nan)
        nmp = n - p if reml else n
        value = (ldL2 + (ldRX2 if reml else 0.0)
                 + nmp * (1.0 + math.log(2.0 * math.pi * pwrss / nmp)))
        q = self.re.q
        P = self._inverse(f)
        GL, B = f.HL[:q, :q], f.A[:q, q:]  # G Lambda and Lambda' F
        F, rows, cols = self._F, self._rows, self._cols
        u = P @ (B[:, p] - B[:, :p] @ beta)
        w = F[:, p] - F[:, :p] @ beta - GL @ u
        # d/dLambda at Lambda's entries only: rows x cols, never the whole q x q matrix
        # (G Lambda P)[rows, cols], P = P'; a diagonal Lambda (no k > 1 term): rows = cols =
        # 0..q-1, so the diagonal, without gathers
        GLP = (np.einsum("ij,ij->i", GL[rows], P[cols]) if self._blocks
               else np.einsum("ij,ij->i", GL, P))
        dLam = 2.0 * GLP - (2.0 * nmp / pwrss) * (w[rows] * u[cols])
        if reml and p:
            CX = P @ B[:, :p]
            DY = (F[:, :p] - GL @ CX) @ inverse_gram(RX)
            dLam -= 2.0 * np.einsum("ij,ij->i", DY[rows], CX[cols])
        grad = np.bincount(self._source, weights=dLam, minlength=self._ntheta)
        return value, grad

    def describe(self) -> str:
        return f"dense, leading term by levels, q = {self.re.q}"


@dataclass(frozen=True)
class _DenseFactor:
    """DensePLS's factor at one theta (see DensePLS._factored): H Lambda_e, the scaled H,
    the leading term's per-level factors L1 (levels, k, k) and their inverses L1inv,
    E = C L1^{-T} and the trailing Schur complement's factor Sf (lower triangle of a
    C-ordered array)."""

    HL: np.ndarray
    A: np.ndarray
    L1: np.ndarray
    L1inv: np.ndarray
    E: np.ndarray
    Sf: np.ndarray


_NO_BETA = np.zeros(0)  # PLSEval fields a criterion alone does not need
_dpotrf = scipy.linalg.lapack.dpotrf
_dtrtri = scipy.linalg.lapack.dtrtri
_dtrtrs = scipy.linalg.lapack.dtrtrs
