"""BLAS thread limits, set cheaply.

``threadpoolctl.threadpool_limits`` scans the process's loaded libraries every time it is
entered (about 5 ms here), which is a tenth of a small model's whole fit. One
``ThreadpoolController``, made on first use (after numpy, scipy and CHOLMOD have loaded
their BLAS), is reused for every limit instead.
"""

from __future__ import annotations

from functools import lru_cache

from threadpoolctl import ThreadpoolController

__all__ = ["THREADED_FLOPS", "blas_limit", "default_blas_threads"]

# Below this many flops of big BLAS-3 products per evaluation a second BLAS thread gains too
# little to risk the slowdown it brings on a busy machine: such work runs on one thread.
THREADED_FLOPS = 1e9


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def blas_limit(threads: int):
    """A context manager that runs its body with ``threads`` BLAS threads."""
    return _controller().limit(limits=int(threads), user_api="blas")


def default_blas_threads() -> int:
    """Threads the loaded BLAS libraries use by default (1 if none is found)."""
    counts = [lib.num_threads for lib in _controller().select(user_api="blas").lib_controllers]
    return max(counts, default=1)
