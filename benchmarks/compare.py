"""Side-by-side fit times and criteria: lmm_sparse, lme4 (R) and statsmodels' MixedLM.

For each workload (a packaged data set and a formula), in one run:

* lmm_sparse: wall time of ``lmm_sparse.lmer(formula, data, reml=...)``, set-up included
  (model frame, design, cross-products, kernel choice, optimization, convergence checks,
  result), the median of the repeats;
* lme4: one ``Rscript`` process per workload reads the same data from a temporary CSV,
  converts the same columns to factors, fits a small warm-up model (lme4's sleepstudy),
  then times only the ``lmer()`` call with ``proc.time()`` (elapsed), the same number of
  repeats; R's start-up, package loading and CSV reading are not timed;
* statsmodels' MixedLM, where the model can be written for it: wall time of
  ``smf.mixedlm(...)`` plus ``.fit(reml=True)``, the same repeats.

The criteria are the REML criterion (REML fits) or the ML deviance (ML fits), as lme4's
``REMLcrit()`` and ``deviance()``. For statsmodels, -2 llf is shown only after checking
that its REML log-likelihood uses the same constant as lme4's criterion: statsmodels'
``loglike`` is evaluated at lmm_sparse's estimates and must equal -objective / 2.

Times are wall-clock seconds on a machine that may be shared; compare the ratios measured
in the same run, not absolute seconds across runs.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.compare          # all workloads, writes docs/comparison.md
    .venv/bin/python -m benchmarks.compare --repeats 5 --big-repeats 1
    .venv/bin/python -m benchmarks.compare sleepstudy Penicillin --no-write
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lmm_sparse

from .common import (
    REPO,
    StatsmodelsSpec,
    as_factors,
    first_sentence,
    fmt_diff,
    fmt_ratio,
    fmt_s,
    last_error,
    lme4_script,
    machine_lines,
    median,
    parse_lme4,
    r_info,
    relative_covariances,
    run_rscript,
    same_constant,
    statsmodels_constant_gap,
    statsmodels_model,
)

OUTPUT = REPO / "docs" / "comparison.md"
# A difference of criteria above this is reported as an anomaly.
CRIT_TOL = 1e-3


@dataclass(frozen=True)
class Workload:
    label: str
    dataset: str
    formula: str  # lme4 syntax, used verbatim by lmm_sparse and by R
    reml: bool
    factors: tuple[str, ...]  # columns made factors: str in Python, factor() in R
    big: bool = False
    statsmodels: StatsmodelsSpec | None = None
    statsmodels_skip: str = ""  # why statsmodels is not attempted ({n} is filled in)


WORKLOADS = [
    Workload(
        "dietox", "dietox", "Weight ~ Time + (1 | Pig)", True, ("Pig",),
        statsmodels=StatsmodelsSpec("Weight ~ Time", groups="Pig", re_term="Pig"),
    ),
    Workload(
        "sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)", True, ("Subject",),
        statsmodels=StatsmodelsSpec(
            "Reaction ~ Days", groups="Subject", re_formula="~Days", re_term="Subject"
        ),
    ),
    Workload(
        "Penicillin", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", True,
        ("plate", "sample"),
        statsmodels=StatsmodelsSpec(
            "diameter ~ 1", groups=None, re_formula="0",
            vc_formula={"plate": "0 + C(plate)", "sample": "0 + C(sample)"},
        ),
    ),
    Workload(
        "InstEval", "InstEval", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", False,
        ("s", "d", "dept", "service"), big=True,
        statsmodels_skip="not attempted: crossed factors would be one group of n={n} rows",
    ),
    Workload(
        "kb07 maximal", "kb07",
        "rt_trunc ~ 1 + spkr * prec * load + (1 + spkr + prec + load | subj)"
        " + (1 + spkr + prec + load | item)",
        False, ("subj", "item", "spkr", "prec", "load"), big=True,
        statsmodels_skip="not attempted: crossed factors would be one group of n={n} rows "
        "(and correlated slopes of crossed factors are not variance components)",
    ),
]


@dataclass
class Row:
    workload: Workload
    n: int = 0
    repeats: int = 0
    ours_seconds: list[float] = field(default_factory=list)
    ours_crit: float = float("nan")
    ours_notes: list[str] = field(default_factory=list)
    lme4_seconds: list[float] = field(default_factory=list)
    lme4_crit: float | None = None
    lme4_notes: list[str] = field(default_factory=list)
    lme4_error: str = ""
    sm_seconds: list[float] = field(default_factory=list)
    sm_crit: float | None = None
    sm_constant_gap: float | None = None  # statsmodels -2 loglike - ours, same estimates
    sm_notes: list[str] = field(default_factory=list)
    sm_status: str = ""  # shown instead of numbers when statsmodels is not run / failed


# --------------------------------------------------------------------------- data


def load_data(w: Workload):
    return as_factors(lmm_sparse.datasets.load(w.dataset), w.factors)


# --------------------------------------------------------------------------- lmm_sparse


def time_lmm_sparse(w: Workload, df, repeats: int, row: Row):
    res = None
    messages: set[str] = set()
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            res = lmm_sparse.lmer(w.formula, df, reml=w.reml)
            row.ours_seconds.append(time.perf_counter() - start)
        messages.update(first_sentence(str(c.message)) for c in caught)
    row.n = res.nobs
    row.ours_crit = res.objective
    row.ours_notes.append(
        f"{res.optinfo.feval} evaluations ({res.optinfo.method}), "
        f"kernel {res.model.describe_engine()}"
    )
    if res.is_singular:
        row.ours_notes.append("singular fit")
    row.ours_notes.extend(sorted(messages))
    return res


# --------------------------------------------------------------------------- lme4


def time_lme4(w: Workload, df, repeats: int, row: Row, tmpdir: str) -> None:
    csv = os.path.join(tmpdir, f"{w.dataset}.csv")
    df.to_csv(csv, index=False)
    try:
        outcome = run_rscript(lme4_script(csv, w.formula, w.reml, w.factors, repeats), cap=3600)
    except OSError as exc:
        row.lme4_error = f"Rscript failed: {exc}"
        return
    if outcome.timed_out:
        row.lme4_error = "Rscript did not finish within 3600 s"
        return
    if outcome.returncode != 0:
        row.lme4_error = f"R error: {last_error(outcome.stderr, outcome.returncode)}"
        return
    fit = parse_lme4(outcome.stdout)
    row.lme4_seconds = fit.seconds
    row.lme4_crit = fit.criterion
    if fit.nobs is not None and fit.nobs != row.n:
        row.lme4_notes.append(f"lme4 used {fit.nobs} rows, lmm_sparse {row.n}")
    if fit.singular:
        row.lme4_notes.append("singular fit")
    row.lme4_notes.extend(fit.messages)
    row.lme4_notes.append(f"{fit.feval} evaluations ({fit.optimizer})")


# --------------------------------------------------------------------------- statsmodels


def time_statsmodels(w: Workload, df, repeats: int, row: Row, ours) -> None:
    if w.statsmodels is None:
        row.sm_status = w.statsmodels_skip.format(n=f"{row.n:,}")
        return
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        row.sm_status = "n/a: statsmodels not installed (pip install -e '.[bench]')"
        return
    spec = w.statsmodels
    messages: set[str] = set()
    model = result = None
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model = statsmodels_model(spec, df)
            result = model.fit(reml=True)
            row.sm_seconds.append(time.perf_counter() - start)
        messages.update(first_sentence(str(c.message)) for c in caught)
    if not result.converged:
        row.sm_notes.append("statsmodels reports no convergence")
    row.sm_notes.extend(sorted(messages))

    # Is statsmodels' llf the same quantity as lme4's REML criterion? Evaluate statsmodels'
    # REML log-likelihood at lmm_sparse's estimates (covariances relative to sigma^2).
    gap = statsmodels_constant_gap(
        model, spec, relative_covariances(ours), ours.fixef.to_dict(), ours.objective, True
    )
    row.sm_constant_gap = gap
    if same_constant(gap, ours.objective):
        row.sm_crit = -2 * result.llf
    else:
        row.sm_status = (
            f"-2 llf not comparable: at lmm_sparse's estimates it differs from the REML "
            f"criterion by {gap:+.4g}"
        )


# --------------------------------------------------------------------------- report


def render(rows: list[Row], info: list[str], command: str, started: datetime.datetime,
           loads: tuple[tuple[float, ...], tuple[float, ...]], r_problem: str) -> str:
    out = [
        "# lmm_sparse, lme4 and statsmodels side by side",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Run on {started.strftime('%Y-%m-%d %H:%M')} (local time). "
        "Seconds are wall-clock medians over the repeats in the `reps` column; the machine "
        "may be shared, so compare the ratios (measured in the same run), not absolute "
        "times between runs. Ratios above 1 mean slower than lme4.",
        "",
        "| workload | n | criterion | reps | lmm_sparse s | lme4 s | lmm_sparse / lme4 "
        "| lme4 criterion | lmm_sparse - lme4 | statsmodels s | statsmodels / lme4 "
        "| statsmodels -2 llf - lme4 |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        w = r.workload
        ours, lme4, sm = median(r.ours_seconds), median(r.lme4_seconds), median(r.sm_seconds)
        crit_name = "REML" if w.reml else "ML deviance"
        lme4_crit = "n/a" if r.lme4_crit is None else f"{r.lme4_crit:.4f}"
        ours_diff = None if r.lme4_crit is None else r.ours_crit - r.lme4_crit
        if r.sm_seconds:
            sm_cells = [fmt_s(sm), fmt_ratio(sm, lme4)]
            if r.sm_crit is None:
                sm_cells.append("not comparable (see notes)")
            elif r.lme4_crit is None:
                sm_cells.append(f"n/a (-2 llf = {r.sm_crit:.4f})")
            else:
                sm_cells.append(fmt_diff(r.sm_crit - r.lme4_crit))
        else:
            sm_cells = [r.sm_status, "", ""]
        out.append(
            f"| {w.label} | {r.n:,} | {crit_name} | {r.repeats} | {fmt_s(ours)} "
            f"| {fmt_s(lme4)} | {fmt_ratio(ours, lme4)} | {lme4_crit} | {fmt_diff(ours_diff)} "
            f"| {' | '.join(sm_cells)} |"
        )
    out += ["", "Formulas:", ""]
    for r in rows:
        w = r.workload
        line = f"- {w.label}: `{w.formula}`, {'REML' if w.reml else 'ML'}"
        if w.statsmodels:
            line += "; statsmodels " + w.statsmodels.call_text(reml=True)
        out.append(line)

    anomalies = []
    for r in rows:
        if r.lme4_crit is not None and abs(r.ours_crit - r.lme4_crit) > CRIT_TOL:
            better = "lower (better)" if r.ours_crit < r.lme4_crit else "higher (worse)"
            anomalies.append(
                f"- {r.workload.label}: lmm_sparse's criterion is {better} than lme4's by "
                f"{abs(r.ours_crit - r.lme4_crit):.4g}"
            )
        if r.sm_crit is not None and r.lme4_crit is not None \
                and abs(r.sm_crit - r.lme4_crit) > CRIT_TOL:
            anomalies.append(
                f"- {r.workload.label}: statsmodels' -2 llf differs from lme4's criterion by "
                f"{r.sm_crit - r.lme4_crit:+.4g}"
            )
    out += ["", f"Criterion differences above {CRIT_TOL:g}:", ""]
    out += anomalies or ["- none"]

    out += ["", "Notes per workload (warnings, singular fits, evaluations, kernel):", ""]
    for r in rows:
        notes = [f"lmm_sparse: {'; '.join(r.ours_notes)}"]
        if r.lme4_error:
            notes.append(f"lme4: n/a ({r.lme4_error})")
        elif r.lme4_notes:
            notes.append(f"lme4: {'; '.join(r.lme4_notes)}")
        if r.sm_seconds:
            sm = "; ".join(r.sm_notes) or "no warnings"
            if r.sm_constant_gap is not None:
                sm += (f"; its REML log-likelihood at lmm_sparse's estimates gives "
                       f"-2 loglike - lmm_sparse criterion = {r.sm_constant_gap:+.1e}")
            if r.sm_crit is None and r.sm_status:
                sm += f"; {r.sm_status}"
            notes.append(f"statsmodels: {sm}")
        times = [
            f"{name} {'/'.join(f'{t:.3g}' for t in values)}"
            for name, values in (("lmm_sparse", r.ours_seconds), ("lme4", r.lme4_seconds),
                                 ("statsmodels", r.sm_seconds)) if values
        ]
        notes.append("seconds per repeat: " + ", ".join(times))
        out.append(f"- {r.workload.label}: " + " | ".join(notes))
        if r.workload.big and r.repeats == 1:
            out.append("  (one repeat: a large workload; use `--big-repeats` for more)")
    if r_problem:
        out += ["", f"lme4 columns are n/a: {r_problem}."]

    out += [
        "",
        "What is timed:",
        "",
        "- lmm_sparse: `lmm_sparse.lmer(formula, data, reml=...)`, set-up included "
        "(model frame, design matrices, cross-products, kernel choice, optimization, "
        "convergence checks, result); loading the data set and converting the factor "
        "columns to `str` are not timed. One warm-up fit (sleepstudy) precedes all timings.",
        "- lme4: only the `lmer()` call, by `proc.time()` (elapsed) around it, in one "
        "`Rscript` process per workload, after a warm-up fit of lme4's sleepstudy; R's "
        "start-up, `library(lme4)`, reading the CSV and `factor()` are not timed. lme4's "
        "default optimizer and settings.",
        "- statsmodels: `smf.mixedlm(...)` plus `.fit(reml=True)` with its default "
        "optimizers. Its -2 llf is shown only after checking that statsmodels' REML "
        "log-likelihood, evaluated at lmm_sparse's estimates, equals -1/2 times "
        "lmm_sparse's REML criterion (same constants); the gap is in the notes.",
        "- Fits run one after another (lmm_sparse, lme4, statsmodels per workload), never "
        "concurrently.",
        "",
        f"Load average (1, 5, 15 min) at the start: {', '.join(f'{x:.2f}' for x in loads[0])};"
        f" at the end: {', '.join(f'{x:.2f}' for x in loads[1])}.",
        "",
        "Machine and versions:",
        "",
        *info,
        "",
        "This is a small side-by-side check on a few packaged data sets. The benchmark suite "
        "(large real and simulated designs, memory use, cost per evaluation, scaling with n, "
        "mixedlm) is `benchmarks/run.py`, with its results in "
        "[benchmarks.md](benchmarks.md).",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    labels = [w.label for w in WORKLOADS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*", help=f"labels to run (default: all of {labels})")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per tool and workload (default 3)")
    parser.add_argument("--big-repeats", type=int, default=3,
                        help="fits per tool for InstEval and kb07 maximal (default 3)")
    parser.add_argument("--output", type=Path, default=OUTPUT,
                        help=f"markdown file to write (default {OUTPUT.relative_to(REPO)})")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    unknown = set(args.workloads) - set(labels)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    if args.repeats < 1 or args.big_repeats < 1:
        parser.error("repeats must be at least 1")
    selected = [w for w in WORKLOADS if not args.workloads or w.label in args.workloads]

    command = " ".join([".venv/bin/python -m benchmarks.compare", *sys.argv[1:]])
    started = datetime.datetime.now()
    load_start = os.getloadavg()
    r_versions, r_problem = r_info()
    if r_problem:
        print(f"lme4 is not available ({r_problem}): its columns will be n/a", file=sys.stderr)

    # warm-up: imports and first-call costs stay out of the timings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)",
                        lmm_sparse.datasets.load("sleepstudy"))

    rows = []
    with tempfile.TemporaryDirectory(prefix="lmm_compare_") as tmpdir:
        for w in selected:
            repeats = args.big_repeats if w.big else args.repeats
            row = Row(w, repeats=repeats)
            print(f"{w.label}: lmm_sparse x{repeats}", file=sys.stderr, flush=True)
            df = load_data(w)
            ours = time_lmm_sparse(w, df, repeats, row)
            if r_problem:
                row.lme4_error = r_problem
            else:
                print(f"{w.label}: lme4 x{repeats}", file=sys.stderr, flush=True)
                time_lme4(w, df, repeats, row, tmpdir)
            if w.statsmodels is not None:
                print(f"{w.label}: statsmodels x{repeats}", file=sys.stderr, flush=True)
            time_statsmodels(w, df, repeats, row, ours)
            rows.append(row)

    text = render(rows, machine_lines(r_versions, r_problem, ["statsmodels"]), command, started,
                  (load_start, os.getloadavg()), r_problem)
    print(text, end="")
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
