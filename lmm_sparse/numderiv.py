"""Numerical first and second derivatives with Richardson extrapolation.

Used where an analytic derivative would cost more code than it saves time: the Hessian of
the deviance in the variance parameters and the Jacobian of vcov(beta) behind the
Satterthwaite degrees of freedom. Central differences have an O(h^2) error; evaluating
them at steps h, h/2, h/4, ... and extrapolating removes the h^2, h^4, ... terms
(Richardson 1911; the scheme of R's numDeriv, Gilbert & Varadhan, which lmerTest uses),
so a fairly large first step (little rounding error) still gives ~10 accurate digits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Derivatives", "richardson_derivatives"]


@dataclass(frozen=True)
class Derivatives:
    """Derivatives of a vector-valued f: R^m -> R^k at x.

    Fields
    ------
    value: f(x), shape (k,).
    gradient: df_c/dx_i, shape (m, k).
    hessian: d2f_c/dx_i dx_j, shape (m, m, k).
    """

    value: np.ndarray
    gradient: np.ndarray
    hessian: np.ndarray


def _steps(x: np.ndarray, relative: float, floor: float) -> np.ndarray:
    """First steps: relative to |x_i|, but never below ``floor``.

    A step far below the scale of the function's curvature only adds rounding error:
    second differences lose about eps |f| / h^2. theta's entries are relative standard
    deviations and correlations, of order 0.1 to 1 when they matter, so a floor of 1e-4
    keeps small entries (0.015, say) from getting steps of 1e-5.
    """
    return np.maximum(relative * np.abs(x), floor)


def _extrapolate(estimates: list[np.ndarray], ratio: float) -> np.ndarray:
    """Richardson's table for errors in even powers of the step (steps shrink by ratio)."""
    table = list(estimates)
    for level in range(1, len(table)):
        factor = ratio ** (2 * level)
        table = [(factor * table[i + 1] - table[i]) / (factor - 1) for i in range(len(table) - 1)]
    return table[0]


def richardson_derivatives(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    second: bool = True,
    relative: float = 1e-3,
    floor: float = 1e-4,
    rounds: int = 4,
    ratio: float = 2.0,
) -> Derivatives:
    """Gradient (and Hessian) of every component of f at x by extrapolated differences.

    Cost: ``rounds * 2m`` evaluations for the gradient and diagonal, plus
    ``rounds * 2m(m - 1)`` for the off-diagonal second derivatives.
    """
    x = np.asarray(x, dtype=float)
    m = x.size
    f0 = np.atleast_1d(np.asarray(f(x), dtype=float))
    h0 = _steps(x, relative, floor)
    eye = np.eye(m)
    grads, hessians = [], []
    for r in range(rounds):
        h = h0 / ratio**r
        plus = [np.atleast_1d(f(x + h[i] * eye[i])) for i in range(m)]
        minus = [np.atleast_1d(f(x - h[i] * eye[i])) for i in range(m)]
        grads.append(np.stack([(plus[i] - minus[i]) / (2 * h[i]) for i in range(m)]))
        if not second:
            continue
        H = np.zeros((m, m, f0.size))
        for i in range(m):
            H[i, i] = (plus[i] - 2 * f0 + minus[i]) / h[i] ** 2
            for j in range(i):
                di, dj = h[i] * eye[i], h[j] * eye[j]
                mixed = (f(x + di + dj) - f(x + di - dj) - f(x - di + dj) + f(x - di - dj))
                H[i, j] = H[j, i] = np.atleast_1d(mixed) / (4 * h[i] * h[j])
        hessians.append(H)
    gradient = _extrapolate(grads, ratio)
    hessian = _extrapolate(hessians, ratio) if second else np.zeros((m, m, f0.size))
    return Derivatives(f0, gradient, hessian)
