# Reference values for tests/test_plots.py: what lme4's diagnostic plots draw.
# Usage (from tests/data/reference): Rscript lme4_plots.R lme4_plots.json
#
# * dotplot(ranef(m, condVar = TRUE)): per grouping factor the levels in the plot's order
#   (bottom to top: reorder() by the first coefficient), and per coefficient the
#   conditional modes and conditional standard deviations (the error bars are +-1.96 sd).
# * qqnorm(): the theoretical quantiles qnorm(ppoints(n)) for the sample sizes plotted.
suppressMessages({library(lme4); library(jsonlite)})
out_file <- commandArgs(trailingOnly = TRUE)[1]

caterpillar <- function(m) {
  re <- ranef(m, condVar = TRUE)
  lapply(setNames(names(re), names(re)), function(g) {
    xt <- re[[g]]
    pv <- attr(xt, "postVar")
    order <- levels(reorder(factor(rownames(xt)), xt[[1]], FUN = mean))
    coefs <- lapply(seq_along(xt), function(j) list(
      name = names(xt)[j],
      levels = rownames(xt),
      mode = xt[[j]],
      sd = sqrt(pv[j, j, ])))
    list(order = order, coefficients = coefs)
  })
}

sleep <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
penicillin <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)
sizes <- c(6, 10, 11, 18, 24, 144, 180)
out <- list(
  sleepstudy = caterpillar(sleep),
  penicillin = caterpillar(penicillin),
  qnorm_ppoints = setNames(lapply(sizes, function(n) qnorm(ppoints(n))), sizes),
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), out_file)
