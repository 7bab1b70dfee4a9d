"""The benchmark suite: lmm_sparse against lme4, mixedlm and statsmodels' MixedLM.

For every workload (real data, simulated subjects x items designs, an n-scaling check;
see :mod:`benchmarks.workloads`), in one run and one after another:

* lmm_sparse: one fit in a fresh process (time, evaluations, criterion, peak memory),
  then the per-evaluation costs at the optimum in another;
* lme4: one ``Rscript`` process (time of the ``lmer()`` call alone), capped;
* mixedlm and statsmodels: one process each, capped (statsmodels only where the model
  can be written for it).

Writes ``docs/benchmarks.json`` (raw records), ``docs/benchmarks.md`` and
``docs/img/benchmarks_fit_time.png``. Usage (from the repository root)::

    .venv/bin/python -m benchmarks.run                      # everything (long)
    .venv/bin/python -m benchmarks.run --quick              # sim10k, kb07, n-scaling
    .venv/bin/python -m benchmarks.run kb07_maximal sim10k --skip-statsmodels --no-write
    .venv/bin/python -m benchmarks.run real                 # a kind: real, sim, nscale
    .venv/bin/python -m benchmarks.run --render-only        # markdown + plot from the JSON
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from . import records
from .common import (
    REPO,
    ProcOutcome,
    cores_line,
    cpu_model,
    last_error,
    lme4_script,
    package_version,
    parse_lme4,
    python_blas_lines,
    r_info,
    run_measured,
    run_rscript,
)
from .dask_20m import update_report as update_dask_section
from .plot import plot
from .records import LibResult, RunRecord, WorkloadRecord
from .report import PLOT_NAME, render
from .workloads import (
    KINDS,
    Workload,
    all_workloads,
    describe_source,
    load_data,
    statsmodels_spec,
    statsmodels_too_large,
)

DOCS = REPO / "docs"
JSON_PATH = DOCS / "benchmarks.json"
MD_PATH = DOCS / "benchmarks.md"
DASK_RECORD = DOCS / "benchmarks_dask.json"  # benchmarks/dask_20m.py (make bench-dask)
PNG_PATH = DOCS / PLOT_NAME
QUICK = ("sim10k", "kb07_maximal", "nscale_x1", "nscale_x4", "nscale_x16")
LME4_CAP = 1200.0
PEER_CAP = 120.0
# lmm_sparse has no cap of its own in the spec; this only keeps a hung fit from blocking.
OURS_CAP = 3600.0
# Address-space limit of every fit process: a fit that would need more fails with a
# memory error instead of pushing a 24 GiB machine into swapless OOM kills.
MEMORY_CAP_GIB = 16.0


# --------------------------------------------------------------------------- processes


def limit_memory() -> None:
    """In a child before exec: cap its address space (never the parent's)."""
    limit = int(MEMORY_CAP_GIB * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_worker(job: dict, cap: float) -> tuple[ProcOutcome, dict | None]:
    with tempfile.TemporaryDirectory(prefix="lmm_bench_") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "benchmarks.worker", str(job_path), str(out_path)]
        outcome = run_measured(cmd, cap, limit_memory)
        answer = None
        if outcome.returncode == 0 and out_path.is_file():
            answer = json.loads(out_path.read_text())
    return outcome, answer


def _failure(outcome: ProcOutcome, cap: float) -> LibResult:
    if outcome.timed_out:
        return LibResult(records.CAPPED, f"killed after {cap:g} s",
                         peak_rss_mib=outcome.peak_rss_mib, extra={"cap_seconds": cap})
    return LibResult(records.FAILED, last_error(outcome.stderr, outcome.returncode),
                     peak_rss_mib=outcome.peak_rss_mib)


def worker_result(job: dict, cap: float) -> tuple[LibResult, dict | None]:
    """One library's fit in a worker process, as a LibResult (and the raw answer)."""
    outcome, answer = run_worker(job, cap)
    if answer is None:
        return _failure(outcome, cap), None
    return LibResult(
        records.OK,
        seconds=answer.get("seconds"),
        feval=answer.get("feval"),
        criterion=answer.get("criterion"),
        singular=answer.get("singular"),
        peak_rss_mib=outcome.peak_rss_mib,
        notes=answer.get("notes", []),
        extra=answer.get("extra", {}),
    ), answer


# --------------------------------------------------------------------------- libraries


def run_lmm_sparse(w: Workload, rec: WorkloadRecord) -> LibResult:
    result, answer = worker_result({"task": "lmm_sparse_fit", "workload": asdict(w)}, OURS_CAP)
    if answer is None:
        return result
    rec.n, rec.q = answer["n"], answer["q"]
    job = {"task": "lmm_sparse_eval_cost", "workload": asdict(w),
           "theta": result.extra["theta"]}
    outcome, cost = run_worker(job, OURS_CAP)
    result.extra["eval_cost"] = cost or {
        "error": _failure(outcome, OURS_CAP).detail or "no answer"
    }
    return result


def run_lme4(w: Workload, csv: Path, cap: float, n: int | None) -> LibResult:
    outcome = run_rscript(lme4_script(csv, w.formula, w.reml, w.factors), cap, limit_memory)
    if outcome.timed_out or outcome.returncode != 0:
        return _failure(outcome, cap)
    fit = parse_lme4(outcome.stdout)
    notes = list(fit.messages)
    if n is not None and fit.nobs is not None and fit.nobs != n:
        notes.append(f"lme4 used {fit.nobs} rows, lmm_sparse {n}")
    return LibResult(
        records.OK, seconds=fit.seconds[0] if fit.seconds else None, feval=fit.feval,
        criterion=fit.criterion, singular=fit.singular, peak_rss_mib=outcome.peak_rss_mib,
        notes=notes, extra={"optimizer": fit.optimizer},
    )


def run_mixedlm(w: Workload, cap: float, comparable: bool) -> LibResult:
    result, _ = worker_result({"task": "mixedlm_fit", "workload": asdict(w)}, cap)
    if result.ok and not comparable:
        result.notes.append(f"criterion {result.criterion} not on lme4's scale (see below)")
        result.criterion = None
    return result


def run_statsmodels(w: Workload, df, ours: LibResult, cap: float) -> LibResult:
    spec, why = statsmodels_spec(w)
    if spec is None:
        return LibResult(records.NOT_EXPRESSIBLE, why)
    call = {"call": spec.call_text(w.reml)}
    too_large = statsmodels_too_large(spec, df)
    if too_large:
        return LibResult(records.NOT_ATTEMPTED, too_large, extra=call)
    job = {"task": "statsmodels_fit", "workload": asdict(w), "spec": asdict(spec)}
    if ours.ok:
        job["ours"] = {"criterion": ours.criterion, "fixef": ours.extra["fixef"],
                       "relcov": ours.extra["relcov"]}
    result, _ = worker_result(job, cap)
    result.extra.update(call)
    return result


# --------------------------------------------------------------------------- the run


def _availability(args: argparse.Namespace) -> tuple[dict[str, str], dict]:
    """Why each library cannot run ({} for those that can), and R's versions."""
    missing: dict[str, str] = {}
    r_versions: dict = {}
    if not args.skip_lme4:
        r_versions, problem = r_info()
        if problem:
            missing["lme4"] = problem
    for lib, skip in (("mixedlm", args.skip_mixedlm), ("statsmodels", args.skip_statsmodels)):
        if not skip and importlib.util.find_spec(lib) is None:
            missing[lib] = f"{lib} is not installed (make bench-setup)"
    return missing, r_versions


def _not_run(lib: str, skipped: bool, missing: dict[str, str]) -> LibResult | None:
    if skipped:
        return LibResult(records.SKIPPED, "left out on the command line")
    if lib in missing:
        return LibResult(records.UNAVAILABLE, missing[lib])
    return None


def _progress(w: Workload, lib: str, r: LibResult) -> None:
    what = f"{r.seconds:.3g} s" if r.ok and r.seconds is not None else r.status
    print(f"  {w.id}: {lib} {what}", file=sys.stderr, flush=True)


def run_workload(w: Workload, args: argparse.Namespace, missing: dict[str, str],
                 scale_ok: bool, tmpdir: str) -> WorkloadRecord:
    print(f"{w.id} ({w.kind})", file=sys.stderr, flush=True)
    rec = WorkloadRecord(w.id, w.kind, w.formula, w.reml, describe_source(w))
    df = load_data(w)  # for lme4's CSV and statsmodels' size check
    rec.n = len(df)
    ours = rec.libs["lmm_sparse"] = run_lmm_sparse(w, rec)
    _progress(w, "lmm_sparse", ours)

    lme4 = _not_run("lme4", args.skip_lme4, missing)
    if lme4 is None:
        csv = Path(tmpdir) / f"{w.id}.csv"
        df.to_csv(csv, index=False)
        lme4 = run_lme4(w, csv, args.lme4_cap, rec.n if ours.ok else None)
        csv.unlink()
    rec.libs["lme4"] = lme4
    _progress(w, "lme4", lme4)

    peer = _not_run("mixedlm", args.skip_mixedlm, missing)
    rec.libs["mixedlm"] = peer or run_mixedlm(w, args.peer_cap, scale_ok)
    _progress(w, "mixedlm", rec.libs["mixedlm"])

    peer = _not_run("statsmodels", args.skip_statsmodels, missing)
    rec.libs["statsmodels"] = peer or run_statsmodels(w, df, ours, args.peer_cap)
    _progress(w, "statsmodels", rec.libs["statsmodels"])
    return rec


def nscale_cost(run: RunRecord, selected: list[Workload]) -> dict:
    """The n-scaling designs' evaluation costs measured side by side in one process."""
    by_id = run.by_id()
    items = [
        {"workload": asdict(w), "theta": by_id[w.id].lib("lmm_sparse").extra["theta"]}
        for w in selected if w.kind == "nscale" and by_id[w.id].lib("lmm_sparse").ok
    ]
    if len(items) < 2:
        return {}
    print("n-scaling: evaluation costs side by side", file=sys.stderr, flush=True)
    outcome, answer = run_worker({"task": "lmm_sparse_nscale_cost", "items": items}, OURS_CAP)
    if answer is None:
        return {"error": _failure(outcome, OURS_CAP).detail}
    answer["n"] = {item["workload"]["id"]: by_id[item["workload"]["id"]].n for item in items}
    return answer


def mixedlm_scale_check(missing: dict[str, str], skipped: bool) -> dict:
    if skipped or "mixedlm" in missing:
        return {"status": missing.get("mixedlm", "mixedlm left out on the command line")}
    outcome, answer = run_worker({"task": "mixedlm_scale"}, PEER_CAP)
    if answer is None:
        return {"status": f"check failed: {_failure(outcome, PEER_CAP).detail}"}
    return answer


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def cholmod_version() -> str:
    """The CHOLMOD library scikit-sparse loaded (its file name carries the version)."""
    try:
        import sksparse.cholmod  # noqa: F401

        maps = Path("/proc/self/maps").read_text().splitlines()
    except (ImportError, OSError):
        return "unknown"
    names = {Path(line.split()[-1]).name for line in maps if "libcholmod" in line}
    return ", ".join(sorted(names)) or "unknown (statically linked?)"


def git_state() -> str:
    """The commit measured, and whether lmm_sparse/ had uncommitted changes (they count)."""
    def git(*cmd: str) -> str:
        try:
            proc = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True)
        except OSError:  # no git on PATH
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (no git, or not a git checkout)"
    changed = git("status", "--porcelain", "--", "lmm_sparse").splitlines()
    if not changed:
        return f"{commit}, lmm_sparse/ as committed"
    return f"{commit} with uncommitted changes to {len(changed)} file(s) in lmm_sparse/"


def versions() -> dict[str, str]:
    import numpy
    import scipy

    import lmm_sparse

    return {
        "Python": platform.python_version(),
        "lmm_sparse": lmm_sparse.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": package_version("pandas"),
        "scikit-sparse": package_version("scikit-sparse"),
        "CHOLMOD": cholmod_version(),
        "threadpoolctl": package_version("threadpoolctl"),
        "statsmodels": package_version("statsmodels"),
        "mixedlm": package_version("mixedlm"),
    }


def make_meta(args: argparse.Namespace, missing: dict[str, str], r_versions: dict) -> dict:
    # Versions first: importing lmm_sparse (and CHOLMOD) loads the BLAS libraries a fit
    # process has, which threadpoolctl can only list once they are loaded.
    loaded = versions()
    return {
        "command": " ".join([".venv/bin/python -m benchmarks.run", *sys.argv[1:]]),
        "git": git_state(),
        "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "finished": "",
        "machine": {"cpu": cpu_model(), "cores": cores_line(), "ram_gib": _ram_gib()},
        "load": [list(os.getloadavg())],
        "python_blas": python_blas_lines(),
        "r": r_versions,
        "r_problem": missing.get("lme4", "left out (--skip-lme4)" if args.skip_lme4 else ""),
        "versions": loaded,
        "caps": {"lme4": args.lme4_cap, "peers": args.peer_cap, "memory_gib": MEMORY_CAP_GIB},
        "unavailable": missing,
    }


# --------------------------------------------------------------------------- CLI


def select(names: list[str], quick: bool, parser: argparse.ArgumentParser) -> list[Workload]:
    workloads = all_workloads()
    if quick:
        names = [*names, *QUICK]
    if not names:
        return workloads
    known = {w.id for w in workloads} | set(KINDS)
    unknown = sorted(set(names) - known)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {sorted(known)}")
    return [w for w in workloads if w.id in names or w.kind in names]


def parse_args() -> tuple[argparse.Namespace, list[Workload]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workloads", nargs="*",
                        help="workload ids or kinds (real, sim, nscale); default: all")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {', '.join(QUICK)} (plus any named)")
    parser.add_argument("--skip-lme4", action="store_true")
    parser.add_argument("--skip-statsmodels", action="store_true")
    parser.add_argument("--skip-mixedlm", action="store_true")
    parser.add_argument("--lme4-cap", type=float, default=LME4_CAP, metavar="S",
                        help=f"seconds before lme4's process is killed (default {LME4_CAP:g})")
    parser.add_argument("--peer-cap", type=float, default=PEER_CAP, metavar="S",
                        help=f"the same for mixedlm and statsmodels (default {PEER_CAP:g})")
    parser.add_argument("--no-write", action="store_true",
                        help="print the markdown only; write no file")
    parser.add_argument("--render-only", action="store_true",
                        help=f"re-render markdown and plot from {JSON_PATH.relative_to(REPO)}")
    args = parser.parse_args()
    return args, ([] if args.render_only else select(args.workloads, args.quick, parser))


def write_outputs(run: RunRecord, no_write: bool, save_json: bool = True) -> None:
    text = render(run)
    print(text, end="")
    if no_write:
        return
    written = [MD_PATH, PNG_PATH]
    if save_json:
        records.save(run, JSON_PATH)
        written.insert(0, JSON_PATH)
    MD_PATH.write_text(text)
    if DASK_RECORD.exists():  # the 20M-row Dask run is made separately: keep its section
        update_dask_section(json.loads(DASK_RECORD.read_text()), MD_PATH)
    plot(run, PNG_PATH)
    print("written: " + ", ".join(str(p.relative_to(REPO)) for p in written), file=sys.stderr)


def main() -> None:
    args, selected = parse_args()
    if args.render_only:
        write_outputs(records.load(JSON_PATH), args.no_write, save_json=False)
        return
    missing, r_versions = _availability(args)
    for lib, why in missing.items():
        print(f"{lib} is not available: {why}; its columns will say so", file=sys.stderr)
    run = RunRecord(make_meta(args, missing, r_versions))
    run.meta["mixedlm_scale"] = mixedlm_scale_check(missing, args.skip_mixedlm)
    scale_ok = all(c["same"] for c in run.meta["mixedlm_scale"].get("cases", [{"same": False}]))
    with tempfile.TemporaryDirectory(prefix="lmm_bench_data_") as tmpdir:
        for w in selected:
            run.workloads.append(run_workload(w, args, missing, scale_ok, tmpdir))
    run.meta["nscale_cost"] = nscale_cost(run, selected)
    run.meta["finished"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    run.meta["load"].append(list(os.getloadavg()))
    write_outputs(run, args.no_write)


if __name__ == "__main__":
    main()
