"""statsmodels' own MixedLM results for the calls tests/test_compat.py translates.

Run from the repository root with statsmodels installed (this file was made with
statsmodels 0.15.0, numpy/scipy/pandas of .venv):

    python tests/data/statsmodels/make_statsmodels_reference.py

It fits each call with statsmodels on lmm_sparse's packaged copies of the data (the same
data as statsmodels' examples: dietox from R's geepack, Pastes and Penicillin from lme4)
and writes statsmodels_reference.json: estimates, standard errors, variance parameters,
log-likelihood and the printed summary, exactly as statsmodels reports them.
"""

import json
import pathlib

import numpy as np
import statsmodels
import statsmodels.formula.api as smf

from lmm_sparse import datasets

CALLS = {
    # statsmodels' documentation example (docs/source/mixed_linear.rst)
    "dietox_intercept": ("dietox", "Weight ~ Time", {"groups": "Pig"}, {}),
    # statsmodels' example notebook mixed_lm_example: random slopes, fitted with lbfgs
    "dietox_slopes": ("dietox", "Weight ~ Time", {"groups": "Pig", "re_formula": "~Time"},
                      {"method": ["lbfgs"]}),
    "pastes_nested": ("Pastes", "strength ~ 1",
                      {"groups": "batch", "re_formula": "1",
                       "vc_formula": {"cask": "0 + C(cask)"}}, {}),
    "penicillin_crossed": ("Penicillin", "diameter ~ 1",
                           {"groups": "one", "re_formula": "0",
                            "vc_formula": {"plate": "0 + C(plate)",
                                           "sample": "0 + C(sample)"}}, {}),
}


def run(name, formula, kwargs, fit_kwargs):
    data = datasets.load(name)
    data["one"] = 1
    if kwargs["groups"] != "one" and name == "dietox":
        kwargs = {**kwargs, "groups": data["Pig"]}  # as in statsmodels' docs
    res = smf.mixedlm(formula, data, **kwargs).fit(**fit_kwargs)
    return {
        "call": {"data": name, "formula": formula,
                 **{k: v for k, v in kwargs.items() if k != "groups"},
                 "groups": "data['Pig']" if name == "dietox" else kwargs["groups"],
                 "fit": fit_kwargs},
        "params": res.params.to_dict(),
        "bse": res.bse.to_dict(),
        "fe_params": res.fe_params.to_dict(),
        "cov_re": np.asarray(res.cov_re).tolist(),
        "vcomp": np.asarray(res.vcomp).tolist(),
        "scale": float(res.scale),
        "llf": float(res.llf),
        "converged": bool(res.converged),
        "summary": str(res.summary()),
    }


def main():
    out = {key: run(*call) for key, call in CALLS.items()}
    out["versions"] = {"statsmodels": statsmodels.__version__}
    path = pathlib.Path(__file__).with_name("statsmodels_reference.json")
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
