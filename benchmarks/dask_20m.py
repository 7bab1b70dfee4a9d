"""Out-of-core benchmark: a 20M-row crossed design from Parquet files, fitted through Dask.

    python -m benchmarks.dask_20m [--dir DIR] [--files 20] [--keep]   (make bench-dask)
    python -m benchmarks.dask_20m --render-only

The data are the simulated subjects x items design of :mod:`benchmarks.simulate` with
5,000 subjects, 200 items, 40 % of the cells present and every cell replicated 50 times
(400,000 cells, 20,000,000 rows; q = 10,400 random effects, of which the 400 of the items
form the dense part of the Schur kernel: a small PLS system), written as ``--files`` Parquet
files by the workers of a ``distributed.LocalCluster`` (2 worker processes, 1 thread
each), chunk by chunk (:func:`benchmarks.simulate.simulate_chunk`): the client process
never holds the data. ``lmm_sparse.lmer(formula, dd.read_parquet(dir), reml=False)`` then
fits it through the same cluster.

Measured: wall time of the file writing and of the fit (its set-up, i.e. the two passes
over the data, and the optimization), the client process's peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``, the whole run included) and each worker process's
(the same call, run in the worker). The target: client peak under 2 GB. The record goes to
``docs/benchmarks_dask.json`` and its section, "## Out-of-core: 20M rows with Dask", into
``docs/benchmarks.md`` (replaced in place if present, else appended; the rest of that
file belongs to ``benchmarks/run.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.simulate import FORMULA, SimDesign, simulate_chunk

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "docs" / "benchmarks_dask.json"
REPORT = ROOT / "docs" / "benchmarks.md"
HEADING = "## Out-of-core: 20M rows with Dask"
DESIGN = SimDesign(5_000, 200, 0.4, replicates=50)
CLIENT_LIMIT_MIB = 2048.0


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_chunk(directory: str, design: SimDesign, chunk: int, chunks: int) -> int:
    """Runs on a worker: one chunk of the design as one Parquet file."""
    frame = simulate_chunk(design, chunk, chunks)
    frame.to_parquet(Path(directory) / f"part-{chunk:03d}.parquet", index=False)
    return len(frame)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "lmm_sparse"], cwd=ROOT,
                               text=True, capture_output=True, check=True).stdout.strip()
        return out.stdout.strip() + (" (lmm_sparse/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in
            ("numpy", "scipy", "pandas", "formulaic", "dask", "distributed", "pyarrow")}


def run(directory: Path, files: int, design: SimDesign = DESIGN) -> dict:
    import dask.dataframe as dd
    import distributed

    import lmm_sparse

    load_before = list(os.getloadavg())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        start = time.perf_counter()
        counts = client.gather(client.map(write_chunk, [str(directory)] * files,
                                          [design] * files, range(files), [files] * files))
        write_seconds = time.perf_counter() - start
        data = dd.read_parquet(str(directory))
        start = time.perf_counter()
        res = lmm_sparse.lmer(FORMULA, data, reml=False)
        fit_seconds = time.perf_counter() - start
        workers = client.run(peak_rss_mib)
    client_peak = peak_rss_mib()
    return {
        "what": "lmm_sparse.lmer(formula, dd.read_parquet(dir), reml=False) on a "
                "distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)",
        "formula": FORMULA,
        "design": {"subjects": design.subjects, "items": design.items, "kept": design.kept,
                   "replicates": design.replicates},
        "rows": int(sum(counts)),
        "nobs": res.nobs,
        "files": files,
        "partitions": data.npartitions,
        "q": res.model.re.q,
        "write_seconds": write_seconds,
        "fit_seconds": fit_seconds,
        "setup_seconds": res.model.setup_seconds,
        "optimize_seconds": res.optinfo.seconds,
        "evaluations": res.optinfo.feval,
        "engine": res.model.describe_engine(),
        "client_peak_rss_mib": client_peak,
        "worker_peak_rss_mib": sorted(workers.values()),
        "client_limit_mib": CLIENT_LIMIT_MIB,
        "meets_limit": client_peak < CLIENT_LIMIT_MIB,
        "objective": res.objective,
        "fixef": {k: float(v) for k, v in res.fixef.items()},
        "theta": [float(t) for t in res.theta],
        "sigma": res.sigma,
        "converged": res.converged,
        # Other processes on the machine slow the wall times; their load is recorded.
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "machine": {"cores": os.cpu_count(), "memory_gib": _memory_gib(),
                    "python": platform.python_version(), **_versions()},
        "commit": _commit(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def _memory_gib() -> float:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return round(pages * size / 2**30, 1)


def render(record: dict) -> str:
    """The section of docs/benchmarks.md, from the record."""
    r = record
    verdict = "PASS" if r["meets_limit"] else "FAIL"
    fixef = ", ".join(f"{k} {v:.4f}" for k, v in r["fixef"].items())
    workers = " / ".join(f"{w:,.0f}" for w in r["worker_peak_rss_mib"])
    m = r["machine"]
    return "\n".join([
        HEADING,
        "",
        "Generated by `benchmarks/dask_20m.py` (`make bench-dask`); record in "
        "[benchmarks_dask.json](benchmarks_dask.json). See [dask.md](dask.md) for how "
        "the Dask fit works.",
        "",
        f"`{r['what']}`, formula `{r['formula']}` (ML), on {r['rows']:,} simulated rows "
        f"({r['design']['subjects']:,} subjects x {r['design']['items']:,} items, "
        f"{r['design']['kept']:.0%} of the cells present, each replicated "
        f"{r['design']['replicates']} times) in {r['files']} Parquet files written by the "
        f"workers; q = {r['q']:,}. Run {r['date_utc']} UTC on commit {r['commit']}.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| writing the Parquet files (workers) | {r['write_seconds']:.1f} s |",
        f"| fit, wall time | {r['fit_seconds']:.1f} s |",
        f"| of which set-up (two passes over the data, cross-products) | "
        f"{r['setup_seconds']:.1f} s |",
        f"| of which optimization ({r['evaluations']} evaluations, {r['engine']}) | "
        f"{r['optimize_seconds']:.1f} s |",
        f"| client peak RSS (whole run) | {r['client_peak_rss_mib']:,.0f} MiB |",
        f"| worker peak RSS, each | {workers} MiB |",
        f"| target: client peak under {r['client_limit_mib']:,.0f} MiB | {verdict} |",
        "",
        f"Estimates: {fixef}; sigma {r['sigma']:.4f} (simulated: 0.5, 0.3, 0.2 and 1); "
        f"ML deviance {r['objective']:.2f}; converged: {r['converged']}.",
        "",
        "Load average (1, 5, 15 min) before the run "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_before'])}, after "
        f"{', '.join(f'{x:.1f}' for x in r['load_average_after'])}: wall times include "
        "waiting for cores that other processes used.",
        "",
        f"Machine: {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}, numpy "
        f"{m['numpy']}, scipy {m['scipy']}, pandas {m['pandas']}, formulaic "
        f"{m['formulaic']}, dask {m['dask']}, distributed {m['distributed']}, pyarrow "
        f"{m['pyarrow']}.",
        "",
    ])


def update_report(record: dict, path: Path = REPORT) -> None:
    """Replace this benchmark's section of the report, or append it."""
    text = path.read_text() if path.exists() else ""
    section = render(record)
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="directory for the Parquet files "
                        "(default: a temporary one, removed afterwards)")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the Parquet files")
    parser.add_argument("--replicates", type=int, default=DESIGN.replicates,
                        help="rows per cell (a smaller trial run: printed, not recorded)")
    parser.add_argument("--render-only", action="store_true",
                        help="re-render the section from docs/benchmarks_dask.json")
    args = parser.parse_args()
    if args.render_only:
        update_report(json.loads(RECORD.read_text()))
        return
    directory = args.dir or Path(tempfile.mkdtemp(prefix="lmm_dask_20m_"))
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.glob("*.parquet")):
        raise SystemExit(f"{directory} already holds Parquet files: give an empty directory")
    try:
        record = run(directory, args.files,
                     dataclasses.replace(DESIGN, replicates=args.replicates))
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    if args.replicates != DESIGN.replicates:
        print(json.dumps(record, indent=2))
        return
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    update_report(record)
    print(render(record))


if __name__ == "__main__":
    main()
