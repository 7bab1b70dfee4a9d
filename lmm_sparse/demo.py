"""``make demo``: three fits on the packaged data, each summary with its fit time.

Run as ``python -m lmm_sparse.demo``.
"""

from __future__ import annotations

import time

from . import datasets
from .model import LinearMixedModel

DEMOS = (
    ("dietox", "Weight ~ Time + (1 | Pig)", True,
     "statsmodels' MixedLM example (random intercept per pig)"),
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", True,
     "correlated random intercepts and slopes"),
    ("InstEval", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", False,
     "large crossed design: 73,421 ratings, students x instructors x department:service"),
)


def run_demo(name: str, formula: str, reml: bool, what: str) -> None:
    data = datasets.load(name)
    start = time.perf_counter()
    model = LinearMixedModel(formula, data, reml=reml)
    res = model.fit()
    seconds = time.perf_counter() - start
    print("=" * 78)
    print(f"{name}: {what}")
    print(f"lmm_sparse.lmer({formula!r}, {name}, reml={reml})")
    print("-" * 78)
    print(res.summary())
    print("-" * 78)
    print(
        f"fit time {seconds:.2f} s (set-up {model.setup_seconds:.2f} s, "
        f"{res.optinfo.feval} evaluations by {res.optinfo.method}; "
        f"kernel: {model.describe_engine()})"
    )


def main() -> None:
    for demo in DEMOS:
        run_demo(*demo)


if __name__ == "__main__":
    main()
