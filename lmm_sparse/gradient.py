"""The exact gradient of the profiled criterion with respect to theta.

Notation as in :mod:`lmm_sparse.pls`: ``G = Z'Z``, ``A = Lambda' G Lambda + I``,
``P = A^{-1}``, the spherical modes ``u = A^{-1} Lambda' Z'(y - X beta)`` and
``C_X = A^{-1} Lambda' Z'X``. For one element theta_k of term i's template,
``dLambda_k`` has a one at (level, r), (level, c) for every level of the term; for any q x q
matrix N write ``<dLambda_k, N> = sum over levels of N[(l, r), (l, c)]``. Then:

* log det A: ``d ldL2 = 2 <dLambda_k, G Lambda P>`` (from ``tr(P dA)``), which needs P only
  where G has blocks: the kernel's selected inverse;
* pwrss (envelope theorem: beta and u are optimal): ``d pwrss = -2 <dLambda_k, w u'>``
  with ``w = Z'(y - X beta - Z Lambda u)``;
* REML's log det(R_X'R_X) = log det(X'X - B_X' A^{-1} B_X):
  ``d ldRX2 = -2 <dLambda_k, D Y C_X'>`` with ``D = Z'(X - Z Lambda C_X)`` and
  ``Y = (R_X'R_X)^{-1}``.

``w`` and ``D`` come from ``Z'[X y]`` and ``G Lambda [C_X u]``: everything comes from the
cross-products, so the cost does not grow with n. Cost beyond one evaluation: the
kernel's selected inverse (see the kernel), a solve with one right-hand side (ML) or
p + 1 (REML), and O(nnz(G) k) per column for ``G Lambda [C_X u]``.
"""

from __future__ import annotations

import numpy as np

from .crossprod import CrossProducts, ZtZOperator, inverse_gram, right_template
from .terms import ReStructure, template_theta, template_times

__all__ = [
    "add_block_sums",
    "gradient_parts",
    "kernel_logdet_sums",
    "logdet_sums",
    "template_gradient_to_theta",
]


def template_gradient_to_theta(N: list[np.ndarray]) -> np.ndarray:
    """Derivatives with respect to template entries T_i[r, c] -> theta's layout.

    theta fills each template's lower triangle column-major (T.T[triu] = theta_i).
    """
    return np.concatenate([template_theta(Ni) for Ni in N])


def _per_term(re: ReStructure, M: np.ndarray) -> list[np.ndarray]:
    """A q x m matrix split into one (levels, k_i, m) array per term."""
    bounds = [*re.offsets, re.q]
    return [
        M[bounds[i] : bounds[i + 1]].reshape(t.nlevels, t.k, M.shape[1])
        for i, t in enumerate(re.terms)
    ]


def logdet_sums(
    cp: CrossProducts, templates: list[np.ndarray], inverse_blocks: list[np.ndarray]
) -> list[np.ndarray]:
    """Per term, the sum over levels of the diagonal blocks of ``G Lambda P``, k_i x k_i.

    A stored block (i, j) holds ``G[(i, l), (j, m)] = C`` and ``P[(i, l), (j, m)] = P_b``;
    it adds ``C T_j P_b'`` to term i and, off the diagonal, ``C' T_i P_b`` to term j.
    """
    out = [np.zeros((T.shape[0], T.shape[0])) for T in templates]
    add_block_sums(out, cp.blocks, templates, inverse_blocks)
    return out


def add_block_sums(
    out: list[np.ndarray], blocks, templates: list[np.ndarray], inverse_blocks
) -> None:
    """Adds the terms of :func:`logdet_sums` of the given blocks of Z'Z to ``out``."""
    for block, Pb in zip(blocks, inverse_blocks, strict=True):
        if block.C.shape[1:] == (1, 1):  # scalar blocks: one dot product
            dot = float(block.C.ravel() @ Pb.ravel())
            out[block.i] += templates[block.j] * dot
            if block.i != block.j:
                out[block.j] += templates[block.i] * dot
            continue
        CT = right_template(block.C, templates[block.j])  # C_n T_j
        out[block.i] += np.tensordot(CT, Pb, axes=([0, 2], [0, 2]))
        if block.i != block.j:
            CtT = right_template(block.C.transpose(0, 2, 1), templates[block.i])  # C_n' T_i
            out[block.j] += np.tensordot(CtT, Pb, axes=([0, 2], [0, 1]))


def kernel_logdet_sums(kernel, cp: CrossProducts, templates: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`logdet_sums` at the kernel's current factor: from the kernel directly where it
    can form them without the whole selected inverse (the Schur kernel's dense path),
    else from its selected inverse."""
    direct = getattr(kernel, "logdet_sums", None)
    sums = direct(templates) if direct is not None else None
    return logdet_sums(cp, templates, kernel.inverse_blocks()) if sums is None else sums


def gradient_parts(
    re: ReStructure,
    cp: CrossProducts,
    ztz: ZtZOperator,
    templates: list[np.ndarray],
    u: np.ndarray,
    CX: np.ndarray | None,
    beta: np.ndarray,
    RX: np.ndarray,
    sums: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients in theta of ``ldL2 (+ ldRX2 when CX is given)`` and of ``pwrss``.

    ``u``: the spherical modes (q,); ``CX = A^{-1} Lambda' Z'X`` (q x p), needed for the
    REML term only; ``beta`` for y0 in the centred X (``cp.to_y0(ev.beta)``); RX of the
    centred X (``cp.centred_RX(ev.RX)``). Needs ``G Lambda V`` for one column without CX,
    p + 1 with it. ``sums``: :func:`logdet_sums` at this theta (:func:`kernel_logdet_sums`).
    """
    p = cp.p
    V = u[:, None] if CX is None else np.column_stack([CX, u])
    Vt = _per_term(re, V)
    GLV = ztz.times([template_times(T, Vi) for T, Vi in zip(templates, Vt, strict=True)])
    Y = None
    if CX is not None:
        Y = inverse_gram(RX)  # (R_X' R_X)^{-1}
    logdet = [2.0 * S for S in sums]
    pwrss = []
    for i, (ZtXy, GLVi, Vi) in enumerate(zip(cp.ZtXy, GLV, Vt, strict=True)):
        w = ZtXy[:, :, p] - ZtXy[:, :, :p] @ beta - GLVi[:, :, -1]  # Z'(y0 - X beta - Z Lambda u)
        pwrss.append(-2.0 * (w.T @ Vi[:, :, -1]))
        if Y is not None:
            D = ZtXy[:, :, :p] - GLVi[:, :, :p]  # Z'(X - Z Lambda C_X)
            # sum over levels of D Y C_X' (einsum's path search costs more than the sum)
            logdet[i] -= 2.0 * np.tensordot(D @ Y, Vi[:, :, :p], axes=([0, 2], [0, 2]))
    return template_gradient_to_theta(logdet), template_gradient_to_theta(pwrss)
