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


# Largest q for which DensePLS is used for refits: its evaluation costs a few q x q BLAS-3
# products (~8 q^3 flops with the gradient), against the sparse kernels' Python-bound
# overhead of a few hundred microseconds per evaluation with the gradient.
DENSE_MAX_Q = 120


class DensePLS:
    """The profiled criterion and its exact gradient from dense q x q matrices, for small q.

    Same quantities as :class:`PLSWorkspace` with the same formulas (JSS paper eqs. 18-21,
    34, 41; the gradient of :mod:`lmm_sparse.gradient`), computed with a handful of dense
    BLAS/LAPACK calls on ``G = Z'Z``, ``Lambda`` and ``F = Z'[X y0]``:

        A + I = Lambda' G Lambda + I = L L'      W = L^{-1} Lambda' F
        M = [X y0]'[X y0] - W'W = R'R            (R_X, beta, pwrss from R as in evaluate)
        d/dLambda:  2 G Lambda P  -  2 (nmp / pwrss) w u'  [-  2 D Y C_X'  (REML)]

    with ``P = (A + I)^{-1}``, ``u = P Lambda'(F_y - F_X beta)``,
    ``w = F_y - F_X beta - G Lambda u``, ``C_X = P Lambda' F_X``, ``D = F_X - G Lambda C_X``
    and ``Y = (R_X'R_X)^{-1}``; the theta gradient sums the Lambda gradient over the
    positions each theta element fills. Lambda is block diagonal with small blocks, so
    products with it are per-term ``(q, levels, k) @ T`` (O(q^2 k)), and ``G Lambda P`` is
    formed only at Lambda's entries (O(nnz(Lambda) q)): the O(q^3) work is the Cholesky
    factor and inverse alone. At sleepstudy's size (q = 36) one evaluation with gradient
    costs tens of microseconds, against ~1 ms through a sparse kernel, whose cost there is
    per-call overhead: that is what makes the bootstrap's thousand refits fast.
    Read-only once built; :meth:`with_cross_products` gives one for a new response that
    shares G and the index maps.
    """

    def __init__(self, re: ReStructure, cp: CrossProducts) -> None:
        q = re.q
        if q > DENSE_MAX_Q:
            raise ValueError(f"DensePLS is for q <= {DENSE_MAX_Q}, got q = {q}")
        self.re, self.cp = re, cp
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
        self._index = np.concatenate(index)
        self._source = np.concatenate(source)
        # the gradient is needed at Lambda's entries only: their rows and columns
        self._rows, self._cols = np.divmod(self._index, q)
        self._ntheta = re.ntheta
        self._spans = tuple(
            (off, off + t.nlevels * t.k, t.k) for off, t in zip(re.offsets, re.terms, strict=True)
        )
        self._set_response(cp)

    def _set_response(self, cp: CrossProducts) -> None:
        self.cp = cp
        self._F = np.concatenate([Z.reshape(-1, Z.shape[2]) for Z in cp.ZtXy], axis=0)

    def with_cross_products(self, cp: CrossProducts) -> DensePLS:
        """The same structure with a new response's cross-products (shares G, index maps)."""
        other = object.__new__(DensePLS)
        other.re, other._G, other._index = self.re, self._G, self._index
        other._source, other._ntheta = self._source, self._ntheta
        other._rows, other._cols, other._spans = self._rows, self._cols, self._spans
        other._set_response(cp)
        return other

    def _times_lambda(self, M: np.ndarray, templates: list[np.ndarray]) -> np.ndarray:
        """M Lambda for an m x q matrix M: each term's columns times its template, per level."""
        m = M.shape[0]
        out = np.empty((m, M.shape[1]))  # C order, also for a transposed M
        for (lo, hi, k), T in zip(self._spans, templates, strict=True):
            if k == 1:
                np.multiply(M[:, lo:hi], T[0, 0], out=out[:, lo:hi])
            else:
                out[:, lo:hi] = (M[:, lo:hi].reshape(m, -1, k) @ T).reshape(m, hi - lo)
        return out

    def _solve(self, theta: np.ndarray):
        """The factors at theta, or None where A + I or M is not positive definite."""
        q = self._G.shape[0]
        templates = self.re.templates(theta)
        GL = self._times_lambda(self._G, templates)
        A = self._times_lambda(GL.T, templates)  # (G Lambda)' Lambda = Lambda' G Lambda
        A.ravel()[:: q + 1] += 1.0  # a view: A is C-contiguous
        L, info = _dpotrf(A, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return None
        B = self._times_lambda(self._F.T, templates).T  # Lambda' F
        W = _dtrtrs(L, B, lower=1)[0]
        R, info = _dpotrf(self.cp.XyXy - W.T @ W, lower=0, clean=1)
        if info != 0:
            return None
        return GL, L, B, R

    def evaluate(self, theta: np.ndarray) -> PLSEval:
        """The PLS solution at theta, as :meth:`PLSWorkspace.evaluate`."""
        theta = np.array(theta, dtype=float)
        p = self.cp.p
        parts = self._solve(theta)
        if parts is None:
            return PLSEval(theta, math.inf, math.inf, 0.0, np.full(p, np.nan),
                           np.full((p, p), np.nan))
        _, L, _, R = parts
        RX_c = R[:p, :p]
        beta_y0 = _dtrtrs(RX_c, R[:p, p])[0] if p else np.zeros(0)
        beta, RX = self.cp.from_y0(beta_y0, RX_c)
        return PLSEval(
            theta=theta,
            ldL2=2.0 * float(np.sum(np.log(np.diag(L)))),
            ldRX2=2.0 * float(np.sum(np.log(np.diag(RX_c)))),
            pwrss=float(R[p, p] ** 2),
            beta=beta,
            RX=RX,
        )

    def objective(self, theta: np.ndarray, reml: bool) -> float:
        return profiled_deviance(self.evaluate(theta), self.cp.n, self.cp.p, reml)

    def objective_and_gradient(self, theta: np.ndarray, reml: bool) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient in theta (formulas in the class docstring)."""
        theta = np.asarray(theta, dtype=float)
        n, p = self.cp.n, self.cp.p
        parts = self._solve(theta)
        if parts is None:
            return math.inf, np.full(self._ntheta, np.nan)
        GL, L, B, R = parts
        RX = R[:p, :p]
        pwrss = float(R[p, p] ** 2)
        if not (np.isfinite(pwrss) and pwrss > 0):
            return math.inf, np.full(self._ntheta, np.nan)
        ldL2 = 2.0 * float(np.sum(np.log(np.diag(L))))
        ldRX2 = 2.0 * float(np.sum(np.log(np.diag(RX))))
        nmp = n - p if reml else n
        value = (ldL2 + (ldRX2 if reml else 0.0)
                 + nmp * (1.0 + math.log(2.0 * math.pi * pwrss / nmp)))
        beta = _dtrtrs(RX, R[:p, p])[0] if p else np.zeros(0)  # for y0
        # dpotri inverts in the lower triangle; the upper one is zero (dpotrf's clean=1)
        Pl = _dpotri(L, lower=1)[0]
        P = Pl + Pl.T
        P.ravel()[:: P.shape[0] + 1] *= 0.5
        F, rows, cols = self._F, self._rows, self._cols
        u = P @ (B[:, p] - B[:, :p] @ beta)
        w = F[:, p] - F[:, :p] @ beta - GL @ u
        # d/dLambda at Lambda's entries only: rows x cols, never the whole q x q matrix
        GLP = np.einsum("ij,ij->i", GL[rows], P[cols])  # (G Lambda P)[rows, cols]; P = P'
        dLam = 2.0 * GLP - (2.0 * nmp / pwrss) * (w[rows] * u[cols])
        if reml and p:
            CX = P @ B[:, :p]
            DY = (F[:, :p] - GL @ CX) @ inverse_gram(RX)
            dLam -= 2.0 * np.einsum("ij,ij->i", DY[rows], CX[cols])
        grad = np.bincount(self._source, weights=dLam, minlength=self._ntheta)
        return value, grad

    def describe(self) -> str:
        return f"dense q x q, q = {self._G.shape[0]}"


_dpotrf = scipy.linalg.lapack.dpotrf
_dpotri = scipy.linalg.lapack.dpotri
_dtrtrs = scipy.linalg.lapack.dtrtrs
