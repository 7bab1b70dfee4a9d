"""Text of ``LmerResult.summary()``, laid out as lme4's ``print(summary(m))``.

Number formatting follows R's rules where users compare digits: variance components with
4 significant digits on the smallest entry of a column (R's ``format(digits = 4)``), fixed
effects rounded to the decimals that give the smallest standard error 4 significant digits
(R's ``printCoefmat``), t values to 3 decimals.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["format_summary", "abbreviate"]

_MAX_CORR_P = 12  # lme4 shows the correlation of fixed effects up to this many


def _decimals(x: float, digits: int) -> int:
    """Decimals R's format() needs to show x with at most `digits` significant digits."""
    if x == 0 or not math.isfinite(x):
        return 0
    dec = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    while dec > 0 and round(abs(x), dec) == round(abs(x), dec - 1):
        dec -= 1
    return dec


def format_column(values: list[float], digits: int) -> list[str]:
    """R's format(values, digits): one number of decimals for the whole column."""
    finite = [v for v in values if math.isfinite(v)]
    dec = max((_decimals(v, digits) for v in finite), default=0)
    return [f"{v:.{dec}f}" if math.isfinite(v) else "NaN" for v in values]


def abbreviate(name: str, minlength: int = 6) -> str:
    """R's abbreviate(): drop lower-case vowels, then lower-case letters, from the right."""
    chars = list(name)
    for pick in ("aeiou", "abcdefghijklmnopqrstuvwxyz"):
        pos = len(chars) - 1
        while len(chars) > minlength and pos > 0:
            if chars[pos] in pick and chars[pos - 1] != " ":
                del chars[pos]
            pos -= 1
    return "".join(chars[: max(minlength, 0)] if len(chars) > minlength else chars)


def _table(rows: list[list[str]], right: list[bool]) -> list[str]:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if rj else c.ljust(w) for c, w, rj in zip(r, widths, right, strict=True)
        ]
        lines.append(" " + " ".join(cells).rstrip())
    return lines


def _random_effects_block(res: LmerResult) -> list[str]:
    vc = res.varcorr
    sd_rows = vc[vc["var2"].isna()]
    variances = format_column(list(sd_rows["vcov"]), 4)
    sds = format_column(list(sd_rows["sdcor"]), 4)
    rows = [["Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
    seen_group = None
    for idx, (_, row) in enumerate(sd_rows.iterrows()):
        group = row["grp"]
        name = "" if row["var1"] is None or row["var1"] != row["var1"] else str(row["var1"])
        corr_cells = _corr_cells(vc, group, name, idx, sd_rows)
        rows.append([group if group != seen_group else "", name, variances[idx], sds[idx],
                     corr_cells])
        seen_group = group
    if not any(row[4] for row in rows[1:]):
        rows = [row[:4] for row in rows]  # lme4 shows no Corr column without correlations
    return _table(rows, [False, False, True, True, False][: len(rows[0])])


def _corr_cells(vc, group: str, name: str, idx: int, sd_rows) -> str:
    """Correlations of this variable with the earlier ones of the same term."""
    if group == "Residual":
        return ""
    earlier = []
    for j in range(idx - 1, -1, -1):
        prev = sd_rows.iloc[j]
        if prev["grp"] != group:
            break
        earlier.insert(0, prev["var1"])
    cells = []
    for other in earlier:
        hit = vc[(vc["grp"] == group) & (vc["var1"] == other) & (vc["var2"] == name)]
        if len(hit):
            cells.append(f"{hit['sdcor'].iloc[0]:5.2f}")
    return " ".join(cells)


def _fixed_block(res: LmerResult) -> list[str]:
    table = res.coef_table(ddf=None)  # lme4's summary: no df
    table = table.rename(columns={"z_value": "t_value"})
    se_min = float(np.nanmin(table["std_error"])) if len(table) else 1.0
    dig = max(0, 4 - math.floor(math.log10(se_min)) - 1) if se_min > 0 else 4
    est = [f"{v:.{dig}f}" for v in table["estimate"]]
    ses = [f"{v:.{dig}f}" for v in table["std_error"]]
    tvals = [f"{v:.3f}" for v in table["t_value"]]
    rows = [["", "Estimate", "Std. Error", "t value"]]
    rows += [[str(n), e, s, t] for n, e, s, t in zip(table.index, est, ses, tvals, strict=True)]
    return _table(rows, [False, True, True, True])


def _correlation_block(res: LmerResult) -> list[str]:
    p = len(res.fixef)
    if p < 2:
        return []
    if p > _MAX_CORR_P:
        return ["", f"Correlation matrix not shown by default, as p = {p} > {_MAX_CORR_P}."]
    cov = res.vcov.to_numpy()
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    names = list(res.fixef.index)
    short = [abbreviate(n) for n in names[:-1]]
    rows = [[""] + short]
    for i in range(1, p):
        rows.append([names[i]] + [f"{corr[i, j]:.3f}" for j in range(i)] + [""] * (p - 1 - i))
    return ["", "Correlation of Fixed Effects:"] + [
        line[1:] for line in _table(rows, [False] + [True] * (p - 1))
    ]


def format_summary(res: LmerResult) -> str:
    method = "REML" if res.reml else "maximum likelihood "
    lines = [f"Linear mixed model fit by {method} ['lmerMod']", f"Formula: {res.formula}", ""]
    if res.reml:
        lines.append(f"REML criterion at convergence: {res.objective:.1f}")
    else:
        stats = [res.aic, res.bic, res.loglik, res.objective, res.nobs - len(res.fixef)]
        head = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
        cells = [f"{v:.1f}" for v in stats[:4]] + [str(stats[4])]
        width = [max(len(h), len(c)) + 1 for h, c in zip(head, cells, strict=True)]
        lines.append("".join(h.rjust(w) for h, w in zip(head, width, strict=True)))
        lines.append("".join(c.rjust(w) for c, w in zip(cells, width, strict=True)))
    scaled = res.pearson_residuals() / res.sigma  # lme4: residuals(m, "pearson", scaled = TRUE)
    quart = np.quantile(scaled, [0, 0.25, 0.5, 0.75, 1])
    lines += ["", "Scaled residuals: "]
    cells = [f"{v:.4f}" for v in quart]
    width = max(len(c) for c in cells)
    lines.append(" ".join(h.rjust(width) for h in ["Min", "1Q", "Median", "3Q", "Max"]) + " ")
    lines.append(" ".join(c.rjust(width) for c in cells) + " ")
    lines += ["", "Random effects:"] + _random_effects_block(res)
    groups = ", ".join(f"{g}, {k}" for g, k in res.ngroups.items())
    lines.append(f"Number of obs: {res.nobs}, groups:  {groups}")
    if len(res.fixef):
        lines += ["", "Fixed effects:"] + [line[1:] for line in _fixed_block(res)]
    lines += _correlation_block(res)
    if res.dropped:
        lines += ["", f"fixed-effect model matrix is rank deficient so dropping "
                      f"{len(res.dropped)} columns / coefficients"]
    for message in res.optinfo.messages:
        lines += ["", message]
    return "\n".join(lines)
