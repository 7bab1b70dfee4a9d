"""Split an lme4 formula into its fixed part and its random-effects terms.

formulaic does not understand lme4's bar terms ``(lhs | g)``, so, like lme4's
``findbars``/``nobars``, we cut them out at the top level of the right-hand
side, expand ``||`` and ``/``, and hand formulaic the fixed part and each bar's
left-hand side separately. Top-level ``offset(expr)`` terms (R's) are cut out too:
their values are added to the linear predictor with coefficient 1.

Only this module reads formula text; everything downstream receives a
:class:`ParsedFormula`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from formulaic import Formula

from .errors import FormulaError

__all__ = ["BarTerm", "ParsedFormula", "parse_formula"]

_NAME = re.compile(r"^(?:[A-Za-z_.][A-Za-z0-9_.]*|`[^`]+`)$")


@dataclass(frozen=True)
class BarTerm:
    """One random-effects term ``(lhs | g1:g2:...)`` after expansion.

    Fields
    ------
    lhs: right-hand side of the term's model formula, e.g. ``"1 + Days"``.
    factors: the grouping columns whose interaction defines the levels.
    source: the bar term as the user wrote it (for error messages).
    """

    lhs: str
    factors: tuple[str, ...]
    source: str

    @property
    def group(self) -> str:
        """Grouping factor name as lme4 prints it, e.g. ``"cask:batch"``."""
        return ":".join(self.factors)


@dataclass(frozen=True)
class ParsedFormula:
    """An lme4 formula split into parts formulaic can read.

    Fields
    ------
    text: the formula as given.
    response: left-hand side expression (a column name or a transform).
    fixed: right-hand side of the fixed-effects formula.
    bars: random-effects terms, expanded, in the order written.
    offsets: the expressions inside the fixed part's ``offset(...)`` terms.
    """

    text: str
    response: str
    fixed: str
    bars: tuple[BarTerm, ...]
    offsets: tuple[str, ...] = ()


def parse_formula(text: str) -> ParsedFormula:
    """Parse ``"y ~ fixed + (lhs | g) + (lhs || g)"``."""
    if not isinstance(text, str):
        raise FormulaError(f"formula must be a string, got {type(text).__name__}")
    _check_parentheses(text)
    parts = _split_top(text, "~")
    if len(parts) != 2:
        raise FormulaError(f"formula needs exactly one '~' (response ~ terms): {text!r}")
    response, rhs = parts[0].strip(), parts[1].strip()
    if not response:
        raise FormulaError(f"formula has no response on the left of '~': {text!r}")
    if rhs.endswith(("+", "-", "*", ":", "/")):
        raise FormulaError(f"formula ends with the operator {rhs[-1]!r}, which has nothing on "
                           f"its right: {text!r}")
    if not rhs:
        raise FormulaError(f"formula has no terms on the right of '~': {text!r}")
    fixed_chunks: list[str] = []
    bars: list[BarTerm] = []
    offsets: list[str] = []
    for sign, chunk in _signed_chunks(rhs, text):
        offset = _offset_inner(chunk)
        if offset is not None:
            if sign == "-" or not offset:
                raise FormulaError(f"an offset term must be added and hold an expression: "
                                   f"{sign}{chunk} in {text!r}")
            offsets.append(offset)
            continue
        inner = _bar_inner(chunk)
        if inner is None:
            if _split_top(chunk, "|")[1:]:
                raise FormulaError(
                    f"random-effects term {chunk!r} must be in parentheses: ({chunk})"
                )
            fixed_chunks.append(f"{sign} {chunk}" if fixed_chunks or sign == "-" else chunk)
            continue
        if sign == "-":
            raise FormulaError(f"a random-effects term cannot be subtracted: -{chunk}")
        bars.extend(_expand_bar(inner, chunk))
    if not bars:
        raise FormulaError(
            f"no random-effects terms such as (1 | group) in {text!r}; for a model "
            "without random effects use ordinary least squares "
            "(e.g. statsmodels.formula.api.ols)"
        )
    _check_duplicates(bars)
    fixed = " ".join(fixed_chunks) if fixed_chunks else "1"
    if fixed.startswith("+"):
        fixed = fixed[1:].strip()
    return ParsedFormula(text=text, response=response, fixed=fixed, bars=tuple(bars),
                         offsets=tuple(offsets))


def _check_parentheses(text: str) -> None:
    depth = 0
    for pos, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(
                    f"unbalanced parentheses: ')' at position {pos} has no '(' in {text!r}"
                )
    if depth:
        raise FormulaError(f"unbalanced parentheses: {depth} '(' never closed in {text!r}")


def _top_level(text: str, seps: str):
    """Positions and characters of ``seps`` outside parentheses, brackets and backticks."""
    depth, quoted = 0, False
    for pos, char in enumerate(text):
        if char == "`":
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and char in seps:
            yield pos, char


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` occurring at the top level."""
    out, start = [], 0
    for pos, _ in _top_level(text, sep):
        out.append(text[start:pos])
        start = pos + 1
    out.append(text[start:])
    return out


def _signed_chunks(rhs: str, text: str) -> list[tuple[str, str]]:
    """Split a right-hand side at top-level ``+`` and ``-`` keeping the signs."""
    chunks: list[tuple[str, str]] = []
    start, sign = 0, "+"
    padded = rhs + "+"
    for pos, char in _top_level(padded, "+-"):
        # the '-' of an exponent such as 1e-3 is not a separator
        if char == "-" and re.search(r"\d[eE]$", rhs[start:pos]):
            continue
        piece = padded[start:pos].strip()
        if piece:
            chunks.append((sign, piece))
        elif start and pos < len(rhs):
            raise FormulaError(f"empty term before {char!r} at position {pos} in {text!r}")
        sign, start = char, pos + 1
    return chunks


def _offset_inner(chunk: str) -> str | None:
    """The expression of an ``offset(expr)`` chunk, or None for any other chunk (also for
    ``offset(a) * b``, where the parentheses close before the end)."""
    match = re.fullmatch(r"offset\s*\((.*)\)", chunk.strip(), flags=re.DOTALL)
    if match is None:
        return None
    inner = match.group(1)
    return inner.strip() if _closes_at_end(inner) else None


def _closes_at_end(inner: str) -> bool:
    """Whether ``inner`` never closes more parentheses than it opened."""
    depth = 0
    for char in inner:
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            return False
    return depth == 0


def _bar_inner(chunk: str) -> str | None:
    """Return the inside of ``( ... | ... )`` or None for a fixed-effects chunk."""
    if not (chunk.startswith("(") and chunk.endswith(")")):
        return None
    depth = 0
    for pos, char in enumerate(chunk):
        depth += char == "("
        depth -= char == ")"
        if depth == 0 and pos != len(chunk) - 1:
            return None  # e.g. "(a)*(b)": the outer parentheses do not enclose all
    inner = chunk[1:-1]
    if len(_split_top(inner, "|")) > 1:
        return inner
    nested = inner.strip()
    return _bar_inner(nested) if nested.startswith("(") else None


def _expand_bar(inner: str, source: str) -> list[BarTerm]:
    pieces = _split_top(inner, "|")
    uncorrelated = len(pieces) == 3 and pieces[1] == ""
    if len(pieces) == 3 and not uncorrelated or len(pieces) > 3:
        raise FormulaError(f"random-effects term {source} has more than one '|'")
    lhs = pieces[0].strip()
    rhs = pieces[-1].strip()
    if not lhs:
        raise FormulaError(
            f"random-effects term {source} has nothing left of '|' (write 1 for an intercept)"
        )
    if not rhs:
        raise FormulaError(f"random-effects term {source} has no grouping factor right of '|'")
    if "~" in inner:
        raise FormulaError(f"random-effects term {source} contains '~': the formula has one "
                           "'~', between the response and the terms")
    groups = _expand_slash(rhs, source)
    lhs_parts = _uncorrelated_parts(lhs, source) if uncorrelated else [lhs]
    return [BarTerm(lhs=part, factors=g, source=source) for g in groups for part in lhs_parts]


def _expand_slash(rhs: str, source: str) -> list[tuple[str, ...]]:
    """``a/b/c`` -> ``a``, ``b:a``, ``c:b:a`` (lme4's names for nested factors)."""
    levels = [p.strip().strip("()").strip() for p in rhs.split("/")]
    out: list[tuple[str, ...]] = []
    prefix: tuple[str, ...] = ()
    for level in levels:
        names = tuple(n.strip() for n in level.split(":"))
        for name in names:
            if not _NAME.match(name):
                raise FormulaError(
                    f"grouping factor {name!r} in {source} is not a column name; "
                    "use a, a:b or a/b"
                )
        prefix = names + prefix
        out.append(prefix)
    return [tuple(n.strip("`") for n in g) for g in out]


def _uncorrelated_parts(lhs: str, source: str) -> list[str]:
    """Split ``(x || g)`` into ``(1 | g) + (0 + x | g)`` term by term, as lme4 does."""
    try:
        parsed = Formula(lhs)
        terms = list(getattr(parsed, "rhs", parsed))
    except Exception as exc:  # formulaic raises many types; report ours
        raise FormulaError(f"cannot parse the left side of {source}: {exc}") from None
    parts = []
    for term in terms:
        name = str(term)
        parts.append("1" if name == "1" else f"0 + {name}")
    if not parts:
        raise FormulaError(f"random-effects term {source} has no effects left of '||'")
    return parts


def _check_duplicates(bars: list[BarTerm]) -> None:
    seen: dict[tuple[str, tuple[str, ...]], str] = {}
    for bar in bars:
        key = (re.sub(r"\s+", "", bar.lhs), bar.factors)
        if key in seen:
            raise FormulaError(
                f"random-effects term ({bar.lhs} | {bar.group}) appears twice "
                f"(from {seen[key]} and {bar.source})"
            )
        seen[key] = bar.source
