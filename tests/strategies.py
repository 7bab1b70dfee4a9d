"""Hypothesis strategies and data builders shared by test_properties.py and test_fuzz_formula.py.

Random data are drawn the cheap way: hypothesis draws the *structure* of a case (which
design, how many levels, how unbalanced, which transformation, a seed) and numpy builds the
arrays from the seed. Shrinking then works on the structure (fewer levels, smaller seeds),
which is what a failing case should be reduced to.

Nothing here uses the library's algebra: the reference values of the tests are computed
from these data frames with numpy only.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import pandas as pd
from hypothesis import strategies as st

# --------------------------------------------------------------------------- small designs

INTERCEPT = "(Intercept)"

# structure -> (random part of the formula, expected terms as (factors, coefficient names))
STRUCTURES: dict[str, tuple[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]] = {
    "crossed": ("(1 | a) + (1 | b)", [(("a",), (INTERCEPT,)), (("b",), (INTERCEPT,))]),
    "nested": ("(1 | a/b)", [(("a",), (INTERCEPT,)), (("b", "a"), (INTERCEPT,))]),
    "correlated": ("(x | a)", [(("a",), (INTERCEPT, "x"))]),
    "uncorrelated": ("(x || a)", [(("a",), (INTERCEPT,)), (("a",), ("x",))]),
    "slopes_crossed": (
        "(1 + x | a) + (1 | b)",
        [(("a",), (INTERCEPT, "x")), (("b",), (INTERCEPT,))],
    ),
}


@dataclass(frozen=True)
class DesignSpec:
    """The structure of one small random design (the data are built from ``seed``).

    structure: a key of STRUCTURES.
    categorical: whether the fixed part has the 3-level factor ``c`` besides ``x``.
    n_a: levels of ``a``; the first ``n_single`` of them have exactly one observation.
    extra: rows spread over the other levels of ``a`` (each also gets 2 rows).
    n_b: levels of ``b`` (crossed with ``a``, or nested labels within ``a``).
    skew: Dirichlet concentration of the cell probabilities (small = very unbalanced).
    """

    structure: str
    categorical: bool
    n_a: int
    n_single: int
    extra: int
    n_b: int
    skew: float
    seed: int

    @property
    def formula(self) -> str:
        fixed = "x + c" if self.categorical else "x"
        return f"y ~ {fixed} + {STRUCTURES[self.structure][0]}"


@st.composite
def design_specs(draw) -> DesignSpec:
    n_a = draw(st.integers(2, 10))
    return DesignSpec(
        structure=draw(st.sampled_from(sorted(STRUCTURES))),
        categorical=draw(st.booleans()),
        n_a=n_a,
        n_single=draw(st.integers(0, n_a - 1)),
        extra=draw(st.integers(4, 60)),
        n_b=draw(st.integers(2, 5)),
        skew=draw(st.sampled_from([0.15, 1.0, 8.0])),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def design_data(spec: DesignSpec) -> pd.DataFrame:
    """Rows for ``spec``: y, x (continuous), c (3 levels), a (text labels), b (integers for
    crossed designs, labels u, v, w, ... repeated across the levels of ``a`` for nested
    ones)."""
    rng = np.random.default_rng(spec.seed)
    multi = spec.n_a - spec.n_single
    counts = 2 + rng.multinomial(spec.extra, rng.dirichlet(np.full(multi, spec.skew)))
    counts = np.concatenate([np.ones(spec.n_single, dtype=int), counts])
    a = np.repeat(np.arange(spec.n_a), counts)
    n = a.size
    b = rng.choice(spec.n_b, size=n, p=rng.dirichlet(np.full(spec.n_b, spec.skew)))
    x = rng.normal(0.0, 1.0, n)
    c = rng.choice(["lo", "mid", "hi"], size=n)
    ua, sa, ub = rng.normal(0, 1.0, spec.n_a), rng.normal(0, 0.5, spec.n_a), rng.normal(0, 0.7, 8)
    y = 1.0 + 0.5 * x + 0.3 * (c == "mid") + ua[a] + sa[a] * x + ub[b] + rng.normal(0, 1.0, n)
    order = rng.permutation(n)  # rows not sorted by group
    frame = pd.DataFrame({
        "y": y,
        "x": x,
        "c": c,
        "a": np.array([f"a{i:02d}" for i in range(spec.n_a)])[a],
        "b": b if spec.structure != "nested" else np.array(list("uvwxy"))[b],
    })
    return frame.iloc[order].reset_index(drop=True)


def lme4_refuses(df: pd.DataFrame, terms, n: int) -> bool:
    """lme4's pre-fit checks (check.nlev.gtr.1, check.nobs.vs.nlev, check.nobs.vs.nRE):
    a term (factors, coefficient names) whose factor has fewer than 2 levels or that has at
    least n random effects."""
    for factors, names in terms:
        nlev = len(df[list(factors)].drop_duplicates())
        if nlev < 2 or nlev * len(names) >= n:
            return True
    return False


# --------------------------------------------------------------------------- realistic fits

# structure -> formula for the realistic simulated data below
FIT_FORMULAS = {
    "crossed": "y ~ x + c + (1 | a) + (1 | b)",
    "nested": "y ~ x + c + (1 | a/bn)",
    "correlated": "y ~ x + (x | a)",
    "uncorrelated": "y ~ x + c + (x || a)",
}


def simulate_fit_data(seed: int, n: int = 240) -> pd.DataFrame:
    """Data with random effects of clear size (sd 1 and 0.8 for intercepts, 0.8 for slopes
    with correlation 0.3, residual sd 1): fits of FIT_FORMULAS are not singular but for
    rare draws (about 1 in 200 fits: the effects a formula leaves out act as noise)."""
    rng = np.random.default_rng(seed)
    n_a, n_b = 16, 10
    a = rng.permutation(np.resize(np.arange(n_a), n))
    b = rng.integers(0, n_b, n)
    bnest = rng.integers(0, 3, n)  # nested labels within a: cells a:b
    x = rng.normal(0.0, 1.0, n)
    c = rng.choice(["lo", "mid", "hi"], size=n)
    cov = np.array([[1.0, 0.3 * 0.8], [0.3 * 0.8, 0.64]])
    ua = rng.multivariate_normal([0.0, 0.0], cov, n_a)
    ub = rng.normal(0, 0.8, n_b)
    uab = rng.normal(0, 0.8, (n_a, 3))
    y = (
        2.0 + 0.5 * x - 0.4 * (c == "mid") + 0.2 * (c == "hi")
        + ua[a, 0] + ua[a, 1] * x + ub[b] + uab[a, bnest] + rng.normal(0, 1.0, n)
    )
    return pd.DataFrame({
        "y": y,
        "x": x,
        "c": c,
        "a": np.array([f"s{i:02d}" for i in range(n_a)])[a],
        "b": b,  # integers: a numeric grouping column
        "bn": np.array(["p", "q", "r"])[bnest],
    })


# --------------------------------------------------------------------------- relabelling


RELABEL_STYLES = ("text", "int", "negative_int", "float", "reversed_text", "categorical",
                  "mixed")


def relabel_map(levels, style: str, seed: int) -> dict:
    """An injective map of ``levels`` to new labels of the given style; the new labels
    (generally) sort in another order, so Z's columns and theta's levels are permuted."""
    rng = np.random.default_rng(seed)
    levels = list(levels)
    k = len(levels)
    perm = rng.permutation(k)
    if style == "text":
        new = [f"L{''.join(rng.choice(list(string.ascii_letters), 5))}_{i}" for i in perm]
    elif style == "int":
        new = [int(v) for v in rng.choice(10**6, size=k, replace=False)]
    elif style == "negative_int":
        new = [int(-v - 1) for v in perm * 7]
    elif style == "float":
        new = [float(v) + 0.25 for v in perm]
    elif style == "reversed_text":
        new = [f"z{k - i:04d}" for i in range(k)]
    elif style == "mixed":  # ints and text in one object column
        new = [int(i) if i % 2 else f"t{i}" for i in perm]
    elif style == "categorical":
        new = [f"k{i}" for i in perm]
    else:
        raise ValueError(style)
    return dict(zip(levels, new, strict=True))


def relabel_column(values: pd.Series, style: str, seed: int) -> pd.Series:
    mapping = relabel_map(pd.unique(values), style, seed)
    out = values.map(mapping)
    if style == "categorical":  # shuffled categories and an unused one
        cats = list(np.random.default_rng(seed + 1).permutation(list(mapping.values())))
        out = pd.Series(pd.Categorical(out, categories=[*cats, "never_used"]),
                        index=values.index)
    elif style == "mixed":
        out = out.astype(object)
    return out


# --------------------------------------------------------------------------- formula grammar

FIXED_TERMS = ["x", "z", "c", "x:z", "x * c", "log(z)", "I(x ** 2)"]
BAR_LHS = ["1", "x", "1 + x", "0 + x", "x + z", "1 + x + z", "z", "x + x:z"]
GROUP_NAMES = ["g", "h", "k", "g.sub", "`my g`"]


@dataclass(frozen=True)
class GrammarFormula:
    """A formula generated from the grammar together with what parsing it must give."""

    text: str
    response: str
    fixed: str
    bars: tuple[tuple[str, tuple[str, ...], str], ...]  # (lhs, factors, source)
    duplicate: bool  # two expanded terms coincide: the parser must refuse the formula


def _space(draw) -> str:
    return draw(st.sampled_from(["", " ", "  "]))


def _expected_uncorrelated(lhs: str) -> list[str]:
    """lme4's expansion of ``(lhs || g)``: the intercept (unless removed), then each
    variable as ``0 + variable``, in the order written."""
    pieces = [p.strip() for p in lhs.split("+")]
    parts = [] if "0" in pieces else ["1"]
    parts += [f"0 + {p}" for p in pieces if p not in ("0", "1")]
    return parts


def _expected_groups(groups: list[str], op: str) -> list[tuple[str, ...]]:
    names = [g.strip("`") for g in groups]
    if op == ":":
        return [tuple(names)]
    out, prefix = [], ()
    for name in names:  # a/b/c -> a, b:a, c:b:a (lme4's names)
        prefix = (name, *prefix)
        out.append(prefix)
    return out


@st.composite
def grammar_formulas(draw) -> GrammarFormula:
    """response ~ fixed terms and bar terms in random order, with `|` or `||`, nested `/`
    and interaction `:` grouping factors, random spacing."""
    response = draw(st.sampled_from(["y", "log(y)", "y.obs"]))
    fixed = draw(st.lists(st.sampled_from(FIXED_TERMS), max_size=3, unique=True))
    intercept = draw(st.sampled_from(["", "1", "0", "-1"]))
    nbars = draw(st.integers(1, 3))
    pieces: list[tuple[str, str, object]] = []  # (sign, text, expected bars or None)
    if intercept in ("1", "0"):
        pieces.append(("+", intercept, None))
    pieces += [("+", term, None) for term in fixed]
    for _ in range(nbars):
        lhs = draw(st.sampled_from(BAR_LHS))
        op = draw(st.sampled_from(["|", "||"]))
        ngroups = draw(st.integers(1, 3))
        groups = draw(st.lists(st.sampled_from(GROUP_NAMES), min_size=ngroups,
                               max_size=ngroups, unique=True))
        gop = draw(st.sampled_from(["/", ":"])) if ngroups > 1 else "/"
        s = [_space(draw) for _ in range(4)]
        group_text = f"{s[2]}{gop}{s[3]}".join(groups)
        if draw(st.booleans()):
            group_text = f"({group_text})"
        source = f"({s[0]}{lhs}{s[1]}{op}{s[2]}{group_text}{s[3]})"
        if draw(st.integers(0, 3)) == 0:  # redundant parentheses around the whole term
            source = f"({source})"
        lhs_parts = _expected_uncorrelated(lhs) if op == "||" else [lhs]
        expected = [(part, factors, source)
                    for factors in _expected_groups(groups, gop) for part in lhs_parts]
        pieces.append(("+", source, expected))
    order = draw(st.permutations(range(len(pieces))))
    pieces = [pieces[i] for i in order]
    if intercept == "-1":
        pieces.append(("-", "1", None))
    text_parts, fixed_parts, bars = [], [], []
    for sign, text, expected in pieces:
        sep = f"{_space(draw)}{sign}{_space(draw)}"
        text_parts.append(text if not text_parts and sign == "+" else f"{sep}{text}")
        if expected is None:
            fixed_parts.append(f"{sign} {text}" if fixed_parts or sign == "-" else text)
        else:
            bars.extend(expected)
    text = f"{response}{_space(draw)}~{_space(draw)}{''.join(text_parts)}"
    keys = [("".join(lhs.split()), factors) for lhs, factors, _ in bars]
    return GrammarFormula(
        text=text,
        response=response,
        fixed=" ".join(fixed_parts) if fixed_parts else "1",
        bars=tuple(bars),
        duplicate=len(set(keys)) < len(keys),
    )


# --------------------------------------------------------------------------- fuzz text

# Tokens biased toward formula syntax and the fixed data frame's column names.
FORMULA_TOKENS = [
    "~", "+", "-", "*", "/", ":", "|", "||", "(", ")", "0", "1", " ", " ", "**", "2",
    "y", "x", "z", "c", "g", "h", "b", "yy", "g:h", "(1 | g)", "(x | g)", "(1 | g/h)",
    "(x || h)", "y ~ ", "`", ".", ",", "[", "]", "e", "%", "^", "-1", "\n",
]


def formula_texts() -> st.SearchStrategy[str]:
    """Random strings: mostly sequences of formula tokens, some arbitrary text, some small
    mutations of a valid formula."""
    tokens = st.lists(
        st.one_of(st.sampled_from(FORMULA_TOKENS), st.text(max_size=2)), max_size=24
    ).map("".join)
    with_tilde = st.tuples(tokens, tokens).map(lambda p: f"{p[0]} ~ {p[1]}")
    base = "y ~ x + c + (1 + x | g) + (1 | h)"
    mutated = st.tuples(
        st.integers(0, len(base)), st.integers(0, 4), st.sampled_from(FORMULA_TOKENS)
    ).map(lambda m: base[: m[0]] + m[2] + base[m[0] + m[1]:])
    return st.one_of(tokens, with_tilde, mutated, st.text(max_size=30))


def fuzz_frame(n: int = 36, seed: int = 7) -> pd.DataFrame:
    """The fixed small data frame of the fuzz run: numeric y, x, z, yy; text c; integer g;
    text h; a boolean b."""
    rng = np.random.default_rng(seed)
    g = np.resize(np.arange(6), n)
    h = np.resize(["h1", "h2", "h3", "h4"], n)
    x = rng.normal(0, 1, n)
    return pd.DataFrame({
        "y": 1 + x + rng.normal(0, 1, 6)[g] + rng.normal(0, 1, n),
        "x": x,
        "z": rng.uniform(0.5, 2.0, n),
        "yy": rng.normal(0, 1, n),
        "c": rng.choice(["p", "q", "r"], n),
        "g": g,
        "h": h,
        "b": rng.random(n) < 0.5,
    })


# --------------------------------------------------------------------------- messy frames


@st.composite
def messy_frames(draw) -> pd.DataFrame:
    """Small data frames with awkward contents: missing values, infinities, text in numeric
    places, categoricals with unused categories, booleans, a non-default index."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # sampled_from draws uniformly (integers() favours the smallest, degenerate sizes)
    n = draw(st.sampled_from([1, 3, 4, 6, 10, 16, 24, 30]))
    nlev = draw(st.sampled_from([1, 2, 3, 4, 6]))
    cols: dict[str, object] = {}
    y = rng.normal(0, 1, n)
    kind_y = draw(st.sampled_from(["float", "int", "nan", "inf", "text", "bool", "const",
                                   "complex", "nullable"]))
    if kind_y == "int":
        y = rng.integers(0, 5, n)
    elif kind_y == "nan":
        y[rng.random(n) < 0.3] = np.nan
    elif kind_y == "inf" and n:
        y[0] = np.inf
    elif kind_y == "text":
        y = np.array([f"v{i % 3}" for i in range(n)], dtype=object)
    elif kind_y == "bool":
        y = rng.random(n) < 0.5
    elif kind_y == "const":
        y = np.full(n, 3.0)
    elif kind_y == "complex":
        y = y + 1j * rng.normal(0, 1, n)
    elif kind_y == "nullable":
        y = pd.array([None if v < 0.2 else float(v) for v in rng.random(n)], dtype="Float64")
    cols["y"] = y
    x = rng.normal(0, 1, n)
    kind_x = draw(st.sampled_from(["float", "nan", "timedelta", "object"]))
    if kind_x == "nan":
        x[rng.random(n) < 0.2] = np.nan
    elif kind_x == "timedelta":
        x = pd.to_timedelta(rng.integers(0, 50, n), unit="D")
    elif kind_x == "object":  # numbers in an object column (read as categorical)
        x = x.astype(object)
    cols["x"] = x
    g = rng.integers(0, nlev, n)
    kind_g = draw(st.sampled_from(["int", "text", "categorical", "float_nan", "none", "mixed"]))
    if kind_g == "text":
        cols["g"] = np.array([f"g{v}" for v in g], dtype=object)
    elif kind_g == "categorical":
        cols["g"] = pd.Categorical([f"g{v}" for v in g],
                                   categories=[f"g{v}" for v in range(nlev + 2)][::-1])
    elif kind_g == "float_nan":
        values = g.astype(float)
        values[rng.random(n) < 0.2] = np.nan
        cols["g"] = values
    elif kind_g == "none":
        cols["g"] = np.array([None if v == 0 else f"g{v}" for v in g], dtype=object)
    elif kind_g == "mixed":
        cols["g"] = np.array([v if v % 2 else f"g{v}" for v in g], dtype=object)
    else:
        cols["g"] = g
    cols["c"] = np.array([["u", "v", "w"][v % 3] for v in rng.integers(0, 3, n)], dtype=object)
    cols["flag"] = rng.random(n) < 0.5
    cols["extra"] = np.where(rng.random(n) < 0.5, np.nan, 1.0)
    frame = pd.DataFrame(cols)
    index_kind = draw(st.sampled_from(["range", "shuffled", "text", "duplicated"]))
    if index_kind == "shuffled":
        frame.index = rng.permutation(n) * 3 + 5
    elif index_kind == "text":
        frame.index = [f"r{i}" for i in range(n)]
    elif index_kind == "duplicated":
        frame.index = np.zeros(n, dtype=int)
    frame.attrs["source"] = "messy_frames"
    return frame


MESSY_FORMULAS = [
    "y ~ x + (1 | g)",
    "y ~ x + c + (x | g)",
    "y ~ flag + (1 | g) + (1 | c)",
    "y ~ x + (1 | g/c)",
    "y ~ x + (x || g)",
    "y ~ np.log(x) + (1 | g)",
    "y ~ nothere + (1 | g)",
    "y ~ x + (1 | nothere)",
    "y ~ x + (1 | g",
    "y ~ x",
    "y ~ extra + (1 | g)",
    "g ~ x + (1 | c)",
    "c ~ x + (1 | g)",
    "y ~ C(c) + (1 | g)",
]
