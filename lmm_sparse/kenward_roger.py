"""Kenward-Roger inference for the fixed effects, as pbkrtest computes it for lmerTest.

Kenward & Roger (1997, Biometrics 53:983) correct two small-sample problems of the Wald
test of ``L beta = 0`` in a REML fit: ``Phi = (X' Sigma^{-1} X)^{-1}`` (``vcov``) ignores
that the covariance parameters are estimated, and the Wald statistic is not F
distributed. pbkrtest (Halekoh & Hojsgaard 2014, JSS 59(9)) implements the method for
covariance structures that are linear in their parameters; lmerTest's
``summary(m, ddf = "Kenward-Roger")`` and ``anova(m, ddf = "Kenward-Roger")`` call it.

The covariance parameters ``gamma`` are, per random-effects term (lme4's order), the lower
triangle (column by column) of the term's covariance ``sigma^2 T T'``, then the residual
variance ``sigma^2``, so that ``Sigma = sum_r gamma_r G_r`` with ``G_r = Z E_r Z'``
(``E_r = I_levels (x) (e_a e_b' + e_b e_a')``, or ``e_a e_a'`` on the diagonal) and
``G_last = I_n``. With ``P_r = -X' Sigma^{-1} G_r Sigma^{-1} X`` and
``Q_rs = X' Sigma^{-1} G_r Sigma^{-1} G_s Sigma^{-1} X``:

* ``W = 2 I2^{-1}``, ``I2_rs = tr(Sigma^{-1} G_r Sigma^{-1} G_s) - 2 tr(Phi Q_rs)
  + tr(Phi P_r Phi P_s)`` (twice the expected REML information);
* ``U = sum_rs W_rs (Q_rs - P_r Phi P_s)`` and ``Phi_A = Phi + 2 Phi U Phi`` (pbkrtest's
  ``vcovAdj``; the second-derivative term of the paper vanishes for linear structures);
* for a contrast ``L`` (q x p): ``Theta = L'(L Phi L')^{-1} L``, ``A1``, ``A2`` and from
  them the denominator df ``m`` and the scale ``lambda`` of the F statistic
  (:func:`kr_ddf`, :func:`kr_ftest`).

**No n x n matrix.** pbkrtest forms ``Sigma^{-1}`` and every ``G_r`` densely (n x n).
Here, with ``V = Sigma / sigma^2 = I + Z Lambda Lambda' Z'`` and Woodbury,
``C = Z' V^{-1} Z = F - F Lambda (Lambda' F Lambda + I)^{-1} Lambda' F`` (``F = Z'Z``) and
``D = Z' V^{-1} X`` are q x q and q x p, and every quantity above is a contraction of
their blocks: ``tr(V^{-1} G_r V^{-1} G_s) = sum <C_bc, C_ad>`` (Frobenius products of the
level-by-level blocks of coefficients a, b, c, d), ``X' V^{-1} G_r V^{-1} X = D_a' D_b``,
``X' V^{-1} G_r V^{-1} G_s V^{-1} X = D_a' C_bc D_d``. The residual's ``G = I`` is reached
through ``sum_r gamma_r G_r = Sigma``, i.e. ``V^{-1} I = (I - sum_r psi_r V^{-1} G_r)``
(``psi = gamma / sigma^2``), so it needs no ``V^{-2}``.

``V`` is block diagonal over the connected components of the levels (two levels are
connected when they share an observation), and so is ``C`` (``D``'s rows split the same
way): the sums are taken component by component, small components packed into chunks of
about ``chunk_columns`` columns. Cost: O(nnz(Z) (k + p) + n p^2) once for ``Z'Z``,
``Z'X``, ``X'X``; per chunk of ``q_c`` columns about ``2.3 q_c^3`` flops (a dense
Cholesky, a triangular solve, a Gram product) plus O(q_c^2 k^2) for the traces and
O(q_c^2 k p + q_c k^4 p^2) for the ``D_a' C_bc D_d``; memory O(q_c^2) for the largest
chunk, O(q p), O(n p) and O(m^2 p^2) (m covariance parameters) otherwise. A single
crossed component (e.g. subjects x items) is one dense q x q problem: models whose
largest component exceeds ``max_component_columns`` are refused rather than exhausting
memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy import stats
from scipy.sparse.csgraph import connected_components

from .errors import ModelSpecError
from .terms import ReStructure, template_times
from .threads import blas_limit

__all__ = [
    "KRAdjustment",
    "KRTest",
    "KRTTest",
    "kr_adjustment",
    "kr_ddf",
    "kr_ftest",
    "kr_ttest",
]

# pbkrtest inverts the information matrix when its smallest |eigenvalue| exceeds this
# (an absolute threshold, on the scale of its gamma), else takes MASS::ginv's
# pseudo-inverse, which drops singular values below sqrt(eps) times the largest.
_INFO_EIGEN_MIN = 1e-10
_GINV_RCOND = math.sqrt(np.finfo(float).eps)
# pbkrtest's zero guards: V0 = 1 + c1 B is set to 0 below 1e-10; (1 - A2/q) / V1 is 1 when
# both are below 1e-14; the F scale is 1 when the df is within 1e-2 of 2.
_V0_ZERO = 1e-10
_DIV_ZERO = 1e-14
_DF_NEAR_TWO = 1e-2
# Dense work of one chunk of q_c columns is about _CHUNK_FLOPS q_c^3 (Cholesky factor,
# triangular solve, Gram product); below _THREADED_FLOPS it runs on one BLAS thread.
_CHUNK_FLOPS = 2.3
_THREADED_FLOPS = 1e9


@dataclass(frozen=True)
class KRAdjustment:
    """pbkrtest's ``vcovAdj`` result and the attributes its df computations use.

    Fields
    ------
    PhiA: Kenward-Roger adjusted covariance of beta, ``Phi + 2 Phi U Phi`` (p x p).
    Phi: the unadjusted ``(X' Sigma^{-1} X)^{-1}`` (the fit's ``vcov``).
    P: ``P_r = -X' Sigma^{-1} G_r Sigma^{-1} X`` for every covariance parameter, (m + 1, p, p).
    W: ``2 I2^{-1}``, the asymptotic covariance of the covariance parameters, (m + 1, m + 1).
    gamma: the covariance parameters (pbkrtest's ``ggamma``), the residual variance last.
    gamma_names: a label for each of them.
    condi: smallest |eigenvalue| of ``I2`` (pbkrtest's ``condi``); at or
        below 1e-10 ``W`` is a pseudo-inverse.
    sigma: residual standard deviation (for the sums of squares lmerTest reports).
    names: fixed-effect names, the order of beta.
    """

    PhiA: np.ndarray
    Phi: np.ndarray
    P: np.ndarray
    W: np.ndarray
    gamma: np.ndarray
    gamma_names: tuple[str, ...]
    condi: float
    sigma: float
    names: tuple[str, ...]


@dataclass(frozen=True)
class KRTest:
    """A Kenward-Roger F test of ``L beta = rhs``, in the terms of lmerTest's anova table.

    Fields
    ------
    F: the scaled statistic ``scaling * unscaled`` ("F value").
    numdf: rank of L ("NumDF").
    dendf: the Kenward-Roger denominator df ("DenDF").
    p_value: ``P(F(numdf, dendf) > F)`` ("Pr(>F)").
    scaling: Kenward & Roger's scale ``lambda`` of the Wald F.
    unscaled: ``(L b - rhs)' (L PhiA L')^{-1} (L b - rhs) / numdf``.
    mean_sq: ``unscaled * sigma^2`` ("Mean Sq": lmerTest uses the unscaled F here).
    sum_sq: ``mean_sq * numdf`` ("Sum Sq").
    """

    F: float
    numdf: int
    dendf: float
    p_value: float
    scaling: float
    unscaled: float
    mean_sq: float
    sum_sq: float


@dataclass(frozen=True)
class KRTTest:
    """A Kenward-Roger t test of one contrast (a row of lmerTest's coefficient table)."""

    estimate: float
    std_error: float
    df: float
    t_value: float
    p_value: float


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class _Params:
    """The random-effects covariance parameters, in pbkrtest's order.

    Fields
    ------
    term, row, col: term and template entry (row >= col) of each parameter, shape (m,).
    psi: its value relative to sigma^2, ``(T T')[row, col]``, shape (m,).
    names: a label for each parameter and then "Residual".
    """

    term: np.ndarray
    row: np.ndarray
    col: np.ndarray
    psi: np.ndarray
    names: tuple[str, ...]

    @property
    def m(self) -> int:
        return len(self.term)

    def of_term(self, t: int) -> np.ndarray:
        return np.flatnonzero(self.term == t)

    def pattern(self, r: int) -> tuple[tuple[int, int], ...]:
        """The (a, b) entries of E_r's template: one on the diagonal, two off it."""
        a, b = int(self.row[r]), int(self.col[r])
        return ((a, a),) if a == b else ((a, b), (b, a))


def _params(re: ReStructure, theta: np.ndarray) -> _Params:
    term, row, col, psi, names = [], [], [], [], []
    for t, raw in enumerate(re.terms):
        T = re.template(theta, t)
        S = T @ T.T
        for b in range(raw.k):  # column-major lower triangle, as R's lower.tri()
            for a in range(b, raw.k):
                term.append(t)
                row.append(a)
                col.append(b)
                psi.append(S[a, b])
                ca, cb = raw.coef_names[a], raw.coef_names[b]
                what = f"var({ca})" if a == b else f"cov({ca}, {cb})"
                names.append(f"{raw.group}: {what}")
    names.append("Residual")
    return _Params(np.array(term, dtype=int), np.array(row, dtype=int),
                   np.array(col, dtype=int), np.array(psi, dtype=float), tuple(names))


# --------------------------------------------------------------------------- chunks


@dataclass(frozen=True)
class _Chunk:
    """A union of connected components of the levels, processed as one dense problem.

    Fields
    ------
    levels: per term, the sorted levels of that term in the chunk.
    cols: their Z columns, term by term, level by level, coefficient by coefficient.
    starts: where each term's columns begin in ``cols`` (length: terms + 1).
    """

    levels: tuple[np.ndarray, ...]
    cols: np.ndarray
    starts: tuple[int, ...]


def _level_components(re: ReStructure) -> np.ndarray:
    """Connected component of every level (levels numbered term after term).

    Two levels are connected when some observation has both; V = I + Z Lambda Lambda' Z'
    has no entry between observations of different components.
    """
    sizes = [t.nlevels for t in re.terms]
    if len(sizes) == 1:
        return np.arange(sizes[0])
    first = np.concatenate([[0], np.cumsum(sizes)])
    n = len(re.terms[0].codes)
    rows = np.tile(np.arange(n), len(sizes))
    nodes = np.concatenate([first[t] + term.codes for t, term in enumerate(re.terms)])
    incidence = sp.csr_matrix((np.ones(len(rows)), (rows, nodes)), shape=(n, first[-1]))
    _, labels = connected_components(incidence.T @ incidence, directed=False)
    return labels


def _make_chunks(re: ReStructure, chunk_columns: int, max_component_columns: int) -> list[_Chunk]:
    """Pack whole components, in order, into chunks of about ``chunk_columns`` columns."""
    labels = _level_components(re)
    k = np.concatenate([np.full(t.nlevels, t.k) for t in re.terms])
    comp_cols = np.bincount(labels, weights=k).astype(np.int64)
    biggest = int(comp_cols.max())
    if biggest > max_component_columns:
        raise ModelSpecError(
            f"Kenward-Roger needs a dense {biggest} x {biggest} matrix for the largest "
            f"connected set of levels (limit max_component_columns={max_component_columns}, "
            f"about {8 * biggest**2 / 1e9:.1f} GB each): the random-effects design is too "
            "crossed for this method; pass a larger limit if the memory is there"
        )
    comp_chunk = (np.cumsum(comp_cols) - comp_cols) // max(int(chunk_columns), 1)
    node_chunk = comp_chunk[labels]
    order = np.argsort(node_chunk, kind="stable")  # stable: term-major, level order kept
    bounds = np.flatnonzero(np.diff(node_chunk[order])) + 1
    first = np.concatenate([[0], np.cumsum([t.nlevels for t in re.terms])])
    chunks = []
    for nodes in np.split(order, bounds):
        levels, cols, starts = [], [], [0]
        for t, term in enumerate(re.terms):
            lv = nodes[(nodes >= first[t]) & (nodes < first[t + 1])] - first[t]
            levels.append(lv)
            cols.append((re.offsets[t] + lv[:, None] * term.k + np.arange(term.k)).ravel())
            starts.append(starts[-1] + len(lv) * term.k)
        chunks.append(_Chunk(tuple(levels), np.concatenate(cols), tuple(starts)))
    return chunks


# --------------------------------------------------------------------------- q-space moments


@dataclass(frozen=True)
class _Moments:
    """Sums over the chunks, relative to sigma^2 (V^{-1} in place of Sigma^{-1}).

    Fields
    ------
    trace: tr(V^{-1} G_r), (m,).
    K: tr(V^{-1} G_r V^{-1} G_s), (m, m).
    P: X' V^{-1} G_r V^{-1} X, (m, p, p) (pbkrtest's P with the opposite sign).
    Q: X' V^{-1} G_r V^{-1} G_s V^{-1} X, (m, m, p, p).
    XVX: X' V^{-1} X, (p, p).
    """

    trace: np.ndarray
    K: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    XVX: np.ndarray


def _lambda_t_times(chunk: _Chunk, re: ReStructure, templates: list[np.ndarray],
                    M: np.ndarray) -> np.ndarray:
    """Lambda_c' M for the chunk's rows of Lambda: each level's k rows times T_t'."""
    out = np.empty_like(M)
    for t, term in enumerate(re.terms):
        lo, hi = chunk.starts[t], chunk.starts[t + 1]
        if hi > lo:
            block = M[lo:hi].reshape(-1, term.k, M.shape[1])
            out[lo:hi] = template_times(templates[t], block, transpose=True).reshape(hi - lo, -1)
    return out


def _chunk_CD(chunk: _Chunk, re: ReStructure, templates: list[np.ndarray], ZtZ: sp.csr_matrix,
              ZtX: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C = Z_c' V^{-1} Z_c, D = Z_c' V^{-1} X and the chunk's share of X'X - X' V^{-1} X.

    Woodbury on the chunk: with F = Z_c'Z_c and L L' = Lambda' F Lambda + I,
    H = L^{-1} Lambda' [F, Z_c'X] gives C = F - H_1'H_1, D = Z_c'X - H_1'H_2 and
    X'X - X'V^{-1}X = sum over chunks of H_2'H_2. No inverse of Lambda is needed, so
    variances at zero (singular fits) are fine.
    """
    cols = chunk.cols
    qc = len(cols)
    F = ZtZ[cols][:, cols].toarray()
    B = ZtX[cols]
    LtF = _lambda_t_times(chunk, re, templates, F)
    A = _lambda_t_times(chunk, re, templates, np.ascontiguousarray(LtF.T))  # Lambda'F Lambda
    A = 0.5 * (A + A.T)
    A[np.diag_indices(qc)] += 1.0
    L = scipy.linalg.cholesky(A, lower=True, check_finite=False)
    rhs = np.hstack([LtF, _lambda_t_times(chunk, re, templates, B)])
    H = scipy.linalg.solve_triangular(L, rhs, lower=True, check_finite=False)
    H1, H2 = H[:, :qc], H[:, qc:]
    return F - H1.T @ H1, B - H1.T @ H2, H2.T @ H2


def _add_chunk(acc: dict[str, np.ndarray], chunk: _Chunk, re: ReStructure, params: _Params,
               C: np.ndarray, D: np.ndarray) -> None:
    """Add one chunk's contractions of C and D to the moment sums in ``acc``."""
    p = D.shape[1]
    present = [t for t in range(len(re.terms)) if len(chunk.levels[t])]
    blocks = {t: slice(chunk.starts[t], chunk.starts[t + 1]) for t in present}
    Ds = {t: D[blocks[t]].reshape(-1, re.terms[t].k, p) for t in present}  # (l, k, p)
    for t in present:
        kt, Dt = re.terms[t].k, Ds[t]
        Ctt = C[blocks[t], blocks[t]].reshape(-1, kt, len(chunk.levels[t]), kt)
        diag = np.einsum("gbga->ba", Ctt)  # tr(C_ba) over the levels: tr(E_r C)
        DtD = np.einsum("gax,gby->abxy", Dt, Dt)
        for r in params.of_term(t):
            for a, b in params.pattern(r):
                acc["trace"][r] += diag[b, a]
                acc["P"][r] += DtD[a, b]
        for u in present:
            if u < t:
                continue
            ku, Du = re.terms[u].k, Ds[u]
            Ctu = C[blocks[t], blocks[u]].reshape(-1, kt, len(chunk.levels[u]), ku)
            # <C_bc, C_ad> for all coefficient pairs: the Gram matrix of the l_t x l_u
            # coefficient blocks of C, indexed [b, c, a, d]
            Y = Ctu.transpose(1, 3, 0, 2).reshape(kt * ku, -1)
            gram = (Y @ Y.T).reshape(kt, ku, kt, ku)
            # D_a' C_bc D_d, indexed [a, x, b, c, d, y]
            CD = np.tensordot(Ctu, Du, axes=([2], [0]))  # [g, b, c, d, y]
            DCD = np.tensordot(Dt, CD, axes=([0], [0]))
            for r in params.of_term(t):
                for s in params.of_term(u):
                    k_rs, q_rs = 0.0, np.zeros((p, p))
                    for a, b in params.pattern(r):
                        for c, d in params.pattern(s):
                            k_rs += gram[b, c, a, d]
                            q_rs += DCD[a, :, b, c, d, :]
                    acc["K"][r, s] += k_rs
                    acc["Q"][r, s] += q_rs
                    if u != t:  # the (u, t) block is the transpose of this one
                        acc["K"][s, r] += k_rs
                        acc["Q"][s, r] += q_rs.T


def _moments(model, theta: np.ndarray, params: _Params, chunk_columns: int,
             max_component_columns: int) -> _Moments:
    """Accumulate the q-space moments over the chunks (see the module docstring)."""
    re: ReStructure = model.re
    X = np.asarray(model.X, dtype=float)
    Z = model.Z
    p, m = X.shape[1], params.m
    ZtZ = (Z.T @ Z).tocsr()
    ZtX = np.asarray(Z.T @ X)
    templates = re.templates(theta)
    acc = {"trace": np.zeros(m), "K": np.zeros((m, m)), "P": np.zeros((m, p, p)),
           "Q": np.zeros((m, m, p, p))}
    reduction = np.zeros((p, p))

    def add(chunk: _Chunk) -> None:
        nonlocal reduction
        C, D, red = _chunk_CD(chunk, re, templates, ZtZ, ZtX)
        reduction = reduction + red
        _add_chunk(acc, chunk, re, params, C, D)

    chunks = _make_chunks(re, chunk_columns, max_component_columns)
    big = [_CHUNK_FLOPS * len(c.cols) ** 3 >= _THREADED_FLOPS for c in chunks]
    # One BLAS thread for the small dense chunks: a multi-threaded BLAS on a busy machine
    # runs them many times slower (measured: 27 ms instead of 0.3 ms for a 256 x 256
    # Cholesky factor). Big chunks keep the BLAS's own threads. One limit for all of them:
    # setting it is not free (threadpoolctl scans the loaded libraries each time).
    with blas_limit(1):
        for chunk, is_big in zip(chunks, big, strict=True):
            if not is_big:
                add(chunk)
    for chunk, is_big in zip(chunks, big, strict=True):
        if is_big:
            add(chunk)
    return _Moments(acc["trace"], acc["K"], acc["P"], acc["Q"], X.T @ X - reduction)


def _with_residual(mo: _Moments, psi: np.ndarray, n: int) -> _Moments:
    """Append the residual's parameter, whose G is the identity, without V^{-2}.

    Since ``V = I + sum_r psi_r G_r``, ``V^{-1} G_last = V^{-1} = I - sum_r psi_r V^{-1} G_r``;
    every trace and product with G_last is then a combination of those of the G_r.
    """
    m, p = len(psi), mo.XVX.shape[0]
    Kpsi = mo.K @ psi
    K = np.zeros((m + 1, m + 1))
    K[:m, :m] = mo.K
    K[:m, m] = K[m, :m] = mo.trace - Kpsi
    K[m, m] = n - 2.0 * psi @ mo.trace + psi @ Kpsi
    Ppsi = np.tensordot(psi, mo.P, axes=1)
    P = np.concatenate([mo.P, (mo.XVX - Ppsi)[None]], axis=0)
    Qpsi = np.tensordot(mo.Q, psi, axes=([1], [0]))  # sum_s psi_s Q_rs, (m, p, p)
    Q = np.zeros((m + 1, m + 1, p, p))
    Q[:m, :m] = mo.Q
    Q[:m, m] = mo.P - Qpsi
    Q[m, :m] = np.swapaxes(Q[:m, m], 1, 2)
    Q[m, m] = mo.XVX - 2.0 * Ppsi + np.tensordot(psi, Qpsi, axes=1)
    trace = np.append(mo.trace, n - psi @ mo.trace)
    return _Moments(trace, K, P, Q, mo.XVX)


# --------------------------------------------------------------------------- vcovAdj


def _information2(K: np.ndarray, P: np.ndarray, Q: np.ndarray, Phi: np.ndarray) -> np.ndarray:
    """I2_rs = tr(S G_r S G_s) - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s): twice the expected
    REML information of gamma (S = Sigma^{-1}; P, Q, K on the scale of gamma)."""
    PhiP = Phi @ P  # (m, p, p)
    cross = np.einsum("rxy,syx->rs", PhiP, PhiP)
    phiQ = np.einsum("xy,rsyx->rs", Phi, Q)
    info = K - (phiQ + phiQ.T) + cross  # tr(Phi Q_rs) = tr(Phi Q_sr): averaged
    return 0.5 * (info + info.T)


def _gamma_covariance(info2: np.ndarray) -> tuple[np.ndarray, float]:
    """W = 2 I2^{-1}, a pseudo-inverse when I2 is (nearly) singular, as pbkrtest."""
    eig = np.linalg.eigvalsh(info2)
    condi = float(np.min(np.abs(eig)))
    if condi > _INFO_EIGEN_MIN:
        W = 2.0 * np.linalg.inv(info2)
    else:
        W = 2.0 * np.linalg.pinv(info2, rcond=_GINV_RCOND, hermitian=True)
    return 0.5 * (W + W.T), condi


def _adjusted_vcov(Phi: np.ndarray, P: np.ndarray, Q: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Phi_A = Phi + 2 Phi U Phi, U = sum_rs W_rs (Q_rs - P_r Phi P_s)."""
    PPhiP = np.einsum("rxy,yz,szw->rsxw", P, Phi, P, optimize=True)
    U = np.tensordot(W, Q - PPhiP, axes=([0, 1], [0, 1]))
    U = 0.5 * (U + U.T)
    out = Phi + 2.0 * Phi @ U @ Phi
    return 0.5 * (out + out.T)


def kr_adjustment(result, *, chunk_columns: int = 128,
                  max_component_columns: int = 10_000) -> KRAdjustment:
    """Kenward-Roger adjusted covariance of beta (pbkrtest's ``vcovAdj``) for a REML fit.

    ``result`` is an :class:`~lmm_sparse.results.LmerResult`. The moments are computed in
    q-space, chunk by chunk (module docstring: no n x n matrix; about ``2.3 q_c^3`` flops
    and ``O(q_c^2)`` memory per chunk of ``q_c`` columns). ``chunk_columns`` is the target
    chunk size for packing small components; ``max_component_columns`` refuses designs
    whose largest connected set of levels would need a bigger dense matrix.

    Raises ModelSpecError for ML fits: lmerTest offers Kenward-Roger only for REML fits
    (pbkrtest would refit with REML; refit with ``reml=True`` to get that).
    """
    if not result.reml:
        raise ModelSpecError(
            f"Kenward-Roger's method is only available for REML fits; this fit has "
            f"reml={result.reml!r} (refit with reml=True)"
        )
    model = result.model
    theta = np.asarray(result.theta, dtype=float)
    sigma2 = float(result.sigma) ** 2
    if not (np.isfinite(sigma2) and sigma2 > 0):
        raise ModelSpecError(
            f"Kenward-Roger needs a positive residual variance, got sigma={result.sigma!r}"
        )
    Phi = np.asarray(result.vcov, dtype=float)
    params = _params(model.re, theta)
    mo = _moments(model, theta, params, chunk_columns, max_component_columns)
    rel = _with_residual(mo, params.psi, int(result.nobs))
    # from V^{-1} to Sigma^{-1} = V^{-1} / sigma^2, pbkrtest's scale and sign
    K = rel.K / sigma2**2
    P = -rel.P / sigma2**2
    Q = rel.Q / sigma2**3
    info2 = _information2(K, P, Q, Phi)
    W, condi = _gamma_covariance(info2)
    PhiA = _adjusted_vcov(Phi, P, Q, W)
    gamma = np.append(params.psi * sigma2, sigma2)
    arrays = [PhiA, Phi.copy(), P, W, gamma]
    for a in arrays:
        a.flags.writeable = False
    return KRAdjustment(
        PhiA=arrays[0], Phi=arrays[1], P=arrays[2], W=arrays[3], gamma=arrays[4],
        gamma_names=params.names, condi=condi, sigma=float(result.sigma),
        names=tuple(result.fixef.index),
    )


# --------------------------------------------------------------------------- df and tests


def _contrast_matrix(adj: KRAdjustment, L) -> np.ndarray:
    """L as a finite 2-d float array with one column per fixed effect."""
    p = adj.Phi.shape[0]
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.ndim != 2 or L.shape[1] != p or L.shape[0] == 0:
        raise ModelSpecError(
            f"a contrast needs {p} columns (fixed effects {list(adj.names)}), got shape "
            f"{np.shape(L)}"
        )
    if not np.all(np.isfinite(L)):
        raise ModelSpecError(f"the contrast has non-finite entries: {L.tolist()}")
    return L


def _row_basis(L: np.ndarray) -> np.ndarray:
    """L itself when of full row rank, else an orthonormal basis of its row space
    (pbkrtest's force_full_rank: the F test depends on the row space only)."""
    sv = np.linalg.svd(L, compute_uv=False)
    tol = max(L.shape) * np.finfo(float).eps * (sv[0] if len(sv) else 0.0)
    rank = int(np.sum(sv > tol))
    if rank == 0:
        raise ModelSpecError(f"the contrast is zero: {L.tolist()}")
    if rank == L.shape[0]:
        return L
    return np.linalg.svd(L, full_matrices=False)[2][:rank]


def _a1_a2(adj: KRAdjustment, L: np.ndarray) -> tuple[float, float]:
    """A1 = sum W_rs tr(T_r) tr(T_s), A2 = sum W_rs tr(T_r T_s), T_r = Theta Phi P_r Phi."""
    Phi = adj.Phi
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    T = Theta @ Phi @ adj.P @ Phi  # (m + 1, p, p)
    tr = np.trace(T, axis1=1, axis2=2)
    A1 = float(tr @ adj.W @ tr)
    A2 = float(np.einsum("rs,rxy,syx->", adj.W, T, T))
    return A1, A2


def _ddf_and_scale(q: int, A1: float, A2: float) -> tuple[float, float]:
    """Kenward & Roger's denominator df m and F scale lambda from A1, A2 (pbkrtest's
    formulas, its zero guards, and IEEE arithmetic: a zero A2 gives NaN, as in R)."""
    q_, A1_, A2_ = np.float64(q), np.float64(A1), np.float64(A2)
    with np.errstate(divide="ignore", invalid="ignore"):
        B = (A1_ + 6.0 * A2_) / (2.0 * q_)
        g = ((q_ + 1.0) * A1_ - (q_ + 4.0) * A2_) / ((q_ + 2.0) * A2_)
        denom = 3.0 * q_ + 2.0 * (1.0 - g)
        c1, c2, c3 = g / denom, (q_ - g) / denom, (q_ + 2.0 - g) / denom
        V0 = 1.0 + c1 * B
        V0 = 0.0 if abs(V0) < _V0_ZERO else V0
        V1, V2 = 1.0 - c2 * B, 1.0 - c3 * B
        x = 1.0 - A2_ / q_
        ratio = 1.0 if abs(x) < _DIV_ZERO and abs(V1) < _DIV_ZERO else x / V1
        rho = ratio**2 * V0 / V2 / q_
        df = 4.0 + (q_ + 2.0) / (q_ * rho - 1.0)
        scale = 1.0 if abs(df - 2.0) < _DF_NEAR_TWO else df * x / (df - 2.0)
    return float(df), float(scale)


def kr_ddf(adj: KRAdjustment, L) -> float:
    """Kenward-Roger denominator df for one contrast row (pbkrtest's ``Lb_ddf``).

    ``L``: p numbers (or a 1 x p matrix), in the order of ``adj.names``. The t test of
    lmerTest's ``summary(ddf = "Kenward-Roger")`` pairs it with
    ``se = sqrt(L PhiA L')`` (see :func:`kr_ttest`).
    """
    L = _contrast_matrix(adj, L)
    if L.shape[0] != 1:
        raise ModelSpecError(f"kr_ddf takes one contrast row, got {L.shape[0]} rows; use kr_ftest")
    if not np.any(L):
        raise ModelSpecError(f"the contrast is zero: {L.tolist()}")
    A1, A2 = _a1_a2(adj, L)
    return _ddf_and_scale(1, A1, A2)[0]


def kr_ttest(adj: KRAdjustment, L, beta, rhs: float = 0.0) -> KRTTest:
    """lmerTest's Kenward-Roger t test of ``L beta = rhs`` (``contest1D``): the adjusted
    standard error, :func:`kr_ddf`'s df and the two-sided p-value."""
    Lrow = _contrast_matrix(adj, L)
    df = kr_ddf(adj, Lrow)
    ell = Lrow[0]
    estimate = float(ell @ np.asarray(beta, dtype=float))
    se = math.sqrt(float(ell @ adj.PhiA @ ell))
    t = (estimate - rhs) / se
    return KRTTest(estimate=estimate, std_error=se, df=df, t_value=t,
                   p_value=float(2.0 * stats.t.sf(abs(t), df)))


def kr_ftest(adj: KRAdjustment, L, beta, rhs=None) -> KRTest:
    """Kenward-Roger F test of ``L beta = rhs`` as lmerTest's anova(ddf = "Kenward-Roger").

    lmerTest (``contestMD``) calls pbkrtest's ``KRmodcomp`` and reports: "F value" =
    ``lambda * F_u`` with ``F_u`` the Wald statistic on the *adjusted* covariance over
    NumDF, "DenDF" = Kenward-Roger's ``m``, "Pr(>F)" from F(NumDF, DenDF) at the scaled
    value, and "Mean Sq" = ``F_u sigma^2``, "Sum Sq" = Mean Sq * NumDF (unscaled). A
    rank-deficient ``L`` is replaced by a basis of its row space; NumDF is its rank.
    ``rhs`` (default 0) is carried as ``beta_H = L^+ rhs``, as lmerTest does.
    """
    L0 = _contrast_matrix(adj, L)
    beta = np.asarray(beta, dtype=float)
    if beta.shape != (L0.shape[1],):
        raise ModelSpecError(f"beta needs {L0.shape[1]} values, got shape {beta.shape}")
    diff = beta.copy()
    if rhs is not None:
        rhs = np.broadcast_to(np.asarray(rhs, dtype=float), (L0.shape[0],))
        diff = beta - np.linalg.pinv(L0) @ rhs
    L = _row_basis(L0)
    q = L.shape[0]
    A1, A2 = _a1_a2(adj, L)
    df, scale = _ddf_and_scale(q, A1, A2)
    Ld = L @ diff
    unscaled = float(Ld @ np.linalg.solve(L @ adj.PhiA @ L.T, Ld)) / q
    F = scale * unscaled
    mean_sq = unscaled * adj.sigma**2
    return KRTest(
        F=F, numdf=q, dendf=df, p_value=float(stats.f.sf(F, q, df)),
        scaling=scale, unscaled=unscaled, mean_sq=mean_sq, sum_sq=mean_sq * q,
    )
