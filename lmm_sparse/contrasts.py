"""Hypothesis matrices L for the F tests of the fixed-effect terms (types I, II and III).

Each fixed term (``age``, ``Sex``, ``age:Sex``) is tested by ``H0: L beta = 0`` with one
row of L per degree of freedom. The F statistic depends only on L's row space, but the
Satterthwaite and Kenward-Roger denominator degrees of freedom of a multi-row test depend
on the rows themselves, so the rows are built exactly the way lmerTest builds them
(Kuznetsova, Brockhoff & Christensen 2017, JSS 82(13), section 3; SAS's type I-III
estimable functions, Goodnight 1980):

* type I (sequential): the rows of the unit upper-triangular factor of ``X'X = L D L'``
  (the Doolittle decomposition) belonging to the term's columns: each term adjusted for
  the terms before it;
* type II: a term no other term contains is tested by its own coefficients (marginal);
  a term contained in others (``Sex`` in ``age:Sex``) is tested adjusted for every term
  except those containing it: type I with the containing terms moved last;
* type III: the hypotheses of the full-rank "cell means" coding of every term (each
  factor with a dummy for every level), made orthogonal to the terms that contain it,
  then expressed in X's coefficients. Needs treatment contrasts (formulaic's default).

A term contains another when its variables strictly include the other's and both have the
same numeric (non-factor) variables: ``age:Sex`` contains ``Sex`` but not ``age``. As in
lmerTest, "its variables" are those R's ``terms()`` marks 1 in its factors table (coded by
contrasts): a variable of an interaction whose margin (the interaction without it) is
not in the model is coded by a dummy per level, marked 2, and does not count. So in
``0 + Type + Type:Treatment`` the interaction does not contain ``Type``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from formulaic import model_matrix

from .errors import ModelSpecError

if TYPE_CHECKING:
    from .model import LinearMixedModel

__all__ = ["FixedTerm", "fixed_terms", "contrasts", "doolittle_upper", "ANOVA_TYPES"]

ANOVA_TYPES = (1, 2, 3)
_ZAP = 1e-8  # entries below this (relative to the row) are rounding noise (R's zapsmall)


@dataclass(frozen=True)
class FixedTerm:
    """One term of the fixed part, with the columns of X it owns.

    Fields
    ------
    label: the term as formulaic prints it (``age:Sex``).
    variables: the variables (factors of the term): ``("age", "Sex")``.
    coded: those of them coded by contrasts (R's factors table entry 1; see above).
    numeric: the coded variables that are numeric, not categorical.
    columns: indices of the term's columns in X (aliased columns already dropped).
    """

    label: str
    variables: tuple[str, ...]
    coded: frozenset[str]
    numeric: frozenset[str]
    columns: tuple[int, ...]

    def contained_in(self, other: FixedTerm) -> bool:
        """lmerTest's containment: strictly more coded variables, the same numeric ones."""
        return self.coded < other.coded and self.numeric == other.numeric


def fixed_terms(model: LinearMixedModel) -> tuple[bool, list[FixedTerm]]:
    """Whether X has an intercept, and its other terms in formula order."""
    spec, keep = model.fixed.spec, model.fixed.keep
    position = {full: j for j, full in enumerate(keep)}  # spec column -> column of X
    kinds = {name: state[0].value for name, state in spec.encoder_state.items()}
    has_intercept, terms, start = False, [], 0
    for structure in spec.structure:
        width = len(structure.columns)
        cols = tuple(position[c] for c in range(start, start + width) if c in position)
        start += width
        variables = tuple(str(f.expr) for f in structure.term.factors)
        if variables == ("1",):
            has_intercept = bool(cols)
            continue
        coded = _contrast_coded(variables, [t.variables for t in terms])
        numeric = frozenset(v for v in coded if kinds.get(v) != "categorical")
        terms.append(FixedTerm(str(structure.term), variables, coded, numeric, cols))
    return has_intercept, terms


def _contrast_coded(variables: tuple[str, ...], earlier: list[tuple[str, ...]]) -> frozenset:
    """The variables R's terms() marks 1: dropping one leaves nothing, or leaves a set of
    variables that an earlier term includes (R's TermCode; terms are in degree order)."""
    coded = set()
    for v in variables:
        rest = set(variables) - {v}
        if not rest or any(rest <= set(e) for e in earlier):
            coded.add(v)
    return frozenset(coded)


def contrasts(model: LinearMixedModel, type: int) -> dict[str, np.ndarray]:
    """Term label -> its hypothesis matrix (rows x p) for the given ANOVA type."""
    if type not in ANOVA_TYPES:
        raise ModelSpecError(f"type must be one of {ANOVA_TYPES} (I, II, III), got {type!r}")
    X = model.fixed.X
    has_intercept, terms = fixed_terms(model)
    if not terms:
        return {}
    if X.shape[1] <= 1 or len(terms) == 1 or type == 1:
        return _type1(X, terms)
    if type == 2:
        return _type2(X, terms)
    return _type3(model, X, has_intercept, terms)


def doolittle_upper(A: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The unit upper-triangular U' of ``A = L D L'`` (no pivoting), lmerTest's doolittle.

    Entries below ``eps`` are set to zero and a pivot below ``eps`` zeroes its column of
    L, as lmerTest does, so that the rows match its hypotheses exactly.
    """
    n = A.shape[0]
    L, U = np.eye(n), np.zeros((n, n))
    for i in range(n):
        U[i] = A[i] - L[i, :i] @ U[:i]
        if i + 1 < n:
            pivot = U[i, i]
            col = A[i + 1 :, i] - L[i + 1 :, :i] @ U[:i, i]
            L[i + 1 :, i] = 0.0 if abs(pivot) < eps else col / pivot
    L[np.abs(L) < eps] = 0.0
    return L.T


def _type1(X: np.ndarray, terms: list[FixedTerm]) -> dict[str, np.ndarray]:
    if X.shape[1] == 1:
        upper = np.ones((1, 1))
    else:
        upper = doolittle_upper(X.T @ X)
    return {t.label: upper[list(t.columns)] for t in terms if t.columns}


def _containing(term: FixedTerm, terms: list[FixedTerm]) -> list[FixedTerm]:
    return [other for other in terms if term.contained_in(other)]


def _type2(X: np.ndarray, terms: list[FixedTerm]) -> dict[str, np.ndarray]:
    p = X.shape[1]
    out = {}
    for term in terms:
        if not term.columns:
            continue
        containing = _containing(term, terms)
        if not containing:
            out[term.label] = np.eye(p)[list(term.columns)]
            continue
        last = list(term.columns) + [c for t in containing for c in t.columns]
        order = [c for c in range(p) if c not in set(last)] + last
        upper = doolittle_upper(X[:, order].T @ X[:, order])
        rows = upper[[order.index(c) for c in term.columns]]
        L = np.zeros_like(rows)
        L[:, order] = rows  # back to X's column order
        out[term.label] = L
    return out


def _type3(
    model: LinearMixedModel, X: np.ndarray, has_intercept: bool, terms: list[FixedTerm]
) -> dict[str, np.ndarray]:
    _require_treatment_contrasts(model)
    frame = model.frame
    cell_blocks, cell_keys = [], []
    if has_intercept:
        cell_blocks.append(np.ones((X.shape[0], 1)))
        cell_keys.append(frozenset())
    for term in terms:
        try:
            mm = model_matrix(f"0 + {term.label}", frame, na_action="ignore")
        except Exception as exc:  # pragma: no cover - the term encoded once already
            raise ModelSpecError(
                f"cannot encode term {term.label!r} in cell means: {exc}"
            ) from None
        cell_blocks.append(np.asarray(mm, dtype=float))
        cell_keys.extend(_column_key(str(c)) for c in mm.columns)
    cells = np.hstack(cell_blocks)
    # L0 = (X^+ cells)': row r holds cell column r's coefficients in X's parameters.
    L0 = _zapsmall(np.linalg.lstsq(X, cells, rcond=None)[0].T)
    by_order = sorted(terms, key=lambda t: len(t.variables), reverse=True)
    for term in by_order:  # highest order first, as lmerTest
        containing = _containing(term, terms)
        cols = [c for t in containing for c in t.columns]
        if cols and term.columns:
            target = L0[:, list(term.columns)]
            basis = L0[:, cols]
            coef = np.linalg.lstsq(basis, target, rcond=None)[0]
            L0[:, list(term.columns)] = _zapsmall(target - basis @ coef)
    names = _x_column_keys(model)
    index = {key: r for r, key in enumerate(cell_keys)}
    missing = [model.fixed.names[j] for j, key in enumerate(names) if key not in index]
    if missing:
        raise ModelSpecError(
            f"type III hypotheses: cannot match X column(s) {missing} to a cell of the "
            "cell-means coding; use type=1 or type=2"
        )
    L = L0[[index[key] for key in names]]  # p x p: rows = X's columns
    out = {}
    for term in terms:
        if not term.columns:
            continue
        rows = L[:, list(term.columns)].T
        out[term.label] = rows[np.abs(rows).sum(axis=1) > _ZAP]
    return out


def _require_treatment_contrasts(model: LinearMixedModel) -> None:
    for name, (kind, state) in model.fixed.spec.encoder_state.items():
        if kind.value != "categorical":
            continue
        coding = state.get("contrasts")
        kind_name = type(getattr(coding, "contrasts", None)).__name__
        if coding is not None and kind_name not in ("TreatmentContrasts", "NoneType"):
            raise ModelSpecError(
                f"type III tests are computed for treatment contrasts; {name!r} uses "
                f"{kind_name}: refit with the default coding or use type=1 or type=2"
            )


_LEVEL = re.compile(r"^(?P<var>.+)\[(?:T\.)?(?P<level>.*)\]$")


def _split_interaction(name: str) -> list[str]:
    """Split ``a:b[T.x]:c`` at the colons outside brackets and parentheses."""
    parts, depth, current = [], 0, []
    for ch in name:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _column_key(name: str) -> frozenset[tuple[str, ...]]:
    """A column's cell: its numeric variables and (factor, level) pairs, in any order.

    Treatment coding names a level ``Sex[T.Male]``, full dummy coding ``Sex[Male]``; both
    mean the cell ``("Sex", "Male")``.
    """
    key = []
    for part in _split_interaction(name):
        match = _LEVEL.match(part)
        key.append((match["var"], match["level"]) if match else (part,))
    return frozenset(key)


def _x_column_keys(model: LinearMixedModel) -> list[frozenset]:
    spec, keep = model.fixed.spec, model.fixed.keep
    names = [str(c) for c in spec.column_names]
    return [frozenset() if names[j] == "Intercept" else _column_key(names[j]) for j in keep]


def _zapsmall(A: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall: round to ``digits`` significant digits of the largest entry."""
    A = np.asarray(A, dtype=float)
    big = np.max(np.abs(A)) if A.size else 0.0
    if big == 0 or not np.isfinite(big):
        return A
    decimals = max(0, digits - int(np.ceil(np.log10(big))))
    return np.round(A, decimals)

