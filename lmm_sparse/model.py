"""The model: lme4's lmer() pipeline as a small class.

``LinearMixedModel(formula, data, reml)`` runs the stages that depend only on the data:
parse -> model frame -> X, y and the raw terms -> random-effects structure -> cross-products
-> PLS workspace. ``fit()`` optimizes theta, checks convergence and returns a frozen
:class:`~lmm_sparse.results.LmerResult`. Each stage is a public function of its module, so
a user can run them one by one as with lme4's ``lFormula``/``mkLmerDevfun``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .crossprod import ResponseUpdate, make_cross_products, working_response
from .design import (
    as_pandas,
    make_fixed_design,
    make_formula_offset,
    make_model_frame,
    make_raw_terms,
    quote_names,
)
from .errors import ConvergenceWarning, DataError, ModelSpecError, SingularFitWarning
from .formula import parse_formula
from .optimize import (
    OptSummary,
    check_convergence,
    gradient_check_failed,
    optimize_with_restart,
    resolve_method,
    with_blas_threads,
)
from .pls import DENSE_MAX_Q, KERNELS, DensePLS, PLSWorkspace
from .results import LmerResult, make_result
from .start import moment_start
from .terms import make_re_structure
from .threads import blas_limit
from .weights import per_row_columns, take_prior_weights

__all__ = ["LinearMixedModel", "lmer"]


class LinearMixedModel:
    """A linear mixed model given by an lme4 formula and a data frame (and, as lme4's
    ``weights``/``offset``, optional prior weights and an offset: see :func:`lmer`).

    Fields
    ------
    formula: the formula text.
    parsed: the parsed formula.
    reml: True for the REML criterion, False for maximum likelihood.
    frame: the model frame (used columns, complete rows; a copy).
    prior: the prior weights and offset of those rows
        (:class:`~lmm_sparse.weights.PriorWeights`; None fields when not given).
    fixed: y and X (:class:`~lmm_sparse.design.FixedDesign`).
    re: random-effects structure (:class:`~lmm_sparse.terms.ReStructure`).
    cp: cross-products (:class:`~lmm_sparse.crossprod.CrossProducts`).
    workspace: the PLS workspace (the one mutable part).

    A model made by :meth:`with_response` has the new response in ``fixed.y`` and ``cp``;
    its ``frame`` is the original model frame (the predictors), response column included.
    """

    def __init__(
        self,
        formula: str,
        data: pd.DataFrame,
        reml: bool = True,
        kernel: str = "auto",
        weights=None,
        offset=None,
    ) -> None:
        start = time.perf_counter()
        check_options(reml, kernel)
        data = as_pandas(data)
        self.formula = formula
        self.reml = bool(reml)
        self.kernel_name = kernel
        parsed = parse_formula(formula)
        if isinstance(data, pd.DataFrame):
            parsed = quote_names(parsed, data.columns)
        self.parsed = parsed
        frame = make_model_frame(self.parsed, data, per_row_columns(data, weights, offset))
        self.frame, prior = take_prior_weights(frame)
        self.prior = dataclasses.replace(
            prior, offset_terms=make_formula_offset(self.parsed, self.frame))
        self.fixed = make_fixed_design(self.parsed, self.frame)
        raw = make_raw_terms(self.parsed, self.frame)
        self.re = make_re_structure(raw)
        _check_identifiable(self.re, self.fixed.X.shape[1], len(self.frame))
        prior = self.prior
        self.cp = make_cross_products(self.re, self.fixed.X, self.fixed.y, prior.weights,
                                      prior.offset)
        _check_residual_left(self.cp, working_response(self.fixed.y, prior.weights,
                                                       prior.offset), self.parsed.response)
        self.workspace = PLSWorkspace(self.re, self.cp, kernel=kernel)
        self.setup_seconds = time.perf_counter() - start

    def with_response(self, y: np.ndarray) -> LinearMixedModel:
        """The same model with a new response: the data side of lme4's ``refit()``.

        ``y`` has one finite value per observation used in the fit (the rows of ``frame``),
        on the scale of the original response: the model's prior weights and offset apply.
        Everything that does not depend on y is shared, not rebuilt: the formula, frame, X,
        the random-effects structure, Z'Z and Z'X, and the kernel with its symbolic
        analysis (:meth:`PLSWorkspace.with_cross_products`). Only Z'y, X'y, y'y and beta0
        are recomputed (:class:`~lmm_sparse.crossprod.ResponseUpdate`), O(nnz(Z) + n p).
        Fit the result with ``fit(start=...)``.
        """
        y = _check_response(y, self.cp.n)
        cp = self._response_update()(y)
        other = copy.copy(self)  # shallow: shares the frame, structure and caches
        other.fixed = dataclasses.replace(self.fixed, y=y)
        other.cp = cp
        other.workspace = self.workspace.with_cross_products(cp)
        return other

    def _response_update(self) -> ResponseUpdate:
        """Made once per model and shared by its with_response models (it reads only the
        parts of the cross-products a response does not change)."""
        update = self.__dict__.get("_response_update_cache")
        if update is None:
            update = self._response_update_cache = ResponseUpdate(
                self.re, self.X, self.cp, self.prior.weights, self.prior.offset)
        return update

    def dense_pls(self) -> DensePLS | None:
        """A dense evaluator of this model's criterion and gradient when q is small
        (``q <= DENSE_MAX_Q``), else None: for many refits of a small model, where a sparse
        kernel's per-call overhead dominates (see :class:`~lmm_sparse.pls.DensePLS`)."""
        if self.re.q > DENSE_MAX_Q:
            return None
        base = self.__dict__.get("_dense_base")
        if base is None:  # Z'Z and the index maps, shared by with_response models
            base = self._dense_base = DensePLS(self.re, self.cp)
        return base if base.cp is self.cp else base.with_cross_products(self.cp)

    @property
    def X(self) -> np.ndarray:
        return self.fixed.X

    @property
    def y(self) -> np.ndarray:
        return self.fixed.y

    @property
    def Z(self) -> sp.csc_matrix:
        return self.re.Z()

    def _theta(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != self.re.theta0.shape:
            raise ModelSpecError(
                f"theta must have {self.re.ntheta} elements, got shape {theta.shape}"
            )
        return theta

    def Lambda(self, theta: np.ndarray) -> sp.csc_matrix:
        return self.re.Lambda(self._theta(theta))

    def objective(self, theta: np.ndarray) -> float:
        """REML criterion or ML deviance at theta (lme4's devfun; with prior weights it
        includes lme4's -sum(log w), which the engine's criterion leaves out)."""
        return self.workspace.objective(self._theta(theta), self.reml) - self.cp.log_weights

    def objective_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The criterion and its exact gradient in theta (kernels with a selected inverse)."""
        value, gradient = self.workspace.objective_and_gradient(self._theta(theta), self.reml)
        return value - self.cp.log_weights, gradient

    def _criterion(self):
        """The criterion (and its gradient, or None) the optimizer works on.

        With kernel "auto" and a small model (q <= DENSE_MAX_Q), the dense evaluator: its
        evaluation with gradient costs tens of microseconds where a sparse kernel's
        per-call overhead costs about a millisecond (sleepstudy, lexdec). Same formulas,
        same values to rounding; the result is then assembled by the workspace's kernel.
        """
        dense = self.fit_evaluator()
        if isinstance(dense, DensePLS):
            return _remember_last(dense, self.reml)
        # The engine's criterion: without the constant -sum(log w) of prior weights, which
        # make_result adds to the reported values.
        ws, reml = self.workspace, self.reml
        gradient = ((lambda theta: ws.objective_and_gradient(theta, reml))
                    if ws.has_gradient else None)
        return (lambda theta: ws.objective(theta, reml)), gradient

    def fit_evaluator(self) -> DensePLS | PLSWorkspace:
        """What evaluates the criterion during the fit: the dense evaluator with kernel
        "auto" and q <= DENSE_MAX_Q, else the workspace."""
        dense = self.dense_pls() if self.kernel_name == "auto" else None
        return self.workspace if dense is None else dense

    def describe_engine(self) -> str:
        """What evaluates the criterion during the fit (for logs and benchmarks)."""
        return self.fit_evaluator().describe()

    def fit(
        self,
        optimizer: str = "auto",
        start: np.ndarray | None = None,
        maxfev: int = 100_000,
        calc_derivs: bool = True,
        blas_threads: int | None = None,
    ) -> LmerResult:
        """Optimize theta and return the fitted model (arguments as :func:`lmer`)."""
        if isinstance(maxfev, bool) or not isinstance(maxfev, int | np.integer) or maxfev < 1:
            raise ModelSpecError(f"maxfev must be a positive integer, got {maxfev!r}")
        theta0 = moment_start(self.re, self.cp) if start is None else np.asarray(start, dtype=float)
        if not np.all(np.isfinite(theta0)):
            raise ModelSpecError(f"start must be finite, got {theta0.tolist()}")
        if theta0.shape != self.re.theta0.shape:
            raise ModelSpecError(
                f"start must have {self.re.ntheta} elements, got shape {theta0.shape}"
            )
        threads = self.workspace.blas_threads() if blas_threads is None else int(blas_threads)
        if threads < 1:
            raise ModelSpecError(
                f"blas_threads must be a positive integer, got {blas_threads!r}"
            )
        objective, gradient = self._criterion()

        def optimize(theta_start: np.ndarray) -> OptSummary:
            opt = optimize_with_restart(
                objective, theta_start, self.re.lower, self.re.template_columns(), optimizer,
                maxfev, threads, gradient,
            )
            return check_convergence(
                with_blas_threads(objective, threads), opt, self.re.lower, calc_derivs,
                with_blas_threads(gradient, threads) if gradient else None,
            )

        # One BLAS thread for everything but the evaluations themselves (see optimize_theta).
        with blas_limit(1):
            opt = optimize(theta0)
            if start is None and gradient_check_failed(opt):
                # The moment start can leave the optimizer stalled on a badly scaled ridge
                # that it crossed from lme4's start (y ~ x + (x | g) with x near 100, where
                # lme4 advises rescaling): try lme4's start and keep the better optimum.
                other = optimize(self.re.theta0)
                best = other if other.fval < opt.fval else opt
                opt = dataclasses.replace(best, feval=opt.feval + other.feval,
                                          seconds=opt.seconds + other.seconds)
        for message in opt.messages:
            singular = message.startswith("boundary")
            category = SingularFitWarning if singular else ConvergenceWarning
            advice = _SINGULAR_ADVICE if singular else _CONVERGENCE_ADVICE
            warnings.warn(f"{message}. {advice}", category, stacklevel=3)
        # the result's evaluation and solves are an evaluation's work: the same BLAS threads
        # (a small model's tiny LAPACK calls lost milliseconds to a second thread)
        with blas_limit(threads):
            return make_result(self, opt)


def _remember_last(dense: DensePLS, reml: bool):
    """The dense criterion and gradient, the last gradient's point remembered: the fit asks
    again at the optimum (its final value, the convergence checks), as PLSWorkspace
    remembers it. Kept here, per fit, so that DensePLS itself stays read-only."""
    last: list = []

    def objective_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        if last and np.array_equal(last[0], theta):
            return last[1], last[2].copy()
        value, grad = dense.objective_and_gradient(theta, reml)
        last[:] = [np.array(theta, dtype=float), value, grad.copy()]
        return value, grad

    def objective(theta: np.ndarray) -> float:
        if last and np.array_equal(last[0], theta):
            return last[1]
        return dense.objective(theta, reml)

    return objective, objective_and_gradient


_SINGULAR_ADVICE = (
    "A variance is estimated at zero or a correlation at +-1 (res.varcorr shows which): "
    "the data do not support this random-effects structure; consider removing the "
    "degenerate term or correlation, e.g. (x || g) instead of (x | g)"
)
_CONVERGENCE_ADVICE = (
    "Check res.optinfo.gradient; center and scale continuous predictors, refit from "
    "start=res.theta, or try optimizer='L-BFGS-B' or 'Nelder-Mead' and compare "
    "res.objective"
)


def check_options(reml: object, kernel: object) -> None:
    """reml and kernel, checked before any work on the data."""
    if not isinstance(reml, bool | np.bool_):
        raise ModelSpecError(f"reml must be True or False, got {reml!r}")
    if kernel not in KERNELS:
        raise ModelSpecError(f"kernel must be one of {KERNELS}, got {kernel!r}")


def _check_response(y, n: int) -> np.ndarray:
    """A new response as a float copy (the caller's array is neither kept nor changed)."""
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise DataError(f"the new response must be one column, got {y.shape[1]} columns")
        y = y.iloc[:, 0]
    try:
        values = np.array(y, dtype=float)
    except (TypeError, ValueError):
        raise DataError(
            f"the new response must be numeric, got {type(y).__name__}"
        ) from None
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise DataError(
            f"the new response must be one value per observation, got shape {values.shape}"
        )
    if len(values) != n:
        raise DataError(
            f"the new response has {len(values)} values; the model has {n} observations "
            "(the rows used in the fit)"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"the new response has {int(bad.sum())} missing or infinite value(s), first at "
            f"position {int(np.argmax(bad))}"
        )
    return values


def _check_residual_left(cp, y: np.ndarray, response: str) -> None:
    """The fixed effects alone must not reproduce y exactly: then every variance is zero and
    the criterion is unbounded below (it would go to -inf as sigma -> 0)."""
    p = cp.p
    left = float(np.sqrt(max(cp.XyXy[p, p], 0.0)))  # |y - X beta_OLS|
    if left <= 1e-10 * float(np.linalg.norm(y)):
        raise DataError(
            f"response {response!r} is reproduced exactly by the fixed effects (least-squares "
            "residual zero): there is no variation left for random effects or a residual"
        )


def _check_identifiable(re, p: int, n: int) -> None:
    """lme4's checks before fitting (lmerControl's check.nlev.gtr.1, check.nobs.vs.nlev,
    check.nobs.vs.nRE, all "stop" by default): every grouping factor has at least two
    levels, and every term has fewer random effects than there are observations."""
    for term in re.terms:
        if term.nlevels < 2:
            raise ModelSpecError(
                f"grouping factor {term.group!r} of {term.bar.source} has only one level "
                f"('{term.levels[0]}'): a random effect needs at least 2 sampled levels"
            )
        if term.nlevels * term.k >= n:
            detail = (f"{term.nlevels} levels" if term.k == 1
                      else f"{term.nlevels} levels x {term.k} coefficients")
            raise ModelSpecError(
                f"term {term.bar.source} has {term.nlevels * term.k} random effects "
                f"({detail}) for {n} observations: the random effects and the residual "
                "are not identifiable"
            )
    if n <= p:
        raise DataError(f"{n} observations cannot estimate {p} fixed effects")


def lmer(
    formula: str,
    data: pd.DataFrame,
    reml: bool = True,
    weights=None,
    offset=None,
    *,
    optimizer: str = "auto",
    kernel: str = "auto",
    start: np.ndarray | None = None,
    maxfev: int = 100_000,
    calc_derivs: bool = True,
    blas_threads: int | None = None,
) -> LmerResult:
    """Fit a linear mixed model given by an lme4 formula, as lme4's ``lmer()``.

    Parameters
    ----------
    formula: ``"y ~ fixed + (lhs | g) + (lhs || g) + (1 | a/b)"``.
    data: a pandas DataFrame; never modified. Rows with missing values in any variable
        the formula uses are dropped. Grouping columns are treated as factors. A Dask
        DataFrame is fitted out of core, partition by partition (docs/dask.md).
    reml: REML (default, as lme4) or maximum likelihood.
    weights: prior weights, as lme4's ``weights``: a column name of ``data`` or one
        positive number per row of ``data``; row i's residual variance is sigma^2 / w_i.
        A row with a missing weight is dropped. See docs/weights.md.
    offset: a known term added to the linear predictor, as lme4's ``offset``: a column
        name or one number per row of ``data``; fitted values include it.
    optimizer: a bounded scipy.optimize method: "auto" (default: L-BFGS-B on the exact
        gradient when the kernel gives one, else COBYQA), "L-BFGS-B" (exact gradient when
        available, else central differences), "cobyqa", "Nelder-Mead" or "Powell".
    kernel: "auto" (the Schur kernel, which gives the exact gradient, unless its dense part
        would exceed 3000 columns or be big and mostly zero, as in nested designs with many
        upper-level groups; then CHOLMOD; models with q <= 120 are optimized on a dense
        evaluator), "cholmod" (CHOLMOD on the whole PLS system) or "schur" (leading
        block eliminated, dense Schur complement).
    start: start values for theta (lme4's order); default a moment estimate from the
        cross-products (:mod:`lmm_sparse.start`); ``model.re.theta0`` is lme4's start,
        1 on template diagonals and 0 elsewhere.
    maxfev: limit on criterion evaluations.
    calc_derivs: compute the gradient and Hessian at the optimum for the convergence checks.
    blas_threads: BLAS threads for each evaluation; default: one, or all of the BLAS's
        for models with big dense products (see ``PLSWorkspace.blas_threads``). Everything
        else in the fit runs on one thread.
    """
    resolve_method(optimizer, False)  # a bad name fails before the set-up work
    if type(data).__module__.split(".")[0] == "dask":  # Dask is an optional extra
        if weights is not None or offset is not None:
            raise ModelSpecError(
                "weights= and offset= are not supported for Dask DataFrames yet: compute "
                "the fit in memory (data.compute()) or leave them out"
            )
        from .chunked.dask_fit import DaskLinearMixedModel

        model = DaskLinearMixedModel(formula, data, reml=reml, kernel=kernel)
    else:
        model = LinearMixedModel(formula, data, reml=reml, kernel=kernel, weights=weights,
                                 offset=offset)
    return model.fit(optimizer=optimizer, start=start, maxfev=maxfev, calc_derivs=calc_derivs,
                     blas_threads=blas_threads)
