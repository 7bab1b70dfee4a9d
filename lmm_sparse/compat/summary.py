"""``MixedLMResults.summary()``: the fit laid out as statsmodels' MixedLM summary.

Two blocks under a centred title: the model information in two key/value column pairs,
then the coefficient table (estimate, standard error, z, p and the Wald interval of each
fixed effect; estimate and ``sqrt(scale) * bse`` of each variance parameter), numbers with
three decimals, between rules of ``=`` and ``-``. The narrower block is widened to the
wider one's width as statsmodels does (spaces shared among the column gaps, the rest to
the first column), so that the same numbers print as the same text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import norm

if TYPE_CHECKING:
    from .results import MixedLMResults

__all__ = ["MixedLMSummary", "make_summary"]

_TITLE = "Mixed Linear Model Regression Results"


@dataclass(frozen=True)
class MixedLMSummary:
    """The summary's two tables (as text cells) and their layout.

    Fields
    ------
    tables: [model information (key, value, key, value), coefficient table].
    text: the printed layout.
    """

    tables: tuple[pd.DataFrame, pd.DataFrame]
    text: str

    def as_text(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


def _info(res: MixedLMResults) -> pd.DataFrame:
    sizes = pd.Series(res.groups).value_counts()
    left = [("Model:", "MixedLM"), ("No. Observations:", str(res.nobs)),
            ("No. Groups:", str(len(sizes))), ("Min. group size:", str(sizes.min())),
            ("Max. group size:", str(sizes.max())),
            ("Mean group size:", f"{sizes.mean():.1f}")]
    right = [("Dependent Variable:", res.model.endog_names), ("Method:", res.method),
             ("Scale:", f"{res.scale:.4f}"), ("Log-Likelihood:", f"{res.llf:.4f}"),
             ("Converged:", "Yes" if res.converged else "No"), ("", "")]
    return pd.DataFrame([[*a, *b] for a, b in zip(left, right, strict=True)])


def _coefficients(res: MixedLMResults, alpha: float) -> pd.DataFrame:
    k = res.k_fe
    est = np.concatenate([res.fe_params.to_numpy(), _variances(res)])
    se = np.concatenate([res.bse_fe.to_numpy(), res.bse_re.to_numpy()])
    z = np.full(len(est), np.nan)
    z[:k] = est[:k] / se[:k]
    q = norm.ppf(1 - alpha / 2)
    columns = {
        "Coef.": est, "Std.Err.": se, "z": z, "P>|z|": 2 * norm.sf(np.abs(z)),
        f"[{alpha / 2}": est - q * se, f"{1 - alpha / 2}]": est + q * se,
    }
    table = pd.DataFrame(columns, index=res.params.index)
    table.iloc[k:, 2:] = np.nan  # variance parameters: estimate and standard error only
    return table.map(lambda v: f"{v:.3f}" if np.isfinite(v) else "")


def _variances(res: MixedLMResults) -> np.ndarray:
    """cov_re's lower triangle row by row, then vcomp: the variance rows in the data's units."""
    cov = res.cov_re.to_numpy()
    return np.concatenate([cov[np.tril_indices(len(cov))], res.vcomp])


def _widths(cells: pd.DataFrame) -> list[int]:
    return [max([len(str(h))] + [len(v) for v in cells[h]]) for h in cells.columns]


def _natural(cells: pd.DataFrame, stub: bool) -> int:
    """Width with one space between columns (and after the row names, if shown)."""
    w0 = max(len(str(i)) for i in cells.index) + 1 if stub else 0
    return w0 + sum(_widths(cells)) + len(cells.columns) - 1


def _padding(natural: int, ncols: int, widest: int) -> tuple[int, int]:
    """Spaces added to every column separator and to the first column to reach the
    widest block: the separators get the even share of the difference per column gap, the
    first column the rest (as statsmodels' summary lays out its blocks)."""
    gaps = max(ncols - 1, 1)
    pad = (widest - natural) // gaps
    return pad, widest - natural - gaps * pad


def _info_lines(info: pd.DataFrame, widest: int) -> list[str]:
    pad, extra = _padding(_natural(info, False), len(info.columns), widest)
    widths = _widths(info)
    widths[0] += extra
    sep = " " * (1 + pad)
    return [sep.join(v.ljust(w) for v, w in zip(row, widths, strict=True))
            for row in info.itertuples(index=False)]


def _table_lines(table: pd.DataFrame, widest: int) -> list[str]:
    """Header and rows: names left, numbers right, column titles centred."""
    pad, extra = _padding(_natural(table, True), len(table.columns), widest)
    w0 = max(len(str(i)) for i in table.index) + extra
    widths = _widths(table)
    sep = " " * (1 + pad)
    header = sep.join([" " * w0] + [h.center(w) for h, w in zip(table.columns, widths,
                                                                strict=True)])
    rows = [sep.join([str(name).ljust(w0)] + [v.rjust(w) for v, w in zip(row, widths,
                                                                       strict=True)])
            for name, row in zip(table.index, table.itertuples(index=False), strict=True)]
    return [header, *rows]


def make_summary(res: MixedLMResults, alpha: float = 0.05) -> MixedLMSummary:
    info = _info(res)
    table = _coefficients(res, alpha)
    widest = max(_natural(info, False), _natural(table, True))
    header, *rows = _table_lines(table, widest)
    title = _TITLE if len(_TITLE) >= widest else " " * int(widest / 2 - len(_TITLE) / 2) + _TITLE
    rule = "-" * len(header)
    lines = [title, "=" * widest, *_info_lines(info, widest), rule, header, rule, *rows,
             "=" * widest]
    return MixedLMSummary(tables=(info, table), text="\n".join(lines) + "\n")
