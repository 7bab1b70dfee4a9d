"""docs/img/benchmarks_fit_time.png: fit seconds against rows, log-log, every library."""

from __future__ import annotations

from pathlib import Path

from .records import CAPPED, LIBRARIES, RunRecord, WorkloadRecord

COLORS = {"lmm_sparse": "tab:blue", "lme4": "tab:red", "mixedlm": "tab:green",
          "statsmodels": "tab:purple"}
MARKERS = {"lmm_sparse": "o", "lme4": "s", "mixedlm": "D", "statsmodels": "P"}


def _point(rec: WorkloadRecord, lib: str) -> tuple[float, float, bool] | None:
    """(rows, seconds, exceeded its cap) for one library on one workload, if any."""
    r = rec.lib(lib)
    if not rec.n:
        return None
    if r.ok and r.seconds:
        return rec.n, r.seconds, False
    if r.status == CAPPED:
        return rec.n, r.extra["cap_seconds"], True
    return None


def _marker(ax, lib: str, n: float, s: float, capped: bool, size: float) -> None:
    """A library's marker; a hollow triangle for a fit stopped at its cap."""
    ax.plot(n, s, "^" if capped else MARKERS[lib], color=COLORS[lib], markersize=size,
            markerfacecolor="none" if capped else COLORS[lib], alpha=0.85)


def _series(ax, run: RunRecord, lib: str, kind: str, style: str) -> None:
    points = sorted(p for rec in run.workloads if rec.kind == kind
                    if (p := _point(rec, lib)) is not None)
    if len(points) > 1:
        ax.plot([p[0] for p in points], [p[1] for p in points], style, color=COLORS[lib],
                linewidth=1.2)
    for n, s, capped in points:
        _marker(ax, lib, n, s, capped, 5)


def _real_points(ax, run: RunRecord, lib: str) -> None:
    for rec in run.workloads:
        if rec.kind == "real" and (p := _point(rec, lib)) is not None:
            _marker(ax, lib, *p, 8)


def _labels(ax, run: RunRecord) -> None:
    """One label per real workload, beside its highest point (the clearest spot)."""
    for rec in run.workloads:
        if rec.kind != "real":
            continue
        points = [p for lib in LIBRARIES if (p := _point(rec, lib)) is not None]
        if points:
            n, s, _ = max(points, key=lambda p: p[1])
            ax.annotate(rec.id, (n, s), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color="0.25")


def plot(run: RunRecord, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(9, 6))
    for lib in LIBRARIES:
        _series(ax, run, lib, "sim", "-")
        _series(ax, run, lib, "nscale", "--")
        _real_points(ax, run, lib)
    _labels(ax, run)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain numbers at 1-3-10 (rows) and 1-2-5 (seconds) steps: readable on a narrow range
    # (--quick) as on the full one, where the default minor labels run into each other.
    for axis, subs, fmt in ((ax.xaxis, (1.0, 3.0), "{:,.0f}"), (ax.yaxis, (1.0, 2.0, 5.0), "{:g}")):
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _, fmt=fmt: fmt.format(v)))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("rows (n)")
    ax.set_ylabel("fit seconds (one fit)")
    ax.set_title(f"Fit time against rows ({run.meta.get('started', '')[:10]})")
    ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
    handles = [Line2D([], [], color=COLORS[lib], marker=MARKERS[lib], label=lib)
               for lib in LIBRARIES]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="simulated (sim*)"),
        Line2D([], [], color="0.3", linestyle="--", label="n-scaling (q fixed)"),
        Line2D([], [], color="0.3", marker="^", linestyle="none", markerfacecolor="none",
               label="exceeded cap (drawn at cap)"),
    ]
    # Outside the axes: the data reach every corner (small slow fits, large fast ones).
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1),
              borderaxespad=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
