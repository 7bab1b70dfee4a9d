"""One measurement in a fresh Python process: ``python -m benchmarks.worker JOB.json OUT.json``.

The parent (:mod:`benchmarks.run`) starts one process per fit, so that ``os.wait4`` gives
the peak memory of that fit alone and a fit over its time cap can be killed. A job is
``{"task": ..., "workload": {...}, ...}``; the answer is a JSON dict written to OUT.

Every task first makes a small warm-up fit with the same library (imports and first-call
costs stay out of the timing, as lme4 gets a warm-up fit in R), then loads the data (not
timed), then times only the fit call.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import pandas as pd

from .common import (
    StatsmodelsSpec,
    as_factors,
    first_sentence,
    relative_covariances,
    same_constant,
    statsmodels_constant_gap,
    statsmodels_model,
)
from .workloads import Workload, data_path, load_data

# Per-evaluation costs: at least MIN_ROUNDS timed rounds, more while within BUDGET_S.
MIN_ROUNDS = 5
MAX_ROUNDS = 50
BUDGET_S = 3.0
WARMUP_FORMULA = "Reaction ~ Days + (Days | Subject)"


def _packaged(name: str, factors: tuple[str, ...]) -> pd.DataFrame:
    """A small packaged data set, read without importing lmm_sparse (see workloads.py)."""
    return as_factors(pd.read_csv(data_path(name)), factors)


def _sleepstudy() -> pd.DataFrame:
    return _packaged("sleepstudy", ("Subject",))


def _timed(fit: Callable[[], object]) -> tuple[object, float, list[str]]:
    """fit(), its wall seconds and the first sentences of the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        result = fit()
        seconds = time.perf_counter() - start
    return result, seconds, sorted({first_sentence(str(c.message)) for c in caught})


# --------------------------------------------------------------------------- lmm_sparse


def lmm_sparse_fit(job: dict) -> dict:
    import lmm_sparse

    w = Workload(**job["workload"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lmm_sparse.lmer(WARMUP_FORMULA, _sleepstudy())
    df = load_data(w)
    res, seconds, notes = _timed(lambda: lmm_sparse.lmer(w.formula, df, reml=w.reml))
    return {
        "seconds": seconds,
        "feval": res.optinfo.feval,
        "criterion": res.objective,
        "singular": bool(res.is_singular),
        "notes": notes,
        "n": res.nobs,
        "q": res.model.re.q,
        "extra": {
            "method": res.optinfo.method,
            "kernel": res.model.describe_engine(),
            "theta": [float(t) for t in res.theta],
            "fixef": {str(k): float(b) for k, b in res.fixef.items()},
            "relcov": {g: c.tolist() for g, c in relative_covariances(res).items()},
        },
    }


def _median_times(
    calls: dict[Hashable, Callable[[], object]], budget: float = BUDGET_S
) -> tuple[dict[Hashable, float], int]:
    """Median seconds per call, timed in interleaved rounds (so drift hits all alike)."""
    for call in calls.values():
        call()  # the first call may allocate or analyse
    times: dict[Hashable, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    rounds = 0
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and time.perf_counter() - start < budget):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(values) for name, values in times.items()}, rounds


def _cost_calls(w: Workload, theta_values: list[float]) -> tuple[dict[str, Callable], int]:
    """The calls whose cost is measured at theta, and the BLAS threads a fit would use.

    A new model gets the fit's kernel (its choice depends on the structure only). A small
    model (q <= DENSE_MAX_Q) is fitted by the dense evaluator: its costs are measured, the
    factorization step being ``Lambda' Z'Z Lambda + I`` formed and factored, and the
    evaluation the profiled criterion (the fit's own calls).
    """
    import lmm_sparse

    model = lmm_sparse.LinearMixedModel(w.formula, load_data(w), reml=w.reml)
    ws = model.workspace
    theta = np.asarray(theta_values, dtype=float)
    evaluator = model.fit_evaluator()
    if evaluator is not ws:
        return {
            "factor": lambda: evaluator.factor(theta),
            "evaluate": lambda: evaluator.objective(theta, w.reml),
            "gradient": lambda: evaluator.objective_and_gradient(theta, w.reml),
        }, ws.blas_threads()  # as fit() uses
    calls: dict[str, Callable[[], object]] = {
        "factor": lambda: ws.kernel.factor(model.re.templates(theta)),
        "evaluate": lambda: ws.evaluate(theta),
    }
    # The analytic gradient is being added to the workspace; time it once it is there.
    if hasattr(ws, "objective_and_gradient"):
        calls["gradient"] = lambda: ws.objective_and_gradient(theta, w.reml)
    return calls, ws.blas_threads()


def lmm_sparse_eval_cost(job: dict) -> dict:
    """Cost of one factorization, one evaluation and one gradient at the fitted theta."""
    from threadpoolctl import threadpool_limits

    calls, threads = _cost_calls(Workload(**job["workload"]), job["theta"])
    with threadpool_limits(limits=threads, user_api="blas"):
        medians, rounds = _median_times(calls)
    return {"medians": medians, "rounds": rounds, "blas_threads": threads}


def lmm_sparse_nscale_cost(job: dict) -> dict:
    """The n-scaling designs' costs in one process, rounds interleaved across the designs.

    Millisecond timings drift by tens of percent between processes started at different
    times on a shared machine; measured side by side, that drift cannot pass for growth
    with n.
    """
    from threadpoolctl import threadpool_limits

    calls: dict[Hashable, Callable[[], object]] = {}
    threads = 1
    for item in job["items"]:
        own, own_threads = _cost_calls(Workload(**item["workload"]), item["theta"])
        threads = max(threads, own_threads)
        calls.update({(item["workload"]["id"], name): call for name, call in own.items()})
    with threadpool_limits(limits=threads, user_api="blas"):
        medians, rounds = _median_times(calls, BUDGET_S * len(job["items"]))
    out: dict[str, dict[str, float]] = {}
    for (wid, name), value in medians.items():
        out.setdefault(wid, {})[name] = value
    return {"medians": out, "rounds": rounds, "blas_threads": threads}


# --------------------------------------------------------------------------- mixedlm


def _attr(obj: object, name: str) -> object:
    """An attribute that mixedlm exposes as a value or as a method."""
    value = getattr(obj, name, None)
    return value() if callable(value) else value


def mixedlm_criterion(fit: object, reml: bool) -> float:
    """REMLcrit for REML fits, the deviance for ML fits (lme4's names and scale)."""
    import mixedlm

    return float(mixedlm.REMLcrit(fit) if reml else _attr(fit, "deviance"))


def mixedlm_fit(job: dict) -> dict:
    import mixedlm

    w = Workload(**job["workload"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mixedlm.lmer(WARMUP_FORMULA, _sleepstudy(), REML=True)
    df = load_data(w)
    fit, seconds, notes = _timed(lambda: mixedlm.lmer(w.formula, df, REML=w.reml))
    if not _attr(fit, "converged"):
        notes.append("mixedlm reports no convergence")
    message = _attr(fit, "message")
    return {
        "seconds": seconds,
        "feval": int(_attr(fit, "function_evals")),
        "criterion": mixedlm_criterion(fit, w.reml),
        "singular": bool(_attr(fit, "isSingular")),
        "notes": notes + ([str(message)] if message else []),
        "extra": {"optimizer": str(_attr(fit, "optimizer"))},
    }


def mixedlm_scale(job: dict) -> dict:
    """Is mixedlm's criterion lme4's (and lmm_sparse's) quantity, constants included?

    On small models where all programs agree: mixedlm's own deviance function evaluated at
    lmm_sparse's theta, against lmm_sparse's criterion there. Cases use one term or
    crossed intercepts only, so both programs order theta as lme4 does.
    """
    import mixedlm

    import lmm_sparse

    cases = [
        ("sleepstudy", WARMUP_FORMULA, True, ("Subject",)),
        ("sleepstudy", WARMUP_FORMULA, False, ("Subject",)),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", False, ("plate", "sample")),
    ]
    out = []
    for name, formula, reml, factors in cases:
        df = _packaged(name, factors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = lmm_sparse.lmer(formula, df, reml=reml)
            devfun = mixedlm.mkLmerDevfun(mixedlm.lFormula(formula, df, REML=reml))
            theirs = float(devfun(np.asarray(ours.theta)))
            fitted = mixedlm_criterion(mixedlm.lmer(formula, df, REML=reml), reml)
        out.append({
            "case": f"{name} {'REML' if reml else 'ML'}: {formula}",
            "lmm_sparse": ours.objective,
            "mixedlm_devfun_at_lmm_sparse_theta": theirs,
            "mixedlm_fit": fitted,
            "same": same_constant(theirs - ours.objective, ours.objective),
        })
    return {"cases": out}


# --------------------------------------------------------------------------- statsmodels


def statsmodels_fit(job: dict) -> dict:
    w = Workload(**job["workload"])
    spec = StatsmodelsSpec(**job["spec"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = StatsmodelsSpec("Reaction ~ Days", groups="Subject", re_formula="~Days")
        statsmodels_model(warm, _sleepstudy()).fit(reml=True)
    df = load_data(w)
    holder: dict = {}

    def fit() -> object:
        holder["model"] = statsmodels_model(spec, df)
        return holder["model"].fit(reml=w.reml)

    result, seconds, notes = _timed(fit)
    if not result.converged:
        notes.append("statsmodels reports no convergence")
    out = {"seconds": seconds, "notes": notes, "extra": {}}
    ours = job.get("ours")
    if not ours:
        out["extra"]["constant"] = "not checked: no lmm_sparse estimates"
        return out
    # Same quantity as lme4's criterion? statsmodels' log-likelihood at lmm_sparse's
    # estimates must be -1/2 lmm_sparse's criterion.
    rel = {g: np.asarray(c) for g, c in ours["relcov"].items()}
    try:
        gap = statsmodels_constant_gap(
            holder["model"], spec, rel, ours["fixef"], ours["criterion"], w.reml
        )
    except (KeyError, ValueError) as exc:
        out["extra"]["constant"] = f"not checked: {exc}"
        return out
    out["extra"]["constant_gap"] = gap
    if same_constant(gap, ours["criterion"]):
        out["criterion"] = -2 * float(result.llf)
    return out


TASKS: dict[str, Callable[[dict], dict]] = {
    "lmm_sparse_fit": lmm_sparse_fit,
    "lmm_sparse_eval_cost": lmm_sparse_eval_cost,
    "lmm_sparse_nscale_cost": lmm_sparse_nscale_cost,
    "mixedlm_fit": mixedlm_fit,
    "mixedlm_scale": mixedlm_scale,
    "statsmodels_fit": statsmodels_fit,
}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(json.dumps(TASKS[job["task"]](job)))


if __name__ == "__main__":
    main()
