# Like lme4_reference.R, but each case is refitted until lme4 itself cannot improve it:
# after the default fit (nloptwrap), bobyqa (minqa) with rhoend = 1e-10 is run from lme4's
# default start and from the default fit's theta; the fit with the lowest criterion is kept.
# For large, flat or singular models lme4's default optimizer can stop where the criterion
# is within 1e-3 of the optimum but a standard deviation is 1-2% away from it.
# Usage: Rscript lme4_reference_refined.R CASES.csv DATADIR OUT.json [ID ...]
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
cases <- read.csv(args[1], stringsAsFactors = FALSE)
datadir <- args[2]
if (length(args) > 3) cases <- cases[cases$id %in% args[-(1:3)], ]
tight <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e6))
crit <- function(m) if (isREML(m)) REMLcrit(m) else deviance(m)
out <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  path <- file.path(datadir, paste0(cs$data, ".csv"))
  if (!file.exists(path)) path <- paste0(path, ".gz")
  d <- read.csv(path, stringsAsFactors = TRUE)
  for (f in strsplit(cs$factors, ";")[[1]]) if (nzchar(f)) d[[f]] <- factor(d[[f]])
  t0 <- proc.time()[["elapsed"]]
  form <- as.formula(cs$formula)
  m0 <- lmer(form, data = d, REML = as.logical(cs$reml))
  fits <- list(
    default = m0,
    bobyqa = lmer(form, data = d, REML = as.logical(cs$reml), control = tight),
    bobyqa_from_default = lmer(form, data = d, REML = as.logical(cs$reml), control = tight,
                               start = getME(m0, "theta")))
  crits <- sapply(fits, crit)
  best <- names(which.min(crits))
  m <- fits[[best]]
  el <- proc.time()[["elapsed"]] - t0
  cf <- summary(m)$coefficients
  vc <- as.data.frame(VarCorr(m))
  re <- ranef(m, condVar = FALSE)
  first_ranef <- lapply(re, function(x) as.list(x[1, , drop = FALSE]))
  out[[cs$id]] <- list(
    data = cs$data, formula = cs$formula, reml = as.logical(cs$reml),
    nobs = nobs(m), ngrps = as.list(ngrps(m)),
    objective = crit(m),
    loglik = as.numeric(logLik(m)), aic = AIC(m), bic = BIC(m),
    theta = unname(getME(m, "theta")), sigma = sigma(m),
    fixef = as.list(fixef(m)),
    se = as.list(setNames(cf[, "Std. Error"], rownames(cf))),
    varcorr = vc, singular = isSingular(m),
    ranef_first_level = first_ranef,
    fitted_ss = sum(fitted(m)^2), seconds = el, feval = m@optinfo$feval,
    optimizer = best, criteria = as.list(crits),
    lme4_messages = paste(unlist(m@optinfo$conv$lme4$messages), collapse = "; "))
  cat(cs$id, best, sprintf("%.6f", crits), "\n")
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, dataframe = "columns", na = "null"), args[3])
