"""Running many independent fits of one model: serially or over processes, with progress.

Profiles (one per parameter) and parametric bootstraps (one refit per simulated response)
are embarrassingly parallel. Their tasks are functions ``func(model, task)`` of a
:class:`~lmm_sparse.model.LinearMixedModel` and a small picklable task. A CHOLMOD factor
cannot be pickled, so worker processes rebuild the model once from its recipe (formula,
model frame, REML flag, kernel) and keep it for all their tasks.

Each worker runs with one BLAS thread: with n_jobs processes on n_jobs cores, more BLAS
threads only compete for the same cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from .errors import ModelSpecError
from .weights import PriorWeights

if TYPE_CHECKING:
    from .model import LinearMixedModel

__all__ = ["ModelRecipe", "map_tasks", "resolve_jobs"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ModelRecipe:
    """What a worker needs to rebuild a model: picklable, unlike the model's factor."""

    formula: str
    frame: pd.DataFrame
    reml: bool
    kernel: str
    prior: PriorWeights = PriorWeights()

    @classmethod
    def of(cls, model: LinearMixedModel) -> ModelRecipe:
        return cls(model.formula, model.frame, model.reml, model.kernel_name, model.prior)

    def build(self) -> LinearMixedModel:
        from .model import LinearMixedModel

        return LinearMixedModel(self.formula, self.frame, reml=self.reml, kernel=self.kernel,
                                weights=self.prior.weights, offset=self.prior.offset_argument)


def resolve_jobs(n_jobs: int | None) -> int:
    """Worker processes for ``n_jobs``: None or 1 serial, -1 every core, k > 1 k processes."""
    if n_jobs is None:
        return 1
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0 or n_jobs < -1:
        raise ModelSpecError(
            f"n_jobs must be a positive integer or -1 (every core), got {n_jobs!r}"
        )
    return (os.cpu_count() or 1) if n_jobs == -1 else n_jobs


def map_tasks(
    func: Callable[[LinearMixedModel, T], R],
    model: LinearMixedModel,
    tasks: Sequence[T],
    *,
    n_jobs: int | None = 1,
    progress: bool = True,
    desc: str = "",
) -> list[R]:
    """``[func(model, task) for task in tasks]``, in order, on ``n_jobs`` processes.

    ``func`` must be a module-level function (workers import it by name). A progress bar
    (tqdm, on stderr) counts finished tasks unless ``progress`` is False.
    """
    from tqdm.auto import tqdm

    jobs = min(resolve_jobs(n_jobs), max(len(tasks), 1))
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, leave=False)
    try:
        if jobs == 1:
            out = []
            for task in tasks:
                out.append(func(model, task))
                bar.update()
            return out
        # "spawn": a forked child would inherit the parent's BLAS thread pools and locks.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_init_worker,
            initargs=(ModelRecipe.of(model),),
        ) as pool:
            futures = [pool.submit(_run_task, func, task) for task in tasks]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            return [future.result() for future in futures]
    finally:
        bar.close()


_WORKER_MODEL: Any = None


def _init_worker(recipe: ModelRecipe) -> None:
    from threadpoolctl import threadpool_limits

    global _WORKER_MODEL, _WORKER_LIMITS
    _WORKER_LIMITS = threadpool_limits(limits=1, user_api="blas")  # kept for the process
    _WORKER_MODEL = recipe.build()


_WORKER_LIMITS: Any = None


def _run_task(func: Callable[[Any, Any], Any], task: Any) -> Any:
    return func(_WORKER_MODEL, task)
