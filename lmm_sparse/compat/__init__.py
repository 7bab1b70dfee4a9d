"""statsmodels' MixedLM interface on lmm_sparse's engine.

Code written for ``statsmodels.formula.api.mixedlm`` switches by changing the import::

    from lmm_sparse.compat import mixedlm
    md = mixedlm("Weight ~ Time", data, groups=data["Pig"], re_formula="~Time")
    mdf = md.fit()
    print(mdf.summary())
    md.lme4_formula          # 'Weight ~ Time + (Time | Pig)'

``groups``, ``re_formula`` and ``vc_formula`` become lme4 bar terms (:mod:`.translate`),
including crossed variance components (a constant ``groups``), which statsmodels fits as
one big group and lmm_sparse as crossed factors. Results carry statsmodels' names
(``fe_params``, ``cov_re``, ``vcomp``, ``scale``, ``llf``, ``bse``, ``random_effects``,
...) and ``lmer_result``, lmm_sparse's own result. The translation table is in
docs/statsmodels_translation.md.
"""

from .model import MixedLM, mixedlm
from .results import MixedLMResults
from .summary import MixedLMSummary
from .translate import Translation, translate

__all__ = ["mixedlm", "MixedLM", "MixedLMResults", "MixedLMSummary", "Translation",
           "translate"]
