"""Confidence levels: checked, turned into the zeta quantiles the walk locates, and
labelled as R labels an interval's columns.

An interval at level ``1 - alpha`` is where ``|zeta| <= z``, ``z = Phi^{-1}(1 - alpha /
2)``; :func:`zeta_targets` gives the ``-z, z`` of each level (``profile(levels=...)``
locates them exactly) and :func:`percent_labels` the columns of ``confint_profile``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import scipy.stats

from ..errors import ModelSpecError

__all__ = ["check_level", "percent_labels", "zeta_targets"]


def check_level(level: float) -> float:
    """``level`` as a float in (0, 1), else an error naming it."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ModelSpecError(f"level must be a number in (0, 1), got {level!r}") from None
    if not 0.0 < value < 1.0:
        raise ModelSpecError(f"level must be in (0, 1), got {level!r}")
    return value


def percent_labels(level: float) -> list[str]:
    """Column labels of an interval at ``level``, as R's confint: "2.5 %", "97.5 %".

    R formats ``100 * c(a, 1 - a)`` with 3 significant digits, both with the decimals the
    one needing more uses, trailing zeros dropped (level 0.9: "5 %", "95 %").
    """
    a = (1.0 - check_level(level)) / 2.0
    values = [100.0 * a, 100.0 * (1.0 - a)]

    def decimals(x: float) -> int:
        text = f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}"
        return len(text.split(".")[1].rstrip("0")) if "." in text else 0

    places = max(decimals(x) for x in values)
    return [f"{x:.{places}f} %" for x in values]


def zeta_targets(levels: Sequence[float]) -> tuple[float, ...]:
    """``-z, z`` for each level, in order: the zeta values whose crossings are located."""
    out = []
    for level in levels:
        z = float(scipy.stats.norm.ppf((1.0 + check_level(level)) / 2.0))
        out += [-z, z]
    return tuple(out)
