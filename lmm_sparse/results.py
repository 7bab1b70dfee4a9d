"""The fitted model: estimates, random effects, variance components, predictions.

:func:`make_result` turns the optimum of theta into a frozen :class:`LmerResult` with the
names lme4 users know (``fixef``, ``ranef``, ``varcorr``, ``vcov``, ``sigma``, ...).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .crossprod import inverse_gram
from .optimize import OptSummary, is_singular_theta
from .pls import profiled_deviance

if TYPE_CHECKING:
    from .model import LinearMixedModel

__all__ = ["LmerResult", "make_result"]


@dataclass(frozen=True)
class LmerResult:
    """A fitted linear mixed model.

    Fields
    ------
    formula: the formula.
    reml: REML (True) or ML (False) fit.
    fixef: fixed-effects estimates (beta), a Series.
    vcov: their covariance matrix, sigma^2 (R_X' R_X)^{-1}, a DataFrame.
    ranef: grouping factor -> DataFrame of conditional modes b (levels x coefficients).
    varcorr: variance components in the layout of lme4's as.data.frame(VarCorr(m)).
    theta: relative covariance parameters (lme4's order: terms by decreasing levels,
        each template's lower triangle column by column).
    sigma: residual standard deviation.
    objective: REML criterion or ML deviance at the optimum (with prior weights w, lme4's:
        including -sum(log w)).
    deviance: ML deviance (-2 log-likelihood) at the estimates; equals objective for ML.
    loglik: log-likelihood (the REML one for REML fits, as lme4's logLik()).
    aic, bic: -2 loglik + 2 df and + log(nobs) df, df = p + len(theta) + 1.
    nobs: observations used (after dropping incomplete rows).
    ngroups: grouping factor -> number of levels.
    fitted, residuals: conditional fitted values offset + X beta + Z b and y - fitted
        (lme4's ``fitted()``, ``residuals(type = "response")``).
    is_singular: a variance at zero or a correlation at +-1 (lme4's isSingular()).
    converged: the convergence checks raised no doubt (a singular fit counts as converged).
    optinfo: optimizer summary (method, evaluations, seconds, messages, derivatives).
    dropped: fixed-effects columns dropped as aliased.
    """

    formula: str
    reml: bool
    fixef: pd.Series
    vcov: pd.DataFrame
    ranef: dict[str, pd.DataFrame]
    varcorr: pd.DataFrame
    theta: np.ndarray
    sigma: float
    objective: float
    deviance: float
    loglik: float
    aic: float
    bic: float
    nobs: int
    ngroups: dict[str, int]
    fitted: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)
    is_singular: bool
    converged: bool
    optinfo: OptSummary = field(repr=False)
    dropped: tuple[str, ...]
    model: Any = field(repr=False, compare=False)
    _b: tuple[np.ndarray, ...] = field(repr=False, compare=False)
    # Derived quantities computed on request (e.g. the Satterthwaite Hessian): the
    # estimates never change, so they are worked out at most once per fit.
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def pearson_residuals(self) -> np.ndarray:
        """sqrt(w) (y - fitted), lme4's ``residuals(m, type = "pearson")``: the residuals
        on the scale where every row has variance sigma^2 (the residuals without weights)."""
        weights = self.model.prior.weights
        return self.residuals.copy() if weights is None else np.sqrt(weights) * self.residuals

    def coef_table(self, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        """Estimate, std_error, df, t_value and p_value of each fixed effect.

        ``ddf``: "satterthwaite" (default, as lmerTest), "kenward-roger" (REML fits),
        "residual" (n - p) or None (z tests: estimate, std_error, z_value, p_value).
        See :mod:`lmm_sparse.hypothesis`.
        """
        from .hypothesis import coef_table

        return coef_table(self, ddf)

    def anova(self, type: int | str = 3, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        """F test of each fixed term (type 1, 2 or 3), as lmerTest's ``anova(m)``."""
        from .hypothesis import anova_table

        return anova_table(self, type, ddf)

    def confint(
        self,
        method: str = "profile",
        level: float = 0.95,
        *,
        which: list[str] | None = None,
        nsim: int = 500,
        seed: int | None = None,
        boot_type: str = "perc",
        n_jobs: int | None = 1,
        progress: bool = True,
    ) -> pd.DataFrame:
        """Intervals for sd_/cor_ parameters, sigma and the fixed effects, as lme4's
        ``confint(m, method, oldNames = FALSE)``: "profile", "wald" or "boot"
        (see :mod:`lmm_sparse.confint`)."""
        from .confint import confint

        return confint(self, method, level, which=which, nsim=nsim, seed=seed,
                       boot_type=boot_type, n_jobs=n_jobs, progress=progress)

    def profile(self, which=None, *, progress: bool = True, n_jobs: int | None = 1,
                **options: Any) -> pd.DataFrame:
        """The likelihood profile behind the profile intervals (:mod:`lmm_sparse.profile`)."""
        from .profile import profile

        return profile(self, which, progress=progress, n_jobs=n_jobs, **options)

    def ranef_condvar(self) -> dict[str, np.ndarray]:
        """Conditional variances of the random effects (lme4's ranef(condVar = TRUE)).

        Per grouping factor an array (levels, k, k): ``sigma^2 T (A + I)^{-1}_block T'``,
        beta taken as known. Computed on request through sparse solves.
        """
        model, out = self.model, {}
        for i, term in enumerate(model.re.terms):
            blocks = model.workspace.inverse_diagonal_blocks(self.theta, i)
            T = model.re.template(self.theta, i)
            out.setdefault(term.group, []).append(self.sigma**2 * (T @ blocks @ T.T))
        return {g: parts[0] if len(parts) == 1 else _block_diag_stack(parts)
                for g, parts in out.items()}

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        re_form: Any = None,
        allow_new_levels: bool = False,
    ) -> np.ndarray:
        """Predictions, as lme4's ``predict(m, newdata, re.form, allow.new.levels)``.

        ``re_form``: None (all random effects), ``"~0"`` (population level: X beta) or a
        formula naming some of the random-effect terms, ``"~(1 | Subject)"``. Levels not
        seen in the fit are an error unless ``allow_new_levels`` (then they get zero
        random effects). See :mod:`lmm_sparse.predict`.
        """
        from .predict import predict

        return predict(self, newdata, re_form, allow_new_levels)

    def simulate(self, nsim: int = 1, seed: Any = None, **options: Any) -> np.ndarray:
        """Responses simulated from the fit, (n, nsim), as lme4's ``simulate(m, nsim)``;
        ``use_u``, ``re_form`` as :func:`lmm_sparse.simulate.simulate`."""
        from .simulate import simulate

        return simulate(self, nsim, seed, **options)

    def refit(self, y: Any, **options: Any) -> LmerResult:
        """The same model fitted to a new response (lme4's ``refit(m, newresp)``)."""
        from .simulate import refit

        return refit(self, y, **options)

    def bootstrap(
        self,
        nsim: int = 1000,
        seed: int | None = None,
        func: Any = None,
        *,
        n_jobs: int | None = 1,
        progress: bool = True,
        use_u: bool = False,
    ):
        """Parametric bootstrap, as lme4's ``bootMer(m, FUN, nsim, type = "parametric")``:
        returns a :class:`~lmm_sparse.bootstrap.BootstrapResult` (see that module)."""
        from .bootstrap import bootstrap

        return bootstrap(self, nsim, seed, func, use_u=use_u, n_jobs=n_jobs,
                         progress=progress)

    # Diagnostic plots (matplotlib, the optional extra "plot"): see lmm_sparse.plots.
    def plot_caterpillar(self, group: str | None = None, ax: Any = None, **options: Any):
        """Conditional modes with prediction intervals, as lme4's
        ``dotplot(ranef(m, condVar = TRUE))``: :func:`lmm_sparse.plots.caterpillar`."""
        from .plots import caterpillar

        return caterpillar(self, group, ax, **options)

    def plot_resid_fitted(self, ax: Any = None):
        """Residuals against fitted values, as lme4's ``plot(m)``:
        :func:`lmm_sparse.plots.resid_fitted`."""
        from .plots import resid_fitted

        return resid_fitted(self, ax)

    def plot_qq_residuals(self, ax: Any = None, **options: Any):
        """Normal QQ plot of the residuals: :func:`lmm_sparse.plots.qq_residuals`."""
        from .plots import qq_residuals

        return qq_residuals(self, ax, **options)

    def plot_qq_ranef(self, group: str | None = None, ax: Any = None, **options: Any):
        """Normal QQ plot of the conditional modes: :func:`lmm_sparse.plots.qq_ranef`."""
        from .plots import qq_ranef

        return qq_ranef(self, group, ax, **options)

    def plot_zeta(self, which: Any = None, ax: Any = None, **options: Any):
        """The profile zeta of each parameter, as lme4's ``xyplot(profile(m))``, profiling
        ``which`` first: :func:`lmm_sparse.plots.zeta`."""
        from .plots import zeta

        return zeta(self, which, ax, **options)

    def tidy(self, **options: Any) -> pd.DataFrame:
        """One row per parameter, as broom.mixed's ``tidy()``: effect, group, term,
        estimate, std.error, statistic, df, p.value (options: :func:`lmm_sparse.tidy.tidy`,
        e.g. ``conf_int=True, conf_method="profile"``)."""
        from .tidy import tidy

        return tidy(self, **options)

    def to_dict(self, *, satterthwaite: bool = True) -> dict:
        """The fit as a JSON-serialisable dict (:func:`lmm_sparse.serialize.to_dict`)."""
        from .serialize import to_dict

        return to_dict(self, satterthwaite=satterthwaite)

    @classmethod
    def from_dict(cls, d: dict) -> LmerResult:
        """A result back from :meth:`to_dict`'s dict, without model or data
        (:func:`lmm_sparse.serialize.from_dict`)."""
        from .serialize import from_dict

        return from_dict(d)

    def summary(self) -> str:
        """The fit printed as lme4's summary() prints it."""
        from .summary import format_summary

        return format_summary(self)

    def __str__(self) -> str:
        return self.summary()


def _block_diag_stack(parts: list[np.ndarray]) -> np.ndarray:
    """Several terms on one factor: per level, their blocks along the diagonal."""
    nlev = parts[0].shape[0]
    k = sum(p.shape[1] for p in parts)
    out = np.zeros((nlev, k, k))
    start = 0
    for part in parts:
        kk = part.shape[1]
        out[:, start : start + kk, start : start + kk] = part
        start += kk
    return out


def _varcorr(model: LinearMixedModel, theta: np.ndarray, sigma: float) -> pd.DataFrame:
    rows = []
    for i, term in enumerate(model.re.terms):
        T = model.re.template(theta, i)
        cov = sigma**2 * (T @ T.T)
        sd = np.sqrt(np.diag(cov))
        names = term.coef_names
        for a, name in enumerate(names):
            rows.append((term.group, name, None, cov[a, a], sd[a]))
        for b in range(len(names)):  # column-major lower triangle, as R's lower.tri()
            for a in range(b + 1, len(names)):
                denom = sd[a] * sd[b]
                corr = cov[a, b] / denom if denom > 0 else math.nan
                rows.append((term.group, names[b], names[a], cov[a, b], corr))
    rows.append(("Residual", None, None, sigma**2, sigma))
    columns = list(zip(*rows, strict=True))
    # object columns keep None where R has NA (pandas would turn None into NaN in text).
    return pd.DataFrame({
        "grp": pd.Series(columns[0], dtype=object),
        "var1": pd.Series(columns[1], dtype=object),
        "var2": pd.Series(columns[2], dtype=object),
        "vcov": np.asarray(columns[3], dtype=float),
        "sdcor": np.asarray(columns[4], dtype=float),
    })


def _random_effects(model: LinearMixedModel, theta: np.ndarray, u: np.ndarray):
    """b = Lambda u per term, shaped (levels, k)."""
    out = []
    for i, term in enumerate(model.re.terms):
        start = model.re.offsets[i]
        ui = u[start : start + term.nlevels * term.k].reshape(term.nlevels, term.k)
        out.append(ui @ model.re.template(theta, i).T)
    return tuple(out)


def _ranef_frames(model: LinearMixedModel, b: tuple[np.ndarray, ...]) -> dict[str, pd.DataFrame]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for term, bi in zip(model.re.terms, b, strict=True):
        index = pd.Index(term.levels.astype(str), name=term.group)
        frames.setdefault(term.group, []).append(
            pd.DataFrame(bi, index=index, columns=list(term.coef_names))
        )
    return {g: parts[0] if len(parts) == 1 else pd.concat(parts, axis=1)
            for g, parts in frames.items()}


def make_result(model: LinearMixedModel, opt: OptSummary) -> LmerResult:
    """Assemble the fitted model at the optimum theta."""
    theta = opt.theta
    ws, n, p = model.workspace, model.cp.n, model.cp.p
    ev = ws.evaluate(theta)
    sigma = math.sqrt(ev.pwrss / (n - p if model.reml else n))
    names = list(model.fixed.names)
    vcov = sigma**2 * inverse_gram(ev.RX)
    b = _random_effects(model, theta, ws.spherical_modes(ev))
    fitted = model.fixed.X @ ev.beta
    for term, bi in zip(model.re.terms, b, strict=True):
        fitted += np.einsum("rk,rk->r", term.X, bi[term.codes])
    fitted = model.prior.add_offset(fitted)
    # lme4's criterion is the engine's (on the sqrt(w)-scaled rows) minus sum(log w)
    ldw = model.cp.log_weights
    objective = profiled_deviance(ev, n, p, model.reml) - ldw
    if ldw:
        opt = dataclasses.replace(opt, fval=opt.fval - ldw)
    df = p + model.re.ntheta + 1
    ngroups: dict[str, int] = {}
    for term in model.re.terms:
        ngroups.setdefault(term.group, term.nlevels)
    return LmerResult(
        formula=model.formula,
        reml=model.reml,
        fixef=pd.Series(ev.beta, index=names, name="fixef"),
        vcov=pd.DataFrame(vcov, index=names, columns=names),
        ranef=_ranef_frames(model, b),
        varcorr=_varcorr(model, theta, sigma),
        theta=theta.copy(),
        sigma=sigma,
        objective=objective,
        deviance=profiled_deviance(ev, n, p, reml=False) - ldw,
        loglik=-objective / 2,
        aic=objective + 2 * df,
        bic=objective + math.log(n) * df,
        nobs=n,
        ngroups=ngroups,
        fitted=fitted,
        residuals=model.fixed.y - fitted,
        is_singular=is_singular_theta(theta, model.re.lower),
        converged=not any(not m.startswith("boundary") for m in opt.messages),
        optinfo=opt,
        dropped=model.fixed.dropped,
        model=model,
        _b=b,
    )
