"""Parametric bootstrap: lmm_sparse's ``bootstrap`` against lme4's ``bootMer``, same run.

The acceptance line: a parametric bootstrap of 1,000 refits of sleepstudy
(``Reaction ~ Days + (Days | Subject)``, REML) runs in at most 0.5 x the time of lme4's
``bootMer`` with the same nsim, measured in the same run.

* lme4: one ``Rscript`` reads the same CSV, makes ``Subject`` a factor, fits the model,
  runs a warm-up ``bootMer`` (10 replicates: byte-compilation and first-call costs), then
  times only ``bootMer(m, function(x) c(fixef(x), getME(x, "theta"), sigma(x)), nsim,
  type = "parametric", seed = 1)`` with ``proc.time()`` (elapsed); lme4's defaults;
* lmm_sparse: in this process, after a warm-up bootstrap of 10 replicates, the wall time
  of ``bootstrap(res, nsim, seed=1, progress=False)``, default statistic (sd/cor, sigma,
  fixed effects), serially and with ``n_jobs=-1`` (one worker process per core, started
  inside the timed call).

The ratio judged is the serial one. Both programs' replicate means of the fixed effects
and sigma are printed as a check that they simulate the same model (they differ by Monte
Carlo error only: different random numbers). Without R/lme4 our times are still measured
and the lme4 columns say why they are missing.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bootstrap               # writes docs/bootstrap_benchmark.md
    .venv/bin/python -m benchmarks.bootstrap --nsim 200 --no-write
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

import lmm_sparse
from lmm_sparse.bootstrap import bootstrap

from .common import (
    REPO,
    as_factors,
    fmt_ratio,
    last_error,
    machine_lines,
    r_info,
    r_string,
    run_rscript,
)
from .workloads import data_path

OUTPUT = REPO / "docs" / "bootstrap_benchmark.md"
FORMULA = "Reaction ~ Days + (Days | Subject)"
TARGET_RATIO = 0.5
WARMUP_NSIM = 10
SEED = 1
R_CAP_SECONDS = 1800  # lme4 needs ~20 ms per refit here: far below this for nsim = 1000

R_BOOT = r"""
suppressPackageStartupMessages(library(lme4))
d <- read.csv({csv}, colClasses = c(Subject = "character"))
d$Subject <- factor(d$Subject)
m <- lmer({formula}, data = d, REML = TRUE)
f <- function(x) c(fixef(x), getME(x, "theta"), sigma(x))
invisible(suppressMessages(bootMer(m, f, nsim = {warmup}, type = "parametric")))
t0 <- proc.time()[["elapsed"]]
b <- bootMer(m, f, nsim = {nsim}, type = "parametric", seed = {seed})
cat("LME4_BOOT_SECONDS", sprintf("%.6f", proc.time()[["elapsed"]] - t0), "\n")
cat("LME4_BOOT_FAILED", sum(!stats::complete.cases(b$t)), "\n")
means <- colMeans(b$t, na.rm = TRUE)
nm <- names(b$t0); nm[length(nm)] <- "sigma"  # sigma(x) comes last, unnamed
for (i in seq_along(means)) cat("LME4_BOOT_MEAN", nm[i], sprintf("%.10g", means[i]), "\n")
msgs <- attr(b, "boot.all.msgs")
for (kind in names(msgs)) for (msg in names(msgs[[kind]]))
  cat("LME4_BOOT_MESSAGE", kind, msgs[[kind]][[msg]], "x", gsub("\n", " ", msg), "\n")
"""


@dataclass
class Lme4Boot:
    seconds: float | None = None
    failed: int | None = None
    means: dict[str, float] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    problem: str = ""


def _message_kind(message: str) -> str:
    """lme4's message without its numbers, so that the gradient warnings are counted
    together ("Model failed to converge with max|grad| = 0.0021 (tol = ...)")."""
    return re.sub(r" with max\|grad\| = .*$", "", message.strip())


@dataclass(frozen=True)
class OursBoot:
    label: str
    seconds: float
    n_failed: int
    means: dict[str, float]
    messages: dict[str, int]


def load_sleepstudy() -> pd.DataFrame:
    return as_factors(pd.read_csv(data_path("sleepstudy")), ["Subject"])


def run_lme4(df: pd.DataFrame, nsim: int, r_problem: str) -> Lme4Boot:
    if r_problem:
        return Lme4Boot(problem=r_problem)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "sleepstudy.csv"
        df.to_csv(csv, index=False)
        code = R_BOOT.format(csv=r_string(str(csv)), formula=FORMULA, warmup=WARMUP_NSIM,
                             nsim=nsim, seed=SEED)
        outcome = run_rscript(code, cap=R_CAP_SECONDS)
    if outcome.timed_out:
        return Lme4Boot(problem=f"bootMer did not finish within {R_CAP_SECONDS} s")
    if outcome.returncode != 0:
        return Lme4Boot(problem=last_error(outcome.stderr, outcome.returncode))
    out = Lme4Boot()
    for line in outcome.stdout.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "LME4_BOOT_SECONDS":
            out.seconds = float(value)
        elif key == "LME4_BOOT_FAILED":
            out.failed = int(value)
        elif key == "LME4_BOOT_MEAN":
            name, number = value.rsplit(" ", 1)
            out.means[name] = float(number)
        elif key == "LME4_BOOT_MESSAGE":  # "kind count x message"
            _, count, _, message = value.split(" ", 3)
            kind = _message_kind(message)
            out.messages[kind] = out.messages.get(kind, 0) + int(count)
    if out.seconds is None:
        out.problem = "bootMer printed no time"
    return out


def run_ours(res, nsim: int, n_jobs: int, label: str) -> OursBoot:
    start = time.perf_counter()
    boot = bootstrap(res, nsim, seed=SEED, n_jobs=n_jobs, progress=False)
    seconds = time.perf_counter() - start
    means = boot.replicates.mean().to_dict()
    return OursBoot(label, seconds, boot.n_failed, means, dict(boot.messages))


def _fmt(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f}"


def render(nsim: int, ours: list[OursBoot], lme4: Lme4Boot, info: list[str],
           started: datetime.datetime, command: str) -> str:
    serial = ours[0]
    ratio = None if lme4.seconds is None else serial.seconds / lme4.seconds
    verdict = ("n/a (no lme4 time: " + lme4.problem + ")" if ratio is None else
               f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'} ({ratio:.2f} x lme4's time, "
               f"target <= {TARGET_RATIO})")
    lines = [
        "# Parametric bootstrap: lmm_sparse against lme4's bootMer",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Run on {started:%Y-%m-%d %H:%M} (local time): {nsim} parametric bootstrap refits of "
        f"sleepstudy, `{FORMULA}`, REML, both programs in the same run. Wall-clock seconds "
        "of the bootstrap call alone (after a warm-up of "
        f"{WARMUP_NSIM} replicates in each program); the machine may be shared, so compare "
        "the ratios, not absolute times between runs. See `benchmarks/bootstrap.py` for "
        "what is timed.",
        "",
        f"**Acceptance** (serial lmm_sparse <= {TARGET_RATIO} x lme4's bootMer): {verdict}",
        "",
        "| program | call | seconds | ms per refit | / lme4 | failed refits | messages |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in ours:
        messages = "; ".join(f"{n} x {m}" for m, n in row.messages.items()) or "none"
        lines.append(
            f"| lmm_sparse | {row.label} | {_fmt(row.seconds)} | "
            f"{1e3 * row.seconds / nsim:.2f} | {fmt_ratio(row.seconds, lme4.seconds)} | "
            f"{row.n_failed} | {messages} |"
        )
    if lme4.seconds is None:
        lines.append(f"| lme4 | bootMer | n/a | n/a | | | {lme4.problem} |")
    else:
        lines.append(
            f"| lme4 | `bootMer(m, c(fixef, theta, sigma), nsim = {nsim}, type = "
            f"\"parametric\")` | {_fmt(lme4.seconds)} | {1e3 * lme4.seconds / nsim:.2f} | 1.00 "
            f"| {lme4.failed} | "
            f"{'; '.join(f'{n} x {m}' for m, n in lme4.messages.items()) or 'none'} |"
        )
    lines += ["", "Replicate means (Monte Carlo check that both simulate the same model):", ""]
    lines += ["| statistic | lmm_sparse (serial) | lmm_sparse (n_jobs=-1) | lme4 |",
              "| --- | ---: | ---: | ---: |"]
    for name in ("(Intercept)", "Days", "sigma"):
        theirs = lme4.means.get(name)
        cells = [f"{row.means.get(name, float('nan')):.4g}" for row in ours]
        cells += [""] * (2 - len(cells))
        lines.append(f"| {name} | {' | '.join(cells)} | "
                     f"{'n/a' if theirs is None else f'{theirs:.4g}'} |")
    lines += ["", "Machine and versions:", "", *info, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nsim", type=int, default=1000)
    parser.add_argument("--no-parallel", action="store_true", help="skip the n_jobs=-1 row")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {OUTPUT}")
    args = parser.parse_args()
    started = datetime.datetime.now()
    command = "python -m benchmarks.bootstrap" + "".join(
        f" {a}" for a in sys.argv[1:])
    r_versions, r_problem = r_info()
    df = load_sleepstudy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = lmm_sparse.lmer(FORMULA, df)
        bootstrap(res, WARMUP_NSIM, seed=0, progress=False)
    ours = [run_ours(res, args.nsim, 1, "`bootstrap(res, nsim)` (serial)")]
    print(f"lmm_sparse serial: {ours[0].seconds:.2f} s", flush=True)
    lme4 = run_lme4(df, args.nsim, r_problem)
    print(f"lme4 bootMer: {_fmt(lme4.seconds)} s {lme4.problem}", flush=True)
    if not args.no_parallel:
        ours.append(run_ours(res, args.nsim, -1, "`bootstrap(res, nsim, n_jobs=-1)`"))
        print(f"lmm_sparse n_jobs=-1: {ours[1].seconds:.2f} s", flush=True)
    machine = machine_lines(r_versions, r_problem, ["pandas", "scikit-sparse"])
    text = render(args.nsim, ours, lme4, machine, started, command)
    print(text)
    if not args.no_write:
        OUTPUT.write_text(text)
        print(f"wrote {OUTPUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
