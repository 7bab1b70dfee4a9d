"""Compare the optimizers of lmm_sparse on the packaged data sets.

For each model below, one ``LinearMixedModel`` is built (so both optimizers use the same
kernel) and fitted with ``optimizer="cobyqa"`` and ``optimizer="L-BFGS-B"``, without the
convergence derivatives (``calc_derivs=False``), so the counts and times are those of the
optimization alone. The script prints a markdown table: the criterion reached (REML
criterion or ML deviance), its difference from the better of the two, the number of
criterion evaluations (``res.optinfo.feval``) and the optimizer's wall time
(``res.optinfo.seconds``).

Usage::

    .venv/bin/python benchmarks/compare_optimizers.py            # every model
    .venv/bin/python benchmarks/compare_optimizers.py sleepstudy kb07_maximal
"""

from __future__ import annotations

import argparse
import datetime
import platform
import warnings

import lmm_sparse

OPTIMIZERS = ("cobyqa", "L-BFGS-B")

# (label, packaged data set, formula, REML)
CASES = [
    ("sleepstudy", "sleepstudy", "Reaction ~ Days + (Days | Subject)", True),
    ("Penicillin", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", True),
    ("Pastes", "Pastes", "strength ~ 1 + (1 | batch/cask)", True),
    ("Machines", "Machines", "score ~ Machine + (1 | Worker) + (1 | Worker:Machine)", True),
    ("InstEval", "InstEval", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", False),
    (
        "kb07_maximal",
        "kb07",
        "rt_trunc ~ 1 + spkr * prec * load + (1 + spkr + prec + load | subj)"
        " + (1 + spkr + prec + load | item)",
        False,
    ),
]


def run_case(dataset: str, formula: str, reml: bool) -> list[dict]:
    data = lmm_sparse.datasets.load(dataset)
    model = lmm_sparse.LinearMixedModel(formula, data, reml=reml)
    rows = []
    for optimizer in OPTIMIZERS:
        with warnings.catch_warnings():
            # singular fits warn as in lme4; the table reports the criterion either way
            warnings.simplefilter("ignore", lmm_sparse.errors.LmmSparseWarning)
            res = model.fit(optimizer=optimizer, calc_derivs=False)
        rows.append(
            {
                "optimizer": res.optinfo.method,
                "criterion": res.objective,
                "feval": res.optinfo.feval,
                "seconds": res.optinfo.seconds,
                "singular": res.is_singular,
            }
        )
    best = min(row["criterion"] for row in rows)
    for row in rows:
        row["diff"] = row["criterion"] - best
    rows[0]["kernel"] = model.workspace.describe()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "cases", nargs="*", help=f"labels to run (default: all of {[c[0] for c in CASES]})"
    )
    args = parser.parse_args()
    unknown = set(args.cases) - {c[0] for c in CASES}
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    selected = [c for c in CASES if not args.cases or c[0] in args.cases]

    print(
        f"lmm_sparse {lmm_sparse.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {datetime.date.today().isoformat()}"
    )
    print()
    print("| model | criterion | optimizer | value | minus best | evaluations | seconds |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    kernels = []
    for label, dataset, formula, reml in selected:
        rows = run_case(dataset, formula, reml)
        kernels.append((label, rows[0]["kernel"]))
        criterion = "REML" if reml else "ML deviance"
        for row in rows:
            mark = " (singular)" if row["singular"] else ""
            diff = "0" if row["diff"] == 0 else f"{row['diff']:.1e}"
            print(
                f"| {label} | {criterion} | {row['optimizer']} | {row['criterion']:.4f}{mark} "
                f"| {diff} | {row['feval']} | {row['seconds']:.2f} |",
                flush=True,
            )
    print()
    for label, kernel in kernels:
        print(f"- {label}: {kernel}")


if __name__ == "__main__":
    main()
