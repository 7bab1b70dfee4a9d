"""A fitted model as a JSON-serialisable dict, and back.

:func:`to_dict` writes every estimate of an :class:`~lmm_sparse.results.LmerResult` with
plain Python types (str, bool, int, float, None, lists and dicts), so that
``json.dumps(result.to_dict())`` works and ``json.loads`` of it, given to
:func:`from_dict`, returns a result with the same numbers: floats go through ``json``'s
shortest round-trip repr, so they come back bit for bit. Non-finite floats are written as
``None`` (NaN) or the strings ``"Infinity"``/``"-Infinity"``, which keeps the text
standard JSON (``json.dumps(..., allow_nan=False)`` accepts it).

A result read back has no model and no data: the model stands in as a
:class:`DetachedModel`, and everything that needs it (predictions, profiles and profile
intervals, the bootstrap, simulations, refits, F tests, Kenward-Roger tables) raises a
:class:`~lmm_sparse.errors.ModelSpecError` saying so. What only needs the estimates works:
``summary()``, ``tidy()``, ``coef_table(ddf=None)`` (Wald z tests) and, because the dict
keeps what Satterthwaite's df need (the covariance of the variance parameters and the
derivatives of vcov(beta), :class:`~lmm_sparse.satterthwaite.VarparCovariance`),
``coef_table()`` with Satterthwaite's df.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import DataError, LmmSparseError, ModelSpecError
from .optimize import OptSummary
from .satterthwaite import VarparCovariance
from .weights import PriorWeights

if TYPE_CHECKING:
    from .results import LmerResult

__all__ = ["FORMAT", "FORMAT_VERSION", "DetachedModel", "to_dict", "from_dict", "is_detached"]

FORMAT = "lmm_sparse.LmerResult"
FORMAT_VERSION = 1
_OPT_ARRAYS = ("theta0", "theta", "gradient", "hessian")
_VARPAR_FIELDS = tuple(f.name for f in fields(VarparCovariance))
_VARCORR_TEXT = ("grp", "var1", "var2")
_VARCORR_NUMBERS = ("vcov", "sdcor")


class DetachedModel:
    """The model of a result read back by :func:`from_dict`: it has no data, and any use
    of it is an error that says so (instead of an AttributeError from deep inside)."""

    def __init__(self, formula: str, weights: np.ndarray | None = None) -> None:
        self._formula = formula
        # the prior weights travel with the fit: its Pearson residuals (and summary) use them
        self.prior = PriorWeights(weights=weights)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends probe for optional hooks
            raise AttributeError(name)
        raise ModelSpecError(
            "this result was loaded from JSON (LmerResult.from_dict) and keeps no model or "
            "data; predictions, profiles, profile and bootstrap intervals, simulations, "
            "refits and F tests need them: fit the model again with "
            f"lmm_sparse.lmer({self._formula!r}, data)"
        )

    def __repr__(self) -> str:
        return f"DetachedModel({self._formula!r})"


def is_detached(result: LmerResult) -> bool:
    """True for a result read back by :func:`from_dict` (it has no model)."""
    return isinstance(result.model, DetachedModel)


# --------------------------------------------------------------------------- numbers


def _number(x: float) -> float | str | None:
    x = float(x)
    if math.isfinite(x):
        return x
    return None if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _encode(values: Any) -> Any:
    """An array (any shape) as nested lists of JSON numbers."""
    array = np.asarray(values, dtype=float)
    if array.ndim == 0:
        return _number(array)
    if array.ndim == 1:
        return [_number(v) for v in array.tolist()]
    return [_encode(v) for v in array]


def _decode_number(x: Any) -> float:
    return math.nan if x is None else float(x)


def _decode(values: Any) -> np.ndarray:
    """The inverse of :func:`_encode` (float64 array)."""
    if isinstance(values, list):
        if values and isinstance(values[0], list):
            return np.array([_decode(v) for v in values], dtype=float)
        return np.array([_decode_number(v) for v in values], dtype=float)
    return np.asarray(_decode_number(values), dtype=float)


# --------------------------------------------------------------------------- writing


def _frame(frame: pd.DataFrame) -> dict:
    return {"index": [str(i) for i in frame.index], "columns": [str(c) for c in frame.columns],
            "values": _encode(frame.to_numpy(float))}


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else str(value)


def _varcorr(varcorr: pd.DataFrame) -> dict:
    out: dict[str, list] = {c: [_text(v) for v in varcorr[c]] for c in _VARCORR_TEXT}
    out.update({c: _encode(varcorr[c].to_numpy(float)) for c in _VARCORR_NUMBERS})
    return out


def _optinfo(opt: OptSummary) -> dict:
    out: dict[str, Any] = {}
    for f in fields(OptSummary):
        value = getattr(opt, f.name)
        if f.name in _OPT_ARRAYS:
            out[f.name] = None if value is None else _encode(value)
        elif isinstance(value, tuple):
            out[f.name] = [str(v) for v in value]
        elif isinstance(value, bool | np.bool_):
            out[f.name] = bool(value)
        elif isinstance(value, int | np.integer):
            out[f.name] = int(value)
        elif isinstance(value, float | np.floating):
            out[f.name] = _number(value)
        else:
            out[f.name] = str(value)
    return out


def _satterthwaite(result: LmerResult, wanted: bool) -> dict | None:
    if not wanted or (is_detached(result) and "varpar" not in result._cache):
        return None
    from .hypothesis import _varpar  # computed once per fit and cached on the result

    vc = _varpar(result)
    return {name: _encode(getattr(vc, name)) for name in _VARPAR_FIELDS}


def to_dict(result: LmerResult, *, satterthwaite: bool = True) -> dict:
    """The fit as a dict of plain Python values (see the module docstring).

    ``satterthwaite``: also keep what Satterthwaite's df need, so that a result read back
    gives ``coef_table()`` and ``tidy()`` with df and p-values (about ``8 len(theta)``
    criterion evaluations the first time, none if ``coef_table()`` was already called).
    """
    from . import __version__

    weights = result.model.prior.weights
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lmm_sparse_version": __version__,
        "formula": result.formula,
        "reml": bool(result.reml),
        "nobs": int(result.nobs),
        "ngroups": {str(g): int(k) for g, k in result.ngroups.items()},
        "fixef": {"names": [str(n) for n in result.fixef.index],
                  "values": _encode(result.fixef.to_numpy(float))},
        "vcov": _encode(result.vcov.to_numpy(float)),
        "theta": _encode(result.theta),
        "sigma": _number(result.sigma),
        "varcorr": _varcorr(result.varcorr),
        "objective": _number(result.objective),
        "deviance": _number(result.deviance),
        "loglik": _number(result.loglik),
        "aic": _number(result.aic),
        "bic": _number(result.bic),
        "converged": bool(result.converged),
        "is_singular": bool(result.is_singular),
        "dropped": [str(d) for d in result.dropped],
        "optinfo": _optinfo(result.optinfo),
        "ranef": {str(g): _frame(frame) for g, frame in result.ranef.items()},
        "fitted": _encode(result.fitted),
        "residuals": _encode(result.residuals),
        "weights": None if weights is None else _encode(weights),
        "satterthwaite": _satterthwaite(result, satterthwaite),
    }


# --------------------------------------------------------------------------- reading


def _get(d: dict, key: str) -> Any:
    if key not in d:
        raise DataError(f"the fit's dict lacks the key {key!r}: not written by to_dict()")
    return d[key]


def _check_header(d: Any) -> None:
    if not isinstance(d, dict):
        raise DataError(f"from_dict needs the dict of LmerResult.to_dict(), got "
                        f"{type(d).__name__}")
    if d.get("format") != FORMAT:
        raise DataError(f"not a fit written by LmerResult.to_dict(): 'format' is "
                        f"{d.get('format')!r}, expected {FORMAT!r}")
    version = d.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"format_version {version!r} is not one this lmm_sparse reads "
                        f"(1 to {FORMAT_VERSION}); update lmm_sparse")


def _read_frame(d: dict, name: str) -> pd.DataFrame:
    values = _decode(d["values"]).reshape(len(d["index"]), len(d["columns"]))
    return pd.DataFrame(values, index=pd.Index(d["index"], name=name), columns=d["columns"])


def _read_varcorr(d: dict) -> pd.DataFrame:
    out: dict[str, Any] = {c: pd.Series(d[c], dtype=object) for c in _VARCORR_TEXT}
    out.update({c: _decode(d[c]) for c in _VARCORR_NUMBERS})
    return pd.DataFrame(out)


def _read_optinfo(d: dict) -> OptSummary:
    values: dict[str, Any] = {}
    for f in fields(OptSummary):
        if f.name not in d:
            continue  # a field added after the file was written keeps its default
        value = d[f.name]
        if f.name in _OPT_ARRAYS:
            value = None if value is None else _decode(value)
        elif isinstance(value, list):
            value = tuple(value)
        elif f.type == "float":
            value = _decode_number(value)
        values[f.name] = value
    return OptSummary(**values)


def _read_varpar(d: dict | None, p: int) -> dict:
    if d is None:
        return {}
    arrays = {name: _decode(d[name]) for name in _VARPAR_FIELDS}
    m1 = arrays["varpar"].size
    arrays["jacobian"] = arrays["jacobian"].reshape(m1, p, p)
    arrays["vcov"] = arrays["vcov"].reshape(p, p)
    return {"varpar": VarparCovariance(**arrays)}


def from_dict(d: dict) -> LmerResult:
    """The result written by :func:`to_dict` (after ``json.loads`` or not), without its
    model: see the module docstring for what works on it."""
    from .results import LmerResult

    _check_header(d)
    names = list(_get(d, "fixef")["names"])
    p = len(names)
    formula = str(_get(d, "formula"))
    try:
        return LmerResult(
            formula=formula,
            reml=bool(_get(d, "reml")),
            fixef=pd.Series(_decode(d["fixef"]["values"]), index=names, name="fixef"),
            vcov=pd.DataFrame(_decode(_get(d, "vcov")).reshape(p, p), index=names,
                              columns=names),
            ranef={g: _read_frame(f, g) for g, f in _get(d, "ranef").items()},
            varcorr=_read_varcorr(_get(d, "varcorr")),
            theta=_decode(_get(d, "theta")),
            sigma=_decode_number(_get(d, "sigma")),
            objective=_decode_number(_get(d, "objective")),
            deviance=_decode_number(_get(d, "deviance")),
            loglik=_decode_number(_get(d, "loglik")),
            aic=_decode_number(_get(d, "aic")),
            bic=_decode_number(_get(d, "bic")),
            nobs=int(_get(d, "nobs")),
            ngroups={str(g): int(k) for g, k in _get(d, "ngroups").items()},
            fitted=_decode(_get(d, "fitted")),
            residuals=_decode(_get(d, "residuals")),
            is_singular=bool(_get(d, "is_singular")),
            converged=bool(_get(d, "converged")),
            optinfo=_read_optinfo(_get(d, "optinfo")),
            dropped=tuple(_get(d, "dropped")),
            model=DetachedModel(
                formula, None if d.get("weights") is None else _decode(d["weights"])
            ),
            _b=(),
            _cache=_read_varpar(d.get("satterthwaite"), p),
        )
    except LmmSparseError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"the fit's dict is damaged: {type(exc).__name__}: {exc}") from None
