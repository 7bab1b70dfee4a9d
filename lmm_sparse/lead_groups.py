"""The data part of an evaluation through groups of alike leading levels.

Every evaluation needs ``B'(A + I)^{-1} B`` with ``B = Lambda' Z'[X y]`` (the gram behind
beta, R_X and pwrss). Through the Schur kernel's blocks it is ``c1'c1 + c2'c2`` with
``c1 = L11^{-1} B1`` and ``c2 = L22^{-1} (B2 - L21 c1)``: O(q1 (p + 1)^2) work on the rows
of the leading term. When that term has many levels and the rest of the system is small,
this is most of an evaluation (fggk21: 108,295 children and a 524 x 524 Schur complement;
the data part cost two to three times the factorization).

Both leading-term parts depend on a level ``l`` only through its own block ``C_l`` of Z'Z,
its data rows ``F_l = Z_l'[X y]`` (k0 x (p + 1)) and its cross columns ``G21_l = Z_2'Z_l``:

    c1'c1  = sum_l F_l' M_l F_l              M_l = T0 (T0' C_l T0 + I)^{-1} T0'
    L21 c1 = Lambda_2' sum_l G21_l M_l F_l

Levels with equal ``C_l`` share ``M_l`` (with an intercept-only leading term, levels with
the same number of observations), so the sums over each group of levels are formed once
from the data: ``S_g[r, s] = sum_{l in g} F_l[r]' F_l[s]`` and
``K_g[r, s] = sum_{l in g} G21_l[:, r] F_l[s]``. An evaluation then costs
O(groups k0^2 (p + 1) (p + 1 + q2)) for these parts, whatever the number of levels. Used
only where that is well below the per-level work and ``K`` fits a memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["LeadGroups", "make_lead_groups"]

# K and S together at most this many doubles (64 MB)
_MAX_ENTRIES = 2**23


@dataclass(frozen=True)
class LeadGroups:
    """Sums of the data over groups of leading levels with equal blocks of Z'Z.

    Fields
    ------
    C: the distinct leading blocks, (groups, k0, k0).
    S: sum over each group of F_l[r]' F_l[s], (groups, k0, k0, m, m) with m = p + 1.
    K: sum over each group of G21_l[:, r] F_l[s], (groups, k0, k0, q2, m).
    """

    C: np.ndarray
    S: np.ndarray
    K: np.ndarray

    def weights(self, T0: np.ndarray) -> np.ndarray:
        """M_g = T0 (T0' C_g T0 + I)^{-1} T0' for every group, (groups, k0, k0)."""
        k0 = T0.shape[0]
        if k0 == 1:
            t2 = T0[0, 0] ** 2
            return (t2 / (t2 * self.C + 1.0)).reshape(-1, 1, 1)
        A = T0.T @ self.C @ T0 + np.eye(k0)
        return T0 @ np.linalg.solve(A, np.broadcast_to(T0.T, A.shape))

    def lead_gram(self, M: np.ndarray) -> np.ndarray:
        """c1'c1 = sum_l F_l' M_l F_l, (m, m)."""
        m = self.S.shape[3]
        return (M.reshape(1, -1) @ self.S.reshape(M.size, m * m)).reshape(m, m)

    def cross_sum(self, M: np.ndarray) -> np.ndarray:
        """sum_l G21_l M_l F_l, (q2, m): L21 c1 before Lambda_2' (unscaled rows)."""
        g, k0 = M.shape[:2]
        K = self.K.reshape(g * k0 * k0, -1)
        return (M.reshape(1, -1) @ K).reshape(self.K.shape[3:])


def make_lead_groups(
    C: np.ndarray, F: np.ndarray, G21: sp.csr_matrix, generic_cost: float
) -> LeadGroups | None:
    """Group the leading levels by their block of Z'Z, or None when that does not pay.

    ``C``: the leading term's diagonal blocks of Z'Z, (l0, k0, k0); ``F``: its rows of
    Z'[X y], (l0, k0, m); ``G21``: the unscaled cross block Z_2'Z_1 (q2 x l0 k0, columns
    level-major); ``generic_cost``: multiply-adds of the per-level computation it replaces.
    """
    l0, k0, m = F.shape
    q2 = G21.shape[0]
    flat = C.reshape(l0, k0 * k0)
    # hashing, not np.unique(axis=0), whose sort of row records took ~0.2 s at 108k levels
    keys = flat[:, 0] if k0 == 1 else pd.MultiIndex.from_arrays(list(flat.T))
    group, _ = pd.factorize(keys)
    group = group.astype(np.int64)
    ng = int(group.max()) + 1 if l0 else 0
    distinct = flat[np.unique(group, return_index=True)[1]]
    entries = ng * k0 * k0 * (q2 * m + m * m)
    if ng > l0 // 2 or entries > _MAX_ENTRIES or 4 * entries > generic_cost:
        return None
    S = _group_grams(F, group, ng)
    K = np.zeros((ng, k0, k0, q2, m))
    if q2:
        # row l of D_s holds F_l[s] in its group's m columns: G21_r D_s sums G21_l[:, r] F_l[s]
        cols = (group[:, None] * m + np.arange(m)).ravel()
        rows = np.repeat(np.arange(l0), m)
        for s in range(k0):
            D = sp.csr_matrix((F[:, s, :].ravel(), (rows, cols)), shape=(l0, ng * m))
            for r in range(k0):
                part = (G21[:, r::k0] @ D).toarray().reshape(q2, ng, m)
                K[:, r, s] = part.transpose(1, 0, 2)
    return LeadGroups(C=distinct.reshape(ng, k0, k0), S=S, K=K)


def _group_grams(F: np.ndarray, group: np.ndarray, ng: int) -> np.ndarray:
    """sum over each group of F_l[r]' F_l[s], as (groups, k0, k0, m, m): one GEMM per
    group on its stacked rows."""
    l0, k0, m = F.shape
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(ng + 1))
    W = F.reshape(l0, k0 * m)[order]
    S = np.empty((ng, k0 * m, k0 * m))
    for g in range(ng):
        rows = W[bounds[g] : bounds[g + 1]]
        S[g] = rows.T @ rows
    return np.ascontiguousarray(S.reshape(ng, k0, m, k0, m).transpose(0, 1, 3, 2, 4))
