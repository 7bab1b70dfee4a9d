"""docs/benchmarks.md from a run's records (nothing here fits or measures)."""

from __future__ import annotations

from .common import fmt_diff, r_version_line
from .records import (
    CAPPED,
    LIBRARIES,
    NOT_ATTEMPTED,
    NOT_EXPRESSIBLE,
    SKIPPED,
    UNAVAILABLE,
    LibResult,
    RunRecord,
    WorkloadRecord,
)
from .targets import FAIL, NA, PASS, eval_costs, judge, speed_ratio

PLOT_NAME = "img/benchmarks_fit_time.png"  # relative to docs/, as the page links it
PEERS = ("mixedlm", "statsmodels")

TIMED = """\
What is timed, and how:

- Every fit runs in its own fresh process, one after another (never two at once). Each
  process first makes a small warm-up fit with the same library (lme4's sleepstudy), so
  imports and first-call costs are not timed, then loads the data (not timed), then times
  the fit call alone with a wall clock.
- lmm_sparse: `lmm_sparse.lmer(formula, data, reml=...)`, set-up included (model frame,
  design, cross-products, kernel choice, optimization, convergence checks, result).
  Evaluations are `res.optinfo.feval` (the optimizer's; the finite-difference checks at
  the end are not counted, as lme4's `feval` does not count its own).
- Per-evaluation cost, in a separate process at the fitted theta: a new
  `LinearMixedModel` (same kernel: the choice depends on the structure only), then
  interleaved rounds of `ws.kernel.factor(model.re.templates(theta))` (the factorization
  alone), `ws.evaluate(theta)` (one criterion evaluation) and, where the workspace has it,
  `ws.objective_and_gradient(theta, reml)`; medians over at least 5 rounds (up to 50
  within about 3 s), with the BLAS threads a fit gives its evaluations. Models with
  q <= 120 are fitted by the dense evaluator (`model.fit_evaluator()`), whose own calls
  are timed: `factor(theta)` (`Lambda' Z'Z Lambda + I` formed and factored, q x q),
  `objective(theta, reml)` and `objective_and_gradient(theta, reml)`.
- n-scaling: the n-scaling designs' costs are measured once more side by side, in one
  process with rounds interleaved across the designs, and the flatness target is judged
  on those (timings of separate processes drift by tens of percent on a shared machine).
- lme4: one `Rscript` process per workload reads the same data from a CSV, makes the same
  columns factors, fits the warm-up model, then times `lmer(formula, data, REML=...)` with
  `proc.time()` (elapsed); lme4's default optimizer and settings. Evaluations are
  `fit@optinfo$feval`; the criterion is `REMLcrit()` (REML) or `deviance()` (ML).
- mixedlm: `mixedlm.lmer(formula, data, REML=...)` with its defaults; evaluations are its
  `function_evals`; the criterion is `REMLcrit()` (REML) or `deviance` (ML), shown only
  after checking that it is lme4's quantity (see below).
- statsmodels: `smf.mixedlm(...)` plus `.fit(reml=...)`, where the model can be written
  for it; its -2 llf is shown only when its log-likelihood at lmm_sparse's estimates is
  -1/2 lmm_sparse's criterion (same constants).
- Peak memory: `ru_maxrss` of the process that made the fit, from `os.wait4` on that
  process (Linux reports KiB); it includes the interpreter, the libraries and the data,
  not only the fit. For lme4 it is the whole R process (data, warm-up fit and fit).
- Caps: lme4's process is killed after the lme4 cap, mixedlm's and statsmodels' after the
  peer cap; such a fit is reported as "exceeded cap". A cap counts the whole process
  (start-up, data and warm-up: a few seconds), so a ratio against a capped time is an
  upper bound ("< x"). Every process also runs under an address-space limit (see caps
  below) so that a runaway fit fails instead of exhausting the machine's memory.
- Wall-clock times on a machine that may be shared: compare the ratios measured in the same
  run, not absolute seconds across runs. Each number is a single fit.
"""


def status_text(r: LibResult) -> str:
    """What a table cell says for a library that has no numbers for this workload."""
    if r.status == CAPPED:
        return f"exceeded cap ({r.extra.get('cap_seconds', 0):g} s)"
    if r.status in (NOT_ATTEMPTED, UNAVAILABLE, SKIPPED, NOT_EXPRESSIBLE):
        return r.status
    return f"{r.status} (see notes)"


def _seconds_cell(rec: WorkloadRecord, lib: str) -> str:
    r = rec.lib(lib)
    if not r.ok:
        return status_text(r)
    if lib == "lme4":
        return f"{r.seconds:.3g}"
    ratio, bound, _ = speed_ratio(rec, lib)
    if ratio is None:
        return f"{r.seconds:.3g}"
    return f"{r.seconds:.3g} ({'< ' if bound else ''}{ratio:.2f})"


def _crit_diff(rec: WorkloadRecord, lib: str) -> str:
    r, lme4 = rec.lib(lib), rec.lib("lme4")
    if not (r.ok and r.criterion is not None and lme4.ok and lme4.criterion is not None):
        return "-"
    return fmt_diff(r.criterion - lme4.criterion)


def _opt(value, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _eval_cells(rec: WorkloadRecord) -> list[str]:
    costs = eval_costs(rec)
    if not costs:
        return ["-", "-", "-"]
    factor, evaluate = costs["factor"] * 1e3, costs["evaluate"] * 1e3
    grad = costs.get("gradient")
    return [
        f"{factor:.3g}",
        f"{evaluate:.3g} ({evaluate / factor:.2f})",
        "-" if grad is None else f"{grad * 1e3:.3g}",
    ]


def table(run: RunRecord) -> list[str]:
    lines = [
        "| workload | n | q | lmm_sparse s (/ lme4) | lme4 s | mixedlm s (/ lme4) "
        "| statsmodels s (/ lme4) | evaluations lmm_sparse / lme4 / mixedlm "
        "| criterion - lme4: lmm_sparse / mixedlm / statsmodels "
        "| peak RSS MiB lmm_sparse / lme4 / mixedlm / statsmodels "
        "| factor ms | evaluation ms (/ factor) | evaluation + gradient ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for rec in run.workloads:
        evals = " / ".join(
            _opt(rec.lib(lib).feval) if rec.lib(lib).ok else "-"
            for lib in ("lmm_sparse", "lme4", "mixedlm")
        )
        crit = " / ".join(_crit_diff(rec, lib) for lib in ("lmm_sparse", *PEERS))
        rss = " / ".join(_opt(rec.lib(lib).peak_rss_mib, "{:,.0f}") if rec.lib(lib).ok
                         else "-" for lib in LIBRARIES)
        cells = [
            rec.id, _opt(rec.n, "{:,}"), _opt(rec.q, "{:,}"),
            *(_seconds_cell(rec, lib) for lib in LIBRARIES),
            evals, crit, rss, *_eval_cells(rec),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets_section(run: RunRecord) -> list[str]:
    verdicts = judge(run)
    counts = {k: sum(v.result.startswith(k) for v in verdicts) for k in (PASS, FAIL, NA)}
    lines = [
        "## Targets",
        "",
        f"Judged from this run's numbers: {counts[PASS]} PASS, {counts[FAIL]} FAIL, "
        f"{counts[NA]} N/A (not decidable from this run: the reason is given).",
        "",
        "| target | workload | measured | result |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {v.target} | {v.workload} | {v.measured} | {v.result} |" for v in verdicts]
    return lines


def _lib_notes(rec: WorkloadRecord, lib: str) -> str:
    r = rec.lib(lib)
    parts = [] if r.ok else [status_text(r) + (f": {r.detail}" if r.detail else "")]
    if r.ok:
        if lib == "lmm_sparse":
            parts.append(f"{r.feval} evaluations ({r.extra.get('method')}), "
                         f"kernel {r.extra.get('kernel')}")
            cost = r.extra.get("eval_cost", {})
            if cost.get("rounds"):
                parts.append(f"evaluation costs over {cost['rounds']} rounds, "
                             f"{cost.get('blas_threads')} BLAS thread(s)")
            elif cost.get("error"):
                parts.append(f"evaluation costs not measured: {cost['error']}")
        elif lib in ("lme4", "mixedlm"):
            parts.append(f"{r.feval} evaluations ({r.extra.get('optimizer')})")
        if r.singular:
            parts.append("singular fit")
    parts += r.notes
    if "constant_gap" in r.extra:
        parts.append(f"-2 loglike at lmm_sparse's estimates - lmm_sparse's criterion = "
                     f"{r.extra['constant_gap']:+.1e}")
    if "constant" in r.extra:
        parts.append(str(r.extra["constant"]))
    return f"{lib}: " + "; ".join(parts)


def notes_section(run: RunRecord) -> list[str]:
    lines = ["## Notes per workload", ""]
    for rec in run.workloads:
        libs = [_lib_notes(rec, lib) for lib in LIBRARIES if rec.lib(lib).status != SKIPPED]
        lines.append(f"- **{rec.id}**: " + " | ".join(libs))
    return lines


def formulas_section(run: RunRecord) -> list[str]:
    lines = ["## Workloads", ""]
    for rec in run.workloads:
        crit = "REML" if rec.reml else "ML"
        lines.append(f"- {rec.id} ({rec.kind}): `{rec.formula}`, {crit}; data {rec.source}")
        spec = rec.lib("statsmodels").extra.get("call")
        if spec:
            lines.append(f"  - statsmodels: {spec}")
    return lines


def scale_section(meta: dict) -> list[str]:
    check = meta.get("mixedlm_scale") or {}
    lines = ["## mixedlm's criterion scale", ""]
    if "cases" not in check:
        return lines + [f"Not checked: {check.get('status', 'mixedlm not run')}."]
    same = all(c["same"] for c in check["cases"])
    lines += [
        "mixedlm's own deviance function (`mkLmerDevfun(lFormula(...))`) evaluated at "
        "lmm_sparse's theta, against lmm_sparse's criterion there (which the parity tests "
        "tie to lme4's):",
        "",
        "| case | lmm_sparse | mixedlm devfun at that theta | mixedlm's own fit |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in check["cases"]:
        case = c["case"].replace("|", "\\|")  # a formula's bar would end the cell
        lines.append(f"| {case} | {c['lmm_sparse']:.8f} | "
                     f"{c['mixedlm_devfun_at_lmm_sparse_theta']:.8f} | {c['mixedlm_fit']:.8f} |")
    lines += ["", "Same quantity and constants: mixedlm's criterion differences are shown."
              if same else "Not the same quantity: mixedlm's criterion differences are not "
              "shown."]
    return lines


def machine_section(meta: dict) -> list[str]:
    m = meta["machine"]
    v = meta["versions"]
    caps = meta["caps"]
    load = meta.get("load", [[], []])
    lines = [
        "## Machine and versions",
        "",
        f"- CPU: {m['cpu']}; {m['cores']}; RAM {m['ram_gib']:.1f} GiB",
        f"- Load average (1, 5, 15 min) at the start: "
        f"{', '.join(f'{x:.2f}' for x in load[0])}; at the end: "
        f"{', '.join(f'{x:.2f}' for x in load[1])}",
        *meta["python_blas"],
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        r_version_line(meta.get("r", {}), meta.get("r_problem", "")),
        f"- Caps: lme4 {caps['lme4']:g} s, mixedlm and statsmodels {caps['peers']:g} s, "
        f"address space of every fit process {caps['memory_gib']:g} GiB",
    ]
    for lib, why in meta.get("unavailable", {}).items():
        lines.append(f"- {lib} not available in this run: {why}")
    return lines


def render(run: RunRecord) -> str:
    meta = run.meta
    out = [
        "# Benchmarks: lmm_sparse, lme4, mixedlm and statsmodels",
        "",
        "Generated by `benchmarks/run.py` (see `benchmarks/README.md`); re-render from "
        "`docs/benchmarks.json` with `--render-only`. Command:",
        "",
        "```bash",
        meta["command"],
        "```",
        "",
        f"Run from {meta['started']} to {meta['finished']} (local time), on commit "
        f"{meta.get('git', 'unknown')}.",
        "",
        "Seconds are one fit each, in parentheses the ratio to lme4 (below 1: faster than "
        "lme4). Criterion differences are REML criteria or ML deviances minus lme4's "
        "(negative: a better optimum than lme4's). `factor`, `evaluation` and `evaluation "
        "+ gradient` are lmm_sparse's median costs at the optimum; in parentheses "
        "evaluation / factorization.",
        "",
        *table(run),
        "",
        f"![fit time against rows]({PLOT_NAME})",
        "",
        f"[{PLOT_NAME}]({PLOT_NAME}): fit seconds against rows, log-log; simulated designs "
        "as lines, the n-scaling designs (q fixed) dashed, real data as labelled points; "
        "a fit that exceeded its cap is drawn at the cap as a triangle.",
        "",
        *targets_section(run),
        "",
        *formulas_section(run),
        "",
        *notes_section(run),
        "",
        *scale_section(meta),
        "",
        TIMED,
        *machine_section(meta),
    ]
    return "\n".join(out) + "\n"
