"""Draw the pictures of docs/plots.md into docs/img/ (run from the repository root):

    .venv/bin/python docs/img/make_plots.py

Each picture is the example of the page that shows it, saved as a PNG.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
# the checkout this script is in, not whichever lmm_sparse the environment installed
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import matplotlib.pyplot as plt

import lmm_sparse
from lmm_sparse import plots

OUT = Path(__file__).parent
DPI = 90


def save(axes, name: str) -> None:
    first = axes if not hasattr(axes, "__len__") else axes[0]
    first.figure.savefig(OUT / name, dpi=DPI)
    plt.close(first.figure)
    print("wrote", OUT / name)


def main() -> None:
    sleep = lmm_sparse.lmer("Reaction ~ Days + (Days | Subject)",
                            lmm_sparse.datasets.load("sleepstudy"))
    penicillin = lmm_sparse.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)",
                                 lmm_sparse.datasets.load("Penicillin"))
    save(plots.caterpillar(sleep), "plots_caterpillar_sleepstudy.png")
    save(plots.caterpillar(penicillin, "plate"), "plots_caterpillar_penicillin.png")
    save(plots.resid_fitted(sleep), "plots_resid_fitted.png")
    save(plots.qq_residuals(sleep), "plots_qq_residuals.png")
    save(plots.qq_ranef(sleep), "plots_qq_ranef.png")
    save(plots.zeta(sleep, which="theta_"), "plots_zeta.png")


if __name__ == "__main__":
    main()
