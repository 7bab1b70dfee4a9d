# Inference reference values for the extra cases (data sets not in shared/): profile and
# Wald intervals, Satterthwaite and Kenward-Roger coefficient tables, type I/II/III F tests
# (lmerTest), population predictions (re.form = NA) and likelihood-ratio tests.
# Usage: Rscript lme4_inference_extra.R cases_extra.csv DATADIR OUT.json
suppressMessages({library(lme4); library(lmerTest); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
cases <- read.csv(args[1], stringsAsFactors = FALSE)
tab <- function(x) { x <- as.data.frame(x); x$term <- rownames(x); rownames(x) <- NULL; x }
load_data <- function(name, factors) {
  path <- file.path(args[2], paste0(name, ".csv"))
  if (!file.exists(path)) path <- paste0(path, ".gz")
  d <- read.csv(path, stringsAsFactors = TRUE)
  for (f in strsplit(factors, ";")[[1]]) if (nzchar(f)) d[[f]] <- factor(d[[f]])
  d
}
safe <- function(expr) tryCatch(expr, error = function(e) NULL)
out <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  d <- load_data(cs$data, cs$factors)
  m <- lmer(as.formula(cs$formula), data = d, REML = as.logical(cs$reml))
  reml <- as.logical(cs$reml)
  kr <- function(type) if (reml) safe(tab(anova(m, type = type, ddf = "Kenward-Roger"))) else NULL
  out[[cs$id]] <- list(
    confint_profile = safe(tab(suppressWarnings(confint(m, method = "profile", oldNames = FALSE)))),
    confint_wald = tab(confint(m, method = "Wald", oldNames = FALSE)),
    coef_satterthwaite = tab(summary(m, ddf = "Satterthwaite")$coefficients),
    coef_kenward_roger = if (reml) safe(tab(summary(m, ddf = "Kenward-Roger")$coefficients)) else NULL,
    anova_type1_satterthwaite = tab(anova(m, type = 1, ddf = "Satterthwaite")),
    anova_type2_satterthwaite = tab(anova(m, type = 2, ddf = "Satterthwaite")),
    anova_type3_satterthwaite = tab(anova(m, type = 3, ddf = "Satterthwaite")),
    anova_type1_kenward_roger = kr(1),
    anova_type3_kenward_roger = kr(3),
    predict_population_head = unname(head(predict(m, re.form = NA), 10)),
    predict_population_sumsq = sum(predict(m, re.form = NA)^2))
}
lrt <- function(data, factors, f0, f1, reml = TRUE) {
  d <- load_data(data, factors)
  m0 <- lmer(as.formula(f0), d, REML = reml); m1 <- lmer(as.formula(f1), d, REML = reml)
  list(data = data, factors = factors, reml = reml, models = c(f0, f1), table = tab(anova(m0, m1)))
}
out[["lrt_extra"]] <- list(
  orthodont = lrt("Orthodont", "Subject", "distance ~ age + Sex + (1 | Subject)",
                  "distance ~ age * Sex + (age | Subject)"),
  oats = lrt("Oats", "Block;Variety", "yield ~ nitro + (1 | Block)",
             "yield ~ nitro + (1 | Block/Variety)"),
  carrots_ml = lrt("carrots", "Consumer;Homesize", "Preference ~ sens2 + (1 | Consumer) + (1 | Product)",
                   "Preference ~ sens2 + Homesize + (1 + sens2 | Consumer) + (1 | Product)", reml = FALSE))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), args[3])
