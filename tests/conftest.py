"""Shared helpers for the tests: case data, R/formulaic name mapping, lme4 comparison.

Nothing here needs R or reads outside the repository: the lme4 golden values are the
JSON files of ``tests/data/reference`` and the data sets are either packaged
(:func:`lmm_sparse.datasets.load`) or in ``tests/data/datasets``.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmm_sparse
from lmm_sparse import datasets

TESTS_DIR = Path(__file__).parent
REFERENCE_DIR = TESTS_DIR / "data" / "reference"
DATASETS_DIR = TESTS_DIR / "data" / "datasets"

# Acceptance tolerances for the comparison with lme4 (see compare_to_lme4).
OBJECTIVE_SLACK = 2e-3  # ours may be lower than lme4's, at most this much higher
FIXEF_SE_FRACTION = 0.01  # |beta - beta_lme4| <= 1% of lme4's standard error
SE_REL = 2e-3  # standard errors: 0.2% relative
SD_REL = 5e-3  # standard deviations: 0.5% relative
SD_BOUNDARY = 1e-3  # an sd below this fraction of sigma is "at zero" in lme4 ...
SD_BOUNDARY_ABS = 5e-3  # ... and is compared with this absolute tolerance (times sigma)
CORR_ABS = 5e-3  # correlations: 0.005 absolute
IC_REL = 1e-6  # logLik/AIC/BIC: consistent with the criterion difference
RANEF_SD_FRACTION = 0.01  # conditional modes: 1% of the effect's sd ...
RANEF_ABS = 1e-3  # ... or this absolute difference, whichever is larger


# --------------------------------------------------------------------------- cases & data


def read_cases(filename: str) -> list[dict]:
    """Rows of a cases CSV (id, data, formula, reml, factors[, formula_py]) as dicts."""
    table = pd.read_csv(REFERENCE_DIR / filename, dtype=str, keep_default_na=False)
    cases = []
    for row in table.to_dict("records"):
        row["reml"] = row["reml"].strip().upper() == "TRUE"
        row["factors"] = [f for f in row["factors"].split(";") if f]
        cases.append(row)
    return cases


@cache
def _reference(filename: str) -> dict:
    return json.loads((REFERENCE_DIR / filename).read_text(encoding="utf-8"))


def load_reference(filename: str) -> dict:
    """lme4's results (one JSON file of tests/data/reference), keyed by case id."""
    return _reference(filename)


@cache
def _raw_dataset(name: str) -> pd.DataFrame:
    if name in datasets.list():
        return datasets.load(name)
    for suffix in (".csv", ".csv.gz"):
        path = DATASETS_DIR / f"{name}{suffix}"
        if path.is_file():
            return pd.read_csv(path)
    raise FileNotFoundError(f"data set {name!r} is neither packaged nor in {DATASETS_DIR}")


def load_dataset(name: str) -> pd.DataFrame:
    """A data set as stored (a fresh copy): packaged one or tests/data/datasets/NAME.csv[.gz]."""
    return _raw_dataset(name).copy()


def _factor_label(value) -> object:
    if pd.isna(value):
        return value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # a numeric id column with NA is read as float: 3.0 -> "3"
    return str(value)


def as_factors(df: pd.DataFrame, columns) -> pd.DataFrame:
    """Copy of ``df`` with ``columns`` as text, as R's factor() on the stored values.

    Missing values stay missing (not the text "nan"), so incomplete rows are still dropped.
    """
    out = df.copy()
    for col in columns:
        out[col] = out[col].map(_factor_label).astype(object)
    return out


def case_data(case: dict) -> pd.DataFrame:
    return as_factors(load_dataset(case["data"]), case["factors"])


def case_formula(case: dict) -> str:
    """The Python spelling of the case's formula (formula_py where R's differs)."""
    return case.get("formula_py") or case["formula"]


# --------------------------------------------------------------------------- names


def _split_top(name: str, sep: str = ":") -> list[str]:
    out, depth, start = [], 0, 0
    for pos, char in enumerate(name):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == sep and depth == 0:
            out.append(name[start:pos])
            start = pos + 1
    out.append(name[start:])
    return out


_CONTRAST = re.compile(r"^(?P<var>.+?)\[(?:T\.)?(?P<level>[^\[\]]*)\]$")


def r_name(name):
    """Map a coefficient name to R's spelling; R names map to themselves.

    ``Intercept`` -> ``(Intercept)``; ``x[T.lev]`` and ``x[lev]`` -> ``xlev``;
    interactions part by part (``a[T.u]:b`` -> ``au:b``); ``I(day ** 2)`` -> ``I(day^2)``.
    None (lme4's NA) stays None.
    """
    if name is None or (isinstance(name, float) and math.isnan(name)):
        return None
    name = str(name).strip()
    if name in ("Intercept", "(Intercept)"):
        return "(Intercept)"
    parts = []
    for part in _split_top(name):
        part = part.strip()
        match = _CONTRAST.match(part)
        if match:
            part = match["var"] + match["level"]
        parts.append(part.replace("**", "^").replace(" ", ""))
    return ":".join(parts)


def _name_key(name):
    """Order-free key of a (normalised) coefficient name: interaction parts sorted."""
    name = r_name(name)
    return None if name is None else tuple(sorted(_split_top(name)))


def group_key(grp) -> str:
    """Grouping-factor name for matching ours with lme4's.

    lme4 prints a factor with several terms as ``g``, ``g.1``, ... and, when it has to
    make names unique, spells ``a:b`` as ``a.b`` (make.names): strip the ``.N`` suffix and
    compare ``:`` and ``.`` alike.
    """
    return re.sub(r"\.\d+$", "", str(grp)).replace(":", ".")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _split_label(label, nparts: int) -> list[str]:
    """A level label split into its factors' labels (``a:b`` for two factors).

    A single factor's labels are never split: they may contain ':' themselves (d3's g).
    """
    text = str(label)
    if nparts <= 1:
        return [text]
    parts = text.split(":")
    return parts if len(parts) == nparts else [text]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def first_level(labels: pd.Index, nfactors: int = 1) -> object:
    """The level R's factor() would put first, among ``labels``.

    Numbers sort numerically, text as R's ICU collation does (case-insensitively first).
    Interaction labels ``a:b`` of ``nfactors`` factors are
    ordered by their first part, then the next (R's ``a:b`` of factors varies the first
    factor slowest).
    """
    split = {label: _split_label(label, nfactors) for label in labels}
    width = max(len(parts) for parts in split.values())
    numeric = [
        all(_is_number(parts[j]) for parts in split.values() if len(parts) > j)
        for j in range(width)
    ]

    def key(label):
        # R (built with ICU) collates text case-insensitively first, lower case first on
        # ties, even under C.UTF-8: factor(c("bris01", "STIR1")) puts "bris01" first.
        return tuple(
            (0, float(p), "", "") if numeric[j] else (1, 0.0, p.casefold(), p.swapcase())
            for j, p in enumerate(split[label])
        )

    return min(labels, key=key)


# --------------------------------------------------------------------------- comparison


def _varcorr_table(rows, source: str) -> dict:
    table: dict = {}
    for grp, var1, var2, vcov, sdcor in rows:
        v1, v2 = r_name(var1), r_name(var2)
        if v2 is not None:
            v1, v2 = sorted((v1, v2))  # a correlation is symmetric in its pair
        key = (group_key(grp), v1, v2)
        assert key not in table, f"{source} varcorr has two rows for {key}"
        table[key] = (
            None if _missing(vcov) else float(vcov),
            None if _missing(sdcor) else float(sdcor),
        )
    return table


def _fmt(key) -> str:
    grp, v1, v2 = key
    return f"{grp} {v1}" + (f" x {v2}" if v2 is not None else "")


def _pattern_pairs(term) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """Distinct rows of a term's model matrix, the pairs of them that meet in one level,
    and the pattern index of every row."""
    patterns, pid = np.unique(np.round(term.X, 12), axis=0, return_inverse=True)
    pid = pid.ravel()
    per_level = pd.Series(pid).groupby(term.codes).unique()
    pairs = sorted({
        (int(a), int(b)) for present in per_level for a in present for b in present if a >= b
    })
    return patterns, pairs, pid


def _sym_outer(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The linear functional Sigma -> x' Sigma z on Sigma's lower triangle."""
    r, c = np.tril_indices(len(x))
    return np.where(r == c, x[r] * z[r], x[r] * z[c] + x[c] * z[r])


def unidentified_terms(model) -> dict[str, object]:
    """Terms whose covariance matrix the design cannot identify, by group key.

    Only the covariances ``x' Sigma z`` of rows x, z of the term's model matrix that occur
    in the same level enter the likelihood. When those functionals do not span every
    symmetric k x k matrix (e.g. categorical slopes of a factor that varies between
    levels, not within them), the likelihood is exactly flat along the rest: the
    optimum's sds and correlations are not determined by the data, and lme4 reports a
    degenerate Hessian there. Structural, from the design alone.
    """
    groups = [group_key(t.group) for t in model.re.terms]
    out = {}
    for term, key in zip(model.re.terms, groups, strict=True):
        if groups.count(key) != 1 or term.k == 1:
            continue
        patterns, pairs, _ = _pattern_pairs(term)
        phi = np.array([_sym_outer(patterns[a], patterns[b]) for a, b in pairs])
        if np.linalg.matrix_rank(phi) < term.k * (term.k + 1) // 2:
            out[key] = term
    return out


def _covariance(table: dict, grp: str, names: list) -> np.ndarray:
    k = len(names)
    S = np.zeros((k, k))
    for a in range(k):
        S[a, a] = table.get((grp, names[a], None), (None, None))[0] or 0.0
        for b in range(a):
            v = table.get((grp, *sorted((names[a], names[b]))), (None, None))[0]
            S[a, b] = S[b, a] = v or 0.0
    return S


def _compare_identified(term, key, res, ours_vc, ref_vc, ref, check) -> None:
    """For a term on a likelihood ridge: compare what the data identify, x' Sigma z over
    co-occurring rows, and the conditional modes as the data see them, x' b."""
    names = [r_name(c) for c in term.coef_names]
    S, S_ref = _covariance(ours_vc, key, names), _covariance(ref_vc, key, names)
    patterns, pairs, pid = _pattern_pairs(term)
    floor = (SD_BOUNDARY_ABS * float(ref["sigma"])) ** 2
    for a, b in pairs:
        x, z = patterns[a], patterns[b]
        v, v_ref = x @ S @ z, x @ S_ref @ z
        tol = 2 * SD_REL * math.sqrt(max(x @ S_ref @ x, 0) * max(z @ S_ref @ z, 0)) + floor
        check(abs(v - v_ref) <= tol,
              f"{key}: covariance {x} Sigma {z} = {v:.8g} vs lme4 {v_ref:.8g} (tol {tol:.3g})")
    modes = {group_key(g): m for g, m in ref["ranef_first_level"].items()}.get(key)
    if modes is None:
        return
    frame = {group_key(g): f for g, f in res.ranef.items()}.get(key)
    if frame is None:
        check(False, f"ranef has no factor {key} (have {list(res.ranef)})")
        return
    level = first_level(frame.index, nfactors=len(key.split(":")))
    b = frame.loc[level].to_numpy(dtype=float)
    b_ref = np.array([{r_name(c): v for c, v in modes.items()}[n] for n in names])
    for a in np.unique(pid[term.codes == term.levels.get_loc(level)]):
        x = patterns[a]
        tol = max(RANEF_SD_FRACTION * math.sqrt(max(x @ S_ref @ x, 0)), RANEF_ABS)
        check(abs(x @ b - x @ b_ref) <= tol,
              f"ranef[{key}][{level!r}] {x} b = {x @ b:.8g} vs lme4 {x @ b_ref:.8g}")


def compare_to_lme4(res, ref: dict, label: str = "") -> None:
    """Assert that a fitted result agrees with lme4's reference values.

    Rules (the acceptance criteria):
      * criterion: ours <= lme4's + 2e-3 (lower is allowed: a better optimum);
      * fixed effects: |b - b_lme4| <= 1% of lme4's standard error;
      * standard errors: 0.2% relative;
      * standard deviations (incl. the residual): 0.5% relative; an sd lme4 puts at ~0
        (< 1e-3 sigma) has no relative scale and is compared absolutely (0.005 sigma);
      * correlations: 0.005 absolute;
      * isSingular, nobs and the number of levels of every grouping factor: equal;
      * logLik, AIC and BIC: differ from lme4's exactly as the criterion does;
      * conditional modes of each factor's first level: within 1% of the effect's sd or
        1e-3 absolute;
      * a term whose covariance the design does not identify (:func:`unidentified_terms`):
        the identified covariances x' Sigma z within 1% (2 x the sd tolerance) and the
        modes as the data see them, x' b, as above, instead of its sds, correlations and
        raw modes, which are arbitrary along the ridge.
    """
    where = f"[{label or ref.get('formula', '')}] "
    errors: list[str] = []
    d_obj = res.objective - ref["objective"]
    better = (
        f" (note: our criterion is {-d_obj:.4g} lower than lme4's, lme4 stopped short of "
        "the optimum)"
        if d_obj < -OBJECTIVE_SLACK
        else ""
    )

    def check(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    # criterion and its bookkeeping
    check(bool(res.reml) == bool(ref["reml"]), f"reml {res.reml} vs lme4 {ref['reml']}")
    check(
        res.objective <= ref["objective"] + OBJECTIVE_SLACK,
        f"criterion {res.objective:.6f} vs lme4 {ref['objective']:.6f} "
        f"(higher by {d_obj:.3g} > {OBJECTIVE_SLACK})",
    )
    for name, ours, theirs, factor in (
        ("aic", res.aic, ref["aic"], 1.0),
        ("bic", res.bic, ref["bic"], 1.0),
        ("loglik", res.loglik, ref["loglik"], -2.0),
    ):
        gap = factor * (ours - theirs) - d_obj
        check(
            abs(gap) <= IC_REL * max(1.0, abs(theirs)),
            f"{name} {ours:.6f} vs lme4 {theirs:.6f}: differs by {gap:.3g} more than the "
            f"criterion difference {d_obj:.3g} explains",
        )
    check(int(res.nobs) == int(ref["nobs"]), f"nobs {res.nobs} vs lme4 {ref['nobs']}")
    ours_ng = {group_key(k): int(v) for k, v in res.ngroups.items()}
    ref_ng = {group_key(k): int(v) for k, v in ref["ngrps"].items()}
    check(ours_ng == ref_ng, f"ngroups {dict(res.ngroups)} vs lme4 {ref['ngrps']}")
    check(
        bool(res.is_singular) == bool(ref["singular"]),
        f"is_singular {res.is_singular} vs lme4 {ref['singular']}",
    )

    # fixed effects and standard errors, matched by name
    table = res.coef_table(ddf=None)
    ours_by_key = {_name_key(n): n for n in res.fixef.index}
    ref_keys = {_name_key(n): n for n in ref["fixef"]}
    check(
        set(ours_by_key) == set(ref_keys),
        f"fixed-effect names {list(res.fixef.index)} vs lme4 {list(ref['fixef'])}",
    )
    for key, rname in ref_keys.items():
        if key not in ours_by_key:
            continue
        name = ours_by_key[key]
        b, b_ref = float(res.fixef[name]), float(ref["fixef"][rname])
        se, se_ref = float(table.loc[name, "std_error"]), float(ref["se"][rname])
        check(
            abs(b - b_ref) <= FIXEF_SE_FRACTION * se_ref,
            f"fixef {rname}: {b:.8g} vs lme4 {b_ref:.8g} (diff {abs(b - b_ref) / se_ref:.3g}"
            f" se, tolerance {FIXEF_SE_FRACTION})",
        )
        check(
            abs(se - se_ref) <= SE_REL * se_ref,
            f"std error {rname}: {se:.8g} vs lme4 {se_ref:.8g} (rel diff "
            f"{abs(se - se_ref) / se_ref:.3g}, tolerance {SE_REL})",
        )

    # variance components, matched by (group, var1, var2)
    vc = res.varcorr
    ours_vc = _varcorr_table(
        zip(vc["grp"], vc["var1"], vc["var2"], vc["vcov"], vc["sdcor"], strict=True), "our"
    )
    rv = ref["varcorr"]
    ref_vc = _varcorr_table(
        zip(rv["grp"], rv["var1"], rv["var2"], rv["vcov"], rv["sdcor"], strict=True), "lme4"
    )
    check(
        set(ours_vc) == set(ref_vc),
        f"variance components {sorted(map(_fmt, ours_vc))} vs lme4 {sorted(map(_fmt, ref_vc))}",
    )
    sigma_ref = float(ref["sigma"])
    boundary = {k for k, (_, sd) in ref_vc.items() if k[2] is None and sd < SD_BOUNDARY * sigma_ref}
    ridge = unidentified_terms(res.model)
    for key, term in ridge.items():
        _compare_identified(term, key, res, ours_vc, ref_vc, ref, check)
    for key, (_, sd_ref) in ref_vc.items():
        if key not in ours_vc or key[0] in ridge:
            continue
        sd = ours_vc[key][1]
        if key[2] is None:  # a standard deviation
            if sd is None:
                check(False, f"sd {_fmt(key)} is missing (lme4 {sd_ref:.6g})")
            elif key in boundary:
                # lme4 puts this sd at (or next to) zero: a relative tolerance would ask for
                # exactly zero, so compare on the scale of the residual sd instead.
                check(
                    abs(sd - sd_ref) <= SD_BOUNDARY_ABS * sigma_ref,
                    f"sd {_fmt(key)} {sd:.6g} vs lme4 {sd_ref:.6g} (boundary: tolerance "
                    f"{SD_BOUNDARY_ABS} x sigma = {SD_BOUNDARY_ABS * sigma_ref:.3g})",
                )
            else:
                check(
                    abs(sd - sd_ref) <= SD_REL * sd_ref,
                    f"sd {_fmt(key)} {sd:.8g} vs lme4 {sd_ref:.8g} (rel diff "
                    f"{abs(sd - sd_ref) / sd_ref:.3g}, tolerance {SD_REL})",
                )
        else:  # a correlation
            grp, v1, v2 = key
            # lme4 reports NA (None) for a correlation involving a zero sd, and any value
            # is equally good there: a correlation with a degenerate effect is undefined.
            if sd_ref is None or (grp, v1, None) in boundary or (grp, v2, None) in boundary:
                continue
            check(
                sd is not None and abs(sd - sd_ref) <= CORR_ABS,
                f"corr {_fmt(key)} {sd} vs lme4 {sd_ref:.6g} (tolerance {CORR_ABS})",
            )

    # conditional modes of the first level of each grouping factor
    ref_sd = {(k[0], k[1]): sd for k, (_, sd) in ref_vc.items() if k[2] is None}
    ours_re = {group_key(g): frame for g, frame in res.ranef.items()}
    for grp, modes in ref["ranef_first_level"].items():
        if group_key(grp) in ridge:
            continue
        frame = ours_re.get(group_key(grp))
        if frame is None:
            check(False, f"ranef has no factor {grp} (have {list(res.ranef)})")
            continue
        level = first_level(frame.index, nfactors=len(str(grp).split(":")))
        columns = {r_name(c): c for c in frame.columns}
        for coef, value_ref in modes.items():
            col = columns.get(r_name(coef))
            if col is None:
                check(False, f"ranef[{grp}] has no column {coef} (have {list(frame.columns)})")
                continue
            value = float(frame.loc[level, col])
            sd = ref_sd.get((group_key(grp), r_name(coef)), 0.0) or 0.0
            tol = max(RANEF_SD_FRACTION * sd, RANEF_ABS)
            check(
                abs(value - value_ref) <= tol,
                f"ranef[{grp}][{level!r}, {coef}] {value:.8g} vs lme4 {value_ref:.8g} "
                f"(tolerance {tol:.3g})",
            )

    if errors:
        raise AssertionError(
            where + f"{len(errors)} mismatch(es) with lme4{better}; criterion {res.objective:.6f} "
            f"vs lme4 {ref['objective']:.6f}:\n  " + "\n  ".join(errors)
        )


# --------------------------------------------------------------------------- synthetic data


def synthetic_frame(
    n: int, seed: int, a_levels: int = 15, b_levels: int = 6, slopes: bool = False
) -> pd.DataFrame:
    """Random crossed factors a, b, c, predictors x, z, f and a response with an
    intercept per level of a (and, with ``slopes``, an x slope per level of a and an
    intercept per level of b, so that such models are not singular)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.integers(0, a_levels, n),
            "b": rng.integers(0, b_levels, n),
            "c": rng.integers(0, 4, n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "f": rng.choice(["p", "q", "r"], n),
        }
    )
    y = df["x"] + rng.normal(size=n) + rng.normal(size=a_levels)[df["a"]]
    if slopes:
        y += df["x"] * rng.normal(scale=0.5, size=a_levels)[df["a"]]
        y += rng.normal(size=b_levels)[df["b"]]
    df["y"] = y
    return df


# --------------------------------------------------------------------------- shared fits

SLEEP_FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="session")
def sleep() -> pd.DataFrame:
    """sleepstudy as packaged (tests must not modify it)."""
    return datasets.load("sleepstudy")


@pytest.fixture(scope="session")
def sleep_fit(sleep):
    """The REML fit of lme4's sleepstudy example, shared read-only by the test modules."""
    return lmm_sparse.lmer(SLEEP_FORMULA, sleep)


def at_theta(res, theta):
    """The fitted model's result at another theta (e.g. lme4's), without optimizing."""
    from dataclasses import replace

    from lmm_sparse.results import make_result

    theta = np.atleast_1d(np.asarray(theta, dtype=float))
    return make_result(res.model, replace(res.optinfo, theta=theta))
