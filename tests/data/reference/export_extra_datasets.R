# Export the R package data sets used by cases_extra.csv to CSV (factors as text).
# Usage: Rscript export_extra_datasets.R OUTDIR    (then gzip -9 -n OUTDIR/*.csv)
suppressMessages({library(nlme); library(lme4); library(lmerTest)})
args <- commandArgs(trailingOnly = TRUE)
out <- if (length(args)) args[1] else "."
sets <- list(
  Orthodont = nlme::Orthodont, Oats = nlme::Oats, Pixel = nlme::Pixel,
  CO2 = datasets::CO2, ChickWeight = datasets::ChickWeight, cake = lme4::cake,
  ham = lmerTest::ham, carrots = lmerTest::carrots)
for (name in names(sets)) {
  d <- as.data.frame(sets[[name]])
  # drop groupedData attributes (formula, labels, units): keep a plain data frame
  attributes(d)[setdiff(names(attributes(d)), c("names", "row.names", "class"))] <- NULL
  class(d) <- "data.frame"
  for (v in names(d)) if (is.factor(d[[v]])) d[[v]] <- as.character(d[[v]])
  write.csv(d, file.path(out, paste0(name, ".csv")), row.names = FALSE)
}
