# lme4 reference values for tests/test_compat.py: the lme4 fits that statsmodels calls
# translate to (lmm_sparse.compat.mixedlm). Run from this folder:
#   Rscript lme4_compat.R ../../../lmm_sparse/datasets/data lme4_compat.json
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
datadir <- args[1]; out <- args[2]
load_data <- function(name) read.csv(gzfile(file.path(datadir, paste0(name, ".csv.gz"))))
fit_case <- function(data, formula, reml) {
  m <- lmer(as.formula(formula), data = data, REML = reml)
  vc <- as.data.frame(VarCorr(m))
  list(formula = formula, reml = reml, nobs = nobs(m),
       loglik = as.numeric(logLik(m)), objective = as.numeric(deviance(m, REML = reml)),
       sigma2 = sigma(m)^2, fixef = as.list(fixef(m)), se = as.list(sqrt(diag(vcov(m)))),
       varcorr = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, vcov = vc$vcov),
       messages = paste(m@optinfo$conv$lme4$messages, collapse = "; "))
}
dietox <- load_data("dietox"); dietox$Pig <- factor(dietox$Pig)
res <- list(
  dietox_slopes_reml = fit_case(dietox, "Weight ~ Time + (Time | Pig)", TRUE),
  dietox_slopes_ml = fit_case(dietox, "Weight ~ Time + (Time | Pig)", FALSE),
  dietox_vc_slope = fit_case(dietox, "Weight ~ Time + (1 | Pig) + (0 + Time | Pig)", TRUE)
)
res$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), out)
