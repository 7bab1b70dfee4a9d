"""Compare the two start values of theta on the benchmark suite's workloads.

For each workload one ``LinearMixedModel`` is built and fitted twice with the default
optimizer: from lme4's start (``start=model.re.theta0``: 1 on template diagonals, 0
elsewhere) and from the default start, the moment estimate of ``lmm_sparse.start``. The
convergence derivatives are left out (``calc_derivs=False``), so the counts and times are
those of the optimization alone. The script prints a markdown table: evaluations
(``res.optinfo.feval``) and optimizer seconds (``res.optinfo.seconds``) from each start,
and the criterion from the moment start minus the one from lme4's (negative: lower).

Usage::

    .venv/bin/python -m benchmarks.compare_starts               # every real and sim workload
    .venv/bin/python -m benchmarks.compare_starts InstEval sim360k
"""

from __future__ import annotations

import argparse
import datetime
import platform
import warnings

import lmm_sparse

from .workloads import Workload, all_workloads, load_data


def run_case(w: Workload) -> dict:
    model = lmm_sparse.LinearMixedModel(w.formula, load_data(w), reml=w.reml)
    fits = {}
    for name, start in (("lme4", model.re.theta0), ("moment", None)):
        with warnings.catch_warnings():
            # singular fits warn as in lme4; the table reports the criterion either way
            warnings.simplefilter("ignore", lmm_sparse.errors.LmmSparseWarning)
            fits[name] = model.fit(start=start, calc_derivs=False)
    return {
        "criterion": w.criterion_name,
        "engine": model.describe_engine(),
        "feval": {k: r.optinfo.feval for k, r in fits.items()},
        "seconds": {k: r.optinfo.seconds for k, r in fits.items()},
        "diff": fits["moment"].objective - fits["lme4"].objective,
    }


def main() -> None:
    workloads = [w for w in all_workloads() if w.kind in ("real", "sim")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help=f"workloads (default: all of "
                                               f"{[w.id for w in workloads]})")
    args = parser.parse_args()
    unknown = set(args.ids) - {w.id for w in workloads}
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    selected = [w for w in workloads if not args.ids or w.id in args.ids]
    print(f"lmm_sparse {lmm_sparse.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {datetime.date.today().isoformat()}")
    print()
    print("| workload | criterion | evaluations from lme4's start | from the moment start "
          "| seconds from lme4's | from the moment start | criterion difference |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for w in selected:
        row = run_case(w)
        f, s = row["feval"], row["seconds"]
        print(f"| {w.id} | {row['criterion']} | {f['lme4']} | {f['moment']} "
              f"| {s['lme4']:.2f} | {s['moment']:.2f} | {row['diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
