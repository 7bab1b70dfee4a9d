"""Pieces shared by the benchmark scripts (``compare.py`` and the suite ``run.py``).

* data: factor columns as text, the way R's ``factor()`` sees the stored values;
* processes: one child run with a time cap, its wall time and peak resident memory
  (``os.wait4`` returns the rusage of exactly that child);
* R: the lme4 fit script, its parsed output, R's and lme4's versions;
* statsmodels: how a workload is written for ``MixedLM`` and the check that its
  log-likelihood uses lme4's constants;
* machine and version lines, number formatting.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info

REPO = Path(__file__).resolve().parent.parent
# statsmodels' -2 loglike at lmm_sparse's estimates must match lmm_sparse's criterion to
# this relative tolerance for the two criteria to count as the same quantity.
CONSTANT_RTOL = 1e-7
# How often a capped child is polled; the fits time themselves, so this only delays the
# parent's noticing that a child ended.
POLL_SECONDS = 0.05


# --------------------------------------------------------------------------- data


def _factor_text(value: object) -> object:
    """One stored value as R's factor() labels it; missing values stay missing."""
    if pd.isna(value):
        return value
    # A numeric id column with missing values is read as float: 3.0 must become "3".
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def as_factors(df: pd.DataFrame, columns) -> pd.DataFrame:
    """``df`` with ``columns`` as text (in place; returns ``df``)."""
    for col in columns:
        df[col] = df[col].map(_factor_text).astype(object)
    return df


def first_sentence(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line.split(". ")[0]


def relative_covariances(res) -> dict[str, np.ndarray]:
    """lmm_sparse's relative covariance T T' per grouping term (Var(b) / sigma^2)."""
    out = {}
    for i, term in enumerate(res.model.re.terms):
        T = res.model.re.template(res.theta, i)
        out[term.group] = T @ T.T
    return out


# --------------------------------------------------------------------------- processes


@dataclass
class ProcOutcome:
    """A finished (or killed) child process."""

    returncode: int | None  # None when it was killed at the cap
    seconds: float  # wall time of the whole process, start-up included
    peak_rss_mib: float  # ru_maxrss of the child (KiB on Linux) in MiB
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_measured(
    cmd: list[str], cap: float | None = None, preexec_fn: Callable[[], None] | None = None
) -> ProcOutcome:
    """Run ``cmd`` to its end or until ``cap`` seconds, then kill its process group.

    ``preexec_fn`` runs in the child before the command (e.g. to set resource limits).

    ``os.wait4`` is used instead of ``Popen.wait`` because it also returns the child's
    resource usage, so the peak memory is that of this one process (and any children it
    waited for), not of everything the benchmark started so far.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        # Own session: a kill at the cap also reaches whatever the child started.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=REPO, start_new_session=True, preexec_fn=preexec_fn
        )
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if cap is not None and time.perf_counter() - start > cap:
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                killed = True
                break
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - start
        # Popen must not try to reap the child a second time.
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcOutcome(
            returncode=None if killed else proc.returncode,
            seconds=seconds,
            peak_rss_mib=usage.ru_maxrss / 1024.0,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def last_error(stderr: str, code: int | None) -> str:
    """The first line of an R error, else the last line of a traceback (or the exit code)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    if errors:
        return errors[0]
    return lines[-1] if lines else f"exit status {code}"


# --------------------------------------------------------------------------- R and lme4

R_INFO = r"""
suppressPackageStartupMessages(library(lme4))
cat("R_VERSION", R.version.string, "\n")
cat("LME4_VERSION", packageDescription("lme4")$Version, "\n")
cat("MATRIX_VERSION", packageDescription("Matrix")$Version, "\n")
cat("R_BLAS", extSoftVersion()[["BLAS"]], "\n")
cat("R_LAPACK", La_library(), "\n")
"""

# Reads the data written by the caller, makes the same columns factors, fits a warm-up
# model (the first lmer() of a session also loads and byte-compiles code), then times only
# the lmer() calls. Empty fields are missing values (pandas writes NaN as "").
R_FIT = r"""
suppressPackageStartupMessages(library(lme4))
invisible(suppressMessages(lmer(Reaction ~ Days + (Days | Subject), sleepstudy)))
factors <- {factors}
classes <- setNames(rep("character", length(factors)), factors)
d <- read.csv({csv}, colClasses = classes, na.strings = c("NA", ""))
for (v in factors) d[[v]] <- factor(d[[v]])
f <- as.formula({formula})
times <- numeric({repeats})
for (i in seq_len({repeats})) {{
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(f, data = d, REML = {reml})
  times[i] <- proc.time()[["elapsed"]] - t0
}}
cat("LME4_SECONDS", sprintf("%.6f", times), "\n")
cat("LME4_NOBS", nobs(m), "\n")
crit <- if ({reml}) REMLcrit(m) else deviance(m)
cat("LME4_CRITERION", sprintf("%.10f", crit), "\n")
cat("LME4_SINGULAR", isSingular(m), "\n")
cat("LME4_FEVAL", m@optinfo$feval, "\n")
cat("LME4_OPTIMIZER", m@optinfo$optimizer, "\n")
for (msg in m@optinfo$conv$lme4$messages) cat("LME4_MESSAGE", msg, "\n")
for (msg in m@optinfo$warnings) cat("LME4_MESSAGE", msg, "\n")
"""


def r_string(text: str) -> str:
    return json.dumps(text)  # a valid R string literal for plain text


def lme4_script(csv: Path | str, formula: str, reml: bool, factors, repeats: int = 1) -> str:
    return R_FIT.format(
        factors="c(" + ", ".join(r_string(c) for c in factors) + ")",
        csv=r_string(str(csv)),
        formula=r_string(formula),
        repeats=repeats,
        reml="TRUE" if reml else "FALSE",
    )


def run_rscript(
    code: str, cap: float | None, preexec_fn: Callable[[], None] | None = None
) -> ProcOutcome:
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(code)
        path = fh.name
    try:
        return run_measured(["Rscript", "--vanilla", path], cap, preexec_fn)
    finally:
        os.unlink(path)


@dataclass
class Lme4Output:
    """What the R_FIT script printed."""

    seconds: list[float] = field(default_factory=list)
    nobs: int | None = None
    criterion: float | None = None
    singular: bool | None = None
    feval: int | None = None
    optimizer: str = ""
    messages: list[str] = field(default_factory=list)


def parse_lme4(stdout: str) -> Lme4Output:
    out = Lme4Output()
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        value = " ".join(value.split())
        if key == "LME4_SECONDS":
            out.seconds = [float(v) for v in value.split()]
        elif key == "LME4_NOBS":
            out.nobs = int(value)
        elif key == "LME4_CRITERION":
            out.criterion = float(value)
        elif key == "LME4_SINGULAR":
            out.singular = value == "TRUE"
        elif key == "LME4_FEVAL":
            out.feval = int(value)
        elif key == "LME4_OPTIMIZER":
            out.optimizer = value
        elif key == "LME4_MESSAGE":
            out.messages.append(value)
    return out


def r_info() -> tuple[dict[str, str], str]:
    """Versions of R and lme4 (empty dict and the reason if they cannot be used)."""
    try:
        outcome = run_rscript(R_INFO, cap=120)
    except OSError as exc:  # no Rscript on PATH
        return {}, f"Rscript not found ({exc.strerror})"
    if outcome.timed_out:
        return {}, "Rscript did not answer within 120 s"
    if outcome.returncode != 0:
        return {}, f"lme4 not usable in R: {last_error(outcome.stderr, outcome.returncode)}"
    info = {}
    for line in outcome.stdout.splitlines():
        key, _, value = line.partition(" ")
        info[key] = value.strip()
    return info, ""


def r_version_line(r_versions: dict[str, str], r_problem: str) -> str:
    if not r_versions:
        return f"- R / lme4: n/a ({r_problem})"
    return (
        f"- {r_versions.get('R_VERSION', 'R ?')}, lme4 {r_versions.get('LME4_VERSION', '?')}"
        f" (Matrix {r_versions.get('MATRIX_VERSION', '?')}); R's BLAS "
        f"`{r_versions.get('R_BLAS', '?')}`, LAPACK `{r_versions.get('R_LAPACK', '?')}`"
    )


# --------------------------------------------------------------------------- statsmodels


@dataclass(frozen=True)
class StatsmodelsSpec:
    """How the workload is written for statsmodels' MixedLM (all groups in one column)."""

    formula: str  # fixed part
    groups: str | None  # grouping column; None: one group holding every row
    re_formula: str | None = None
    vc_formula: dict[str, str] | None = None
    re_term: str | None = None  # lmm_sparse term whose covariance is statsmodels' cov_re

    def call_text(self, reml: bool) -> str:
        parts = [f"`mixedlm({self.formula!r}"]
        parts.append("groups=np.ones(n)" if self.groups is None else f"groups={self.groups}")
        if self.re_formula is not None:
            parts.append(f"re_formula={self.re_formula!r}")
        if self.vc_formula is not None:
            parts.append(f"vc_formula={self.vc_formula!r}")
        return ", ".join(parts) + f").fit(reml={reml})`"


def statsmodels_model(spec: StatsmodelsSpec, df: pd.DataFrame):
    import statsmodels.formula.api as smf

    groups = np.ones(len(df)) if spec.groups is None else df[spec.groups]
    return smf.mixedlm(
        spec.formula, df, groups=groups, re_formula=spec.re_formula, vc_formula=spec.vc_formula
    )


def statsmodels_constant_gap(
    model, spec: StatsmodelsSpec, rel: dict[str, np.ndarray], fixef: dict[str, float],
    objective: float, reml: bool,
) -> float:
    """statsmodels' -2 loglike at lmm_sparse's estimates minus lmm_sparse's criterion.

    ``rel`` holds lmm_sparse's relative covariances (Var(b) / sigma^2) per grouping term,
    ``fixef`` its fixed effects by name (patsy orders the columns differently: categorical
    terms first); zero means the two criteria use the same constants and can be compared.
    """
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    ours = {("Intercept" if k == "(Intercept)" else k): v for k, v in fixef.items()}
    fe = np.array([ours[name] for name in model.exog_names], dtype=float)
    k_re = model.k_re
    cov_re = np.asarray(rel[spec.re_term]) if spec.re_term else np.zeros((k_re, k_re))
    vcomp = (
        np.array([np.asarray(rel[name])[0, 0] for name in model.exog_vc.names])
        if model.k_vc else None
    )
    params = MixedLMParams.from_components(fe_params=fe, cov_re=cov_re, vcomp=vcomp)
    model.reml = reml  # loglike follows the model's flag, which fit() sets
    return -2 * model.loglike(params, profile_fe=False) - objective


def same_constant(gap: float, objective: float) -> bool:
    return abs(gap) <= CONSTANT_RTOL * max(1.0, abs(objective))


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores_line() -> str:
    logical = os.cpu_count()
    physical = None
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    return (
        f"{logical} logical cores" + (f" ({physical} physical)" if physical else "")
        + f", {usable} usable by this process; {platform.system()} {platform.machine()}"
    )


def python_blas_lines() -> list[str]:
    lines = ["- Python BLAS (threadpoolctl.threadpool_info()):"]
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        lines.append(
            f"  - {lib.get('internal_api')} {lib.get('version')}"
            f" ({lib.get('threading_layer')}, {lib.get('architecture')}),"
            f" {lib.get('num_threads')} threads: `{Path(lib.get('filepath', '')).name}`"
        )
    return lines


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_lines(r_versions: dict[str, str], r_problem: str, packages: list[str]) -> list[str]:
    """The machine and versions block of a report: CPU, cores, BLAS, Python with numpy,
    scipy and ``packages``, and R."""
    import scipy

    import lmm_sparse

    versions = ", ".join(f"{name} {package_version(name)}" for name in packages)
    return [
        f"- CPU: {cpu_model()}; {cores_line()}",
        *python_blas_lines(),
        f"- Python {platform.python_version()}, lmm_sparse {lmm_sparse.__version__}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
        + (f", {versions}" if versions else ""),
        r_version_line(r_versions, r_problem),
    ]


# --------------------------------------------------------------------------- formatting


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def fmt_diff(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "0" if x == 0 else f"{x:+.1e}"
