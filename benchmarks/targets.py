"""The performance targets, judged from the numbers of one run: PASS, FAIL or N/A per line.

A line is N/A when this run cannot decide it (a workload not run, lme4 not available, a
library that failed). When lme4 exceeded its time cap, its time is only known to be above
the cap, so a ratio is an upper bound: it can still PASS, never FAIL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .records import CAPPED, RunRecord, WorkloadRecord

PASS, FAIL, NA = "PASS", "FAIL", "N/A"
CRIT_SLACK = 2e-3  # our criterion may exceed lme4's by at most this
EVAL_OVER_FACTOR = 1.5
NSCALE_FLAT = 1.5  # largest / smallest per-evaluation cost across the replications
SIM1M_SECONDS = 30.0
SIM1M_BYTES = 3e9
RATIO_TARGETS = {"InstEval": 0.4, "kb07_maximal": 0.5, "sim360k": 0.1}
HALF_EVAL_IDS = ("kb07_maximal", "kwdyz11_catslopes", "d3_vector_terms", "mrk17_maximal")


@dataclass(frozen=True)
class Verdict:
    target: str
    workload: str
    measured: str
    result: str  # PASS, FAIL or "N/A (why)"


def _cap(rec: WorkloadRecord, lib: str) -> float | None:
    """The time cap a library exceeded (None if it did not)."""
    r = rec.lib(lib)
    return r.extra.get("cap_seconds") if r.status == CAPPED else None


def speed_ratio(rec: WorkloadRecord, lib: str = "lmm_sparse",
                other: str = "lme4") -> tuple[float | None, bool, str]:
    """lib's seconds / other's: (ratio, is an upper bound, why there is none)."""
    ours, theirs = rec.lib(lib), rec.lib(other)
    if not ours.ok:
        return None, False, f"{lib} {ours.status}"
    if theirs.ok and theirs.seconds:
        return ours.seconds / theirs.seconds, False, ""
    cap = _cap(rec, other)
    if cap:
        return ours.seconds / cap, True, ""
    return None, False, f"{other} {theirs.status}"


def _ratio_verdict(target: str, rec: WorkloadRecord, limit: float, other: str = "lme4",
                   strict: bool = False) -> Verdict:
    ratio, bound, why = speed_ratio(rec, other=other)
    if ratio is None:
        return Verdict(target, rec.id, "-", f"{NA} ({why})")
    within = ratio < limit if strict else ratio <= limit
    text = f"{'< ' if bound else ''}{ratio:.3g}"
    if bound:
        text += f" ({other} exceeded its cap)"
        return Verdict(target, rec.id, text, PASS if within else f"{NA} (bound above target)")
    return Verdict(target, rec.id, text, PASS if within else FAIL)


def _criterion_verdict(target: str, rec: WorkloadRecord) -> Verdict:
    ours, lme4 = rec.lib("lmm_sparse"), rec.lib("lme4")
    if not (ours.ok and lme4.ok and lme4.criterion is not None):
        why = f"lmm_sparse {ours.status}" if not ours.ok else f"lme4 {lme4.status}"
        return Verdict(target, rec.id, "-", f"{NA} ({why})")
    diff = ours.criterion - lme4.criterion
    return Verdict(target, rec.id, f"{diff:+.2e}", PASS if diff <= CRIT_SLACK else FAIL)


def _evals_verdict(target: str, rec: WorkloadRecord, fraction: float) -> Verdict:
    ours, lme4 = rec.lib("lmm_sparse"), rec.lib("lme4")
    if not (ours.ok and lme4.ok and lme4.feval):
        why = f"lmm_sparse {ours.status}" if not ours.ok else f"lme4 {lme4.status}"
        return Verdict(target, rec.id, "-", f"{NA} ({why})")
    text = f"{ours.feval} vs {lme4.feval} ({ours.feval / lme4.feval:.2f})"
    return Verdict(target, rec.id, text, PASS if ours.feval <= fraction * lme4.feval else FAIL)


def _missing(target: str, wid: str) -> Verdict:
    return Verdict(target, wid, "-", f"{NA} (not in this run)")


def _ratio_targets(run: RunRecord) -> Iterable[Verdict]:
    by_id = run.by_id()
    for wid, limit in RATIO_TARGETS.items():
        target = f"lmm_sparse / lme4 fit time <= {limit:g}"
        yield _ratio_verdict(target, by_id[wid], limit) if wid in by_id else _missing(target, wid)
    if "sim360k" in by_id:
        yield _criterion_verdict(f"criterion <= lme4's + {CRIT_SLACK:g}", by_id["sim360k"])


def _real_targets(run: RunRecord) -> Iterable[Verdict]:
    for rec in (w for w in run.workloads if w.kind == "real"):
        yield _ratio_verdict("faster than lme4 (lmm_sparse / lme4 < 1)", rec, 1.0, strict=True)
        yield _ratio_verdict("faster than mixedlm (lmm_sparse / mixedlm < 1)", rec, 1.0,
                             other="mixedlm", strict=True)
        yield _criterion_verdict(f"criterion <= lme4's + {CRIT_SLACK:g}", rec)


def _sim1m_targets(run: RunRecord) -> Iterable[Verdict]:
    rec = run.by_id().get("sim1M")
    time_target = f"fit < {SIM1M_SECONDS:g} s"
    mem_target = f"peak memory < {SIM1M_BYTES / 1e9:g} GB"
    if rec is None:
        yield _missing(time_target, "sim1M")
        yield _missing(mem_target, "sim1M")
        return
    ours = rec.lib("lmm_sparse")
    if not ours.ok:
        yield Verdict(time_target, rec.id, "-", f"{NA} (lmm_sparse {ours.status})")
    else:
        yield Verdict(time_target, rec.id, f"{ours.seconds:.3g} s",
                      PASS if ours.seconds < SIM1M_SECONDS else FAIL)
    if ours.peak_rss_mib is None:
        yield Verdict(mem_target, rec.id, "-", f"{NA} (not measured)")
    else:
        peak = ours.peak_rss_mib * 2**20
        yield Verdict(mem_target, rec.id, f"{peak / 1e9:.2f} GB",
                      PASS if peak < SIM1M_BYTES and ours.ok else FAIL)


def eval_costs(rec: WorkloadRecord) -> dict[str, float] | None:
    """Median seconds of factor / evaluate / gradient at the optimum, if measured."""
    return rec.lib("lmm_sparse").extra.get("eval_cost", {}).get("medians")


def _eval_targets(run: RunRecord) -> Iterable[Verdict]:
    target = f"evaluation <= {EVAL_OVER_FACTOR:g} x factorization"
    for rec in run.workloads:
        costs = eval_costs(rec)
        if not costs:
            yield Verdict(target, rec.id, "-", f"{NA} (not measured)")
            continue
        ratio = costs["evaluate"] / costs["factor"]
        yield Verdict(target, rec.id, f"{ratio:.2f}",
                      PASS if ratio <= EVAL_OVER_FACTOR else FAIL)


def _nscale_costs(run: RunRecord) -> tuple[list[tuple[int, dict[str, float]]], str]:
    """(n, median costs) of the n-scaling rows, and how they were measured.

    Preferably the side-by-side measurement (one process, interleaved rounds); else the
    per-workload numbers, taken in separate processes at different times.
    """
    joint = run.meta.get("nscale_cost") or {}
    if joint.get("medians"):
        rows = [(joint["n"][wid], costs) for wid, costs in joint["medians"].items()]
        return sorted(rows, key=lambda r: r[0]), "side by side in one process"
    rows = [(rec.n, c) for rec in run.workloads if rec.kind == "nscale" if (c := eval_costs(rec))]
    return sorted(rows, key=lambda r: r[0]), "in separate processes"


def _nscale_targets(run: RunRecord) -> Iterable[Verdict]:
    target = f"n-scaling: per-evaluation cost flat (largest / smallest <= {NSCALE_FLAT:g})"
    rows, how = _nscale_costs(run)
    if len(rows) < 2:
        yield Verdict(target, "nscale_*", "-", f"{NA} (fewer than two n-scaling rows)")
        return
    ns = ", ".join(f"{n:,}" for n, _ in rows)
    for call in ("evaluate", "gradient"):
        ms = [costs[call] * 1e3 for _, costs in rows if call in costs]
        if len(ms) < 2:
            continue
        spread = max(ms) / min(ms)
        text = (f"{call}: {' / '.join(f'{m:.3g}' for m in ms)} ms for n = {ns} "
                f"({spread:.2f}; {how})")
        yield Verdict(target, "nscale_*", text, PASS if spread <= NSCALE_FLAT else FAIL)


def _evals_targets(run: RunRecord) -> Iterable[Verdict]:
    for rec in run.workloads:
        yield _evals_verdict("evaluations <= lme4's", rec, 1.0)
    by_id = run.by_id()
    for wid in HALF_EVAL_IDS:
        target = "evaluations <= half of lme4's"
        yield _evals_verdict(target, by_id[wid], 0.5) if wid in by_id else _missing(target, wid)


def judge(run: RunRecord) -> list[Verdict]:
    return [
        *_ratio_targets(run), *_real_targets(run), *_sim1m_targets(run),
        *_eval_targets(run), *_nscale_targets(run), *_evals_targets(run),
    ]
