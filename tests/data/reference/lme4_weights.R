# lme4 reference values for prior weights and offsets (lmer(..., weights =, offset =)).
# Usage: Rscript lme4_weights.R DATADIR OUT.json
#   DATADIR: lmm_sparse/datasets/data (the packaged data sets, NAME.csv.gz).
# The weights and offsets are derived from the data by the rules in `derive` below, which
# tests/test_weights.py repeats in Python; lmerTest's lmer gives the Satterthwaite df.
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
read_data <- function(name) read.csv(file.path(args[1], paste0(name, ".csv.gz")), stringsAsFactors = TRUE)

derive <- list(
  # integer ids before they become factors
  sleepstudy = function(d) {
    d$w <- 1 + (d$Subject %% 3) + d$Days / 10
    d$off <- 2.5 * d$Days
    d$Subject <- factor(d$Subject)
    d
  },
  Penicillin = function(d) {
    d$w <- match(as.character(d$sample), LETTERS) / 2
    d
  },
  dietox = function(d) {  # Feed is missing in 72 rows: lme4 drops them (na.omit)
    d$Pig <- factor(d$Pig)
    d
  }
)

cases <- list(
  list(id = "sleep_w_reml", data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)",
       reml = TRUE, weights = "w", offset = NULL),
  list(id = "sleep_w_ml", data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)",
       reml = FALSE, weights = "w", offset = NULL),
  list(id = "penicillin_w_crossed", data = "Penicillin",
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", reml = TRUE, weights = "w",
       offset = NULL),
  list(id = "sleep_offset", data = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)",
       reml = TRUE, weights = NULL, offset = "off"),
  list(id = "sleep_w_offset", data = "sleepstudy",
       formula = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", reml = TRUE,
       weights = "w", offset = "off"),
  list(id = "sleep_formula_offset_w", data = "sleepstudy",
       formula = "Reaction ~ Days + offset(off) + (Days | Subject)", reml = TRUE, weights = "w",
       offset = NULL),
  list(id = "dietox_w_offset_ml", data = "dietox", formula = "Weight ~ Time + Evit + (Time | Pig)",
       reml = FALSE, weights = "Feed", offset = "Start")
)

head_of <- function(x, k) unname(head(as.numeric(x), k))
tab <- function(x) { x <- as.data.frame(x); x$term <- rownames(x); rownames(x) <- NULL; x }
profile_cases <- c("sleep_w_reml")  # profile intervals (slow in both R and Python)
out <- list()
for (cs in cases) {
  d <- derive[[cs$data]](read_data(cs$data))
  # lmer evaluates weights/offset in the data, so pass the columns by name
  call <- list(formula = as.formula(cs$formula), data = quote(d), REML = cs$reml)
  if (!is.null(cs$weights)) call$weights <- as.name(cs$weights)
  if (!is.null(cs$offset)) call$offset <- as.name(cs$offset)
  m <- do.call(lmer, call)
  cf <- summary(m)$coefficients
  re <- ranef(m)
  out[[cs$id]] <- list(
    data = cs$data, formula = cs$formula, reml = cs$reml,
    weights = cs$weights, offset = cs$offset,
    nobs = nobs(m), ngrps = as.list(ngrps(m)),
    objective = if (cs$reml) REMLcrit(m) else deviance(m),
    loglik = as.numeric(logLik(m)), aic = AIC(m), bic = BIC(m),
    log_weights = sum(log(weights(m))),
    theta = unname(getME(m, "theta")), sigma = sigma(m),
    fixef = as.list(fixef(m)),
    se = as.list(setNames(cf[, "Std. Error"], rownames(cf))),
    df_satterthwaite = as.list(setNames(cf[, "df"], rownames(cf))),
    p_satterthwaite = as.list(setNames(cf[, "Pr(>|t|)"], rownames(cf))),
    t_value = as.list(setNames(cf[, "t value"], rownames(cf))),
    varcorr = as.data.frame(VarCorr(m)), singular = isSingular(m),
    ranef_first_level = lapply(re, function(x) as.list(x[1, , drop = FALSE])),
    ranef_head = lapply(re, function(x) { h <- head(x, 3); h$level <- rownames(h); rownames(h) <- NULL; h }),
    fitted_head = head_of(fitted(m), 10),
    residuals_head = head_of(residuals(m), 10),
    pearson_head = head_of(residuals(m, type = "pearson"), 10),
    fitted_ss = sum(fitted(m)^2),
    # predict() on new rows; left out with an offset= argument, which lme4 drops there
    predict_newdata_head = if (is.null(cs$offset)) head_of(predict(m, newdata = head(d, 10)), 10) else NULL,
    anova_type1 = tab(anova(m, type = 1)), anova_type3 = tab(anova(m, type = 3)),
    confint_wald = tab(confint(m, method = "Wald", oldNames = FALSE)),
    confint_profile = if (cs$id %in% profile_cases) tab(confint(m, method = "profile", oldNames = FALSE)) else NULL)
}
# lme4 1.1-31's profile of a weighted fit's fixed effects is wrong (its intervals for
# sleep_w_reml are ~20 times narrower than the Wald ones; the variance parameters' agree).
# The same model written without weights, with sqrt(w) times the response and the columns
# of X and Z, has the same likelihood up to the constant sum(log w): lme4's profile of that
# model is the reference for the fixed effects' intervals.
d <- derive$sleepstudy(read_data("sleepstudy"))
d$sw <- sqrt(d$w); d$swDays <- d$sw * d$Days; d$yw <- d$sw * d$Reaction
m <- lmer(yw ~ 0 + sw + swDays + (0 + sw + swDays | Subject), d)
out[["sleep_w_reml"]]$confint_profile_unweighted_form <- list(
  formula = "yw ~ 0 + sw + swDays + (0 + sw + swDays | Subject)",
  objective_plus_log_weights = REMLcrit(m) - sum(log(d$w)),
  table = tab(confint(m, method = "profile", oldNames = FALSE)))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, dataframe = "columns",
                  na = "null", null = "null"), args[2])
