# Golden values for LmerResult.tidy(): the rows R's broom.mixed::tidy() gives for an lmer
# fit, computed here from lme4 and lmerTest directly (broom.mixed is not a Debian package;
# its tidy.merMod takes the same numbers from these functions):
#   fixed:    fixef(m), sqrt(diag(vcov(m))), lmerTest's Satterthwaite t, df and p-value;
#   ran_pars: as.data.frame(VarCorr(m), order = "lower.tri"), sdcor column, named
#             sd__<var1>, cor__<var1>.<var2>, and sd__Observation for the residual;
#   conf.low/conf.high: confint(m, method = "Wald") and confint(m, method = "profile").
# The optimizer runs to a tight tolerance so that the values are the optimum itself, not
# bobyqa's default stopping point.
# Usage: Rscript broom_reference.R broom_reference.json
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

tidy_rows <- function(m) {
  cf <- summary(m, ddf = "Satterthwaite")$coefficients
  wald <- confint(m, method = "Wald", oldNames = FALSE)
  prof <- confint(m, method = "profile", oldNames = FALSE)
  fixed <- data.frame(effect = "fixed", group = NA, term = rownames(cf),
                      estimate = unname(fixef(m)), std.error = sqrt(diag(as.matrix(vcov(m)))),
                      statistic = cf[, "t value"], df = cf[, "df"], p.value = cf[, "Pr(>|t|)"],
                      wald.low = wald[rownames(cf), 1], wald.high = wald[rownames(cf), 2],
                      profile.low = prof[rownames(cf), 1], profile.high = prof[rownames(cf), 2],
                      stringsAsFactors = FALSE)
  vc <- as.data.frame(VarCorr(m), order = "lower.tri")
  resid <- vc$grp == "Residual"
  term <- ifelse(is.na(vc$var2), paste0("sd__", vc$var1), paste0("cor__", vc$var1, ".", vc$var2))
  term[resid] <- "sd__Observation"
  # lme4's profile names: sd_<var1>|<grp>, cor_<var2>.<var1>|<grp>, sigma
  pname <- ifelse(is.na(vc$var2), paste0("sd_", vc$var1, "|", vc$grp),
                  paste0("cor_", vc$var2, ".", vc$var1, "|", vc$grp))
  pname[resid] <- "sigma"
  ran <- data.frame(effect = "ran_pars", group = vc$grp, term = term, estimate = vc$sdcor,
                    std.error = NA, statistic = NA, df = NA, p.value = NA,
                    wald.low = NA, wald.high = NA,
                    profile.low = prof[pname, 1], profile.high = prof[pname, 2],
                    stringsAsFactors = FALSE)
  rows <- rbind(fixed, ran)
  rownames(rows) <- NULL
  list(formula = paste(deparse(formula(m)), collapse = " "), reml = isREML(m),
       tidy = rows, varcorr = as.data.frame(VarCorr(m)),
       sigma = sigma(m), theta = unname(getME(m, "theta")), loglik = as.numeric(logLik(m)),
       aic = AIC(m), bic = BIC(m), nobs = nobs(m))
}

out <- list(
  r_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  lmerTest_version = as.character(packageVersion("lmerTest")),
  sleepstudy = tidy_rows(lmer(Reaction ~ Days + (Days | Subject), sleepstudy, control = ctrl)),
  penicillin = tidy_rows(lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin,
                              control = ctrl))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), args[1])
