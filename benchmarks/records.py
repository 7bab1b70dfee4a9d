"""What one run of the suite measured, as plain data kept in ``docs/benchmarks.json``.

The markdown and the plot are rendered from these records alone, so ``--render-only``
can redo them without refitting anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

LIBRARIES = ("lmm_sparse", "lme4", "mixedlm", "statsmodels")

# Status of one library on one workload.
OK = "ok"
CAPPED = "exceeded cap"  # killed at its time cap
NOT_EXPRESSIBLE = "not expressible"
NOT_ATTEMPTED = "not attempted"  # expressible, but obviously too large (detail says why)
UNAVAILABLE = "unavailable"  # the library is not installed / R or lme4 missing
SKIPPED = "skipped"  # left out on the command line
FAILED = "failed"


@dataclass
class LibResult:
    status: str
    detail: str = ""  # why, for every status but OK (and the cap in seconds for CAPPED)
    seconds: float | None = None  # the fit alone, as timed inside the process
    feval: int | None = None
    criterion: float | None = None  # REML criterion or ML deviance on lme4's scale
    singular: bool | None = None
    peak_rss_mib: float | None = None  # of the whole process that made the fit
    notes: list[str] = field(default_factory=list)  # warnings and convergence messages
    extra: dict = field(default_factory=dict)  # library-specific numbers (see run.py)

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class WorkloadRecord:
    id: str
    kind: str
    formula: str
    reml: bool
    source: str
    n: int | None = None
    q: int | None = None
    libs: dict[str, LibResult] = field(default_factory=dict)

    def lib(self, name: str) -> LibResult:
        return self.libs.get(name) or LibResult(SKIPPED, "not run")


@dataclass
class RunRecord:
    meta: dict  # command, date, machine, versions, caps, constant checks
    workloads: list[WorkloadRecord] = field(default_factory=list)

    def by_id(self) -> dict[str, WorkloadRecord]:
        return {w.id: w for w in self.workloads}


def save(run: RunRecord, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(run), indent=1, allow_nan=True) + "\n")


def load(path: Path) -> RunRecord:
    raw = json.loads(path.read_text())
    workloads = []
    for w in raw["workloads"]:
        libs = {name: LibResult(**lib) for name, lib in w.pop("libs").items()}
        workloads.append(WorkloadRecord(**w, libs=libs))
    return RunRecord(raw["meta"], workloads)
