"""Profile-likelihood confidence intervals, as lme4's ``profile()`` and
``confint(method = "profile")``.

What is profiled is lme4's (R/profile.R, ``profile.merMod`` and ``devfun2``):

* **The likelihood is always the ML one.** A REML fit is first refitted by maximum
  likelihood (lme4's ``refitML``); the profile and the intervals are those of the ML
  deviance, centred on the ML estimates.
* **The parameters** are the standard deviations and correlations of each random-effect
  term (in theta's order: each template's lower triangle column by column, ``sd_`` on the
  diagonal, ``cor_`` below it), the residual standard deviation ``sigma``, and the fixed
  effects. Their names are lme4's ``oldNames = FALSE`` names
  (:mod:`lmm_sparse.parameters`).
* **zeta.** With ``D(phi)`` the deviance minimized over all the other parameters while
  parameter ``phi`` is held fixed, and ``D_hat`` its minimum,
  ``zeta(phi) = sign(phi - phi_hat) sqrt(D(phi) - D_hat)``, approximately standard normal
  under the null; the interval at level ``1 - alpha`` is ``{phi : |zeta(phi)| <= z_(1 -
  alpha / 2)}``.

The modules, in the order of the pipeline:

* :mod:`.setup`: the ML optimum every profile is centred on, and the walk's settings;
* :mod:`.engine`: the ML deviance at a theta and sigma, on the model's PLS workspace;
* :mod:`.vine`: C-vine partial correlations, the box behind a held correlation;
* :mod:`.problems`: the nuisance minimization with one parameter held, per kind (sd,
  cor, sigma, fixed effect), and the L-BFGS-B that solves it;
* :mod:`.walk`: one parameter's profile: the walk from the estimate and the exact
  crossings of the level's quantiles;
* :mod:`.run`: ``profile()`` and ``profile_zeta()``, serially or on worker processes;
* :mod:`.levels`: confidence levels, their zeta quantiles and R's column labels;
* :mod:`.intervals`: ``confint_profile()``, from the walk or read off a table.

See docs/profile.md for the formulas and references.
"""

from __future__ import annotations

from ..parameters import Parameter as ProfileParameter
from ..parameters import model_parameters as profile_parameters
from ..parameters import sdcor_from_theta, varpar_estimates, varpar_names
from .intervals import confint_profile
from .levels import percent_labels
from .run import profile, profile_zeta

__all__ = [
    "ProfileParameter",
    "profile",
    "confint_profile",
    "profile_zeta",
    "varpar_names",
    "varpar_estimates",
    "profile_parameters",
    "sdcor_from_theta",
    "percent_labels",
]
