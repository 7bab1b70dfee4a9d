"""Linear mixed models with a sparse random-effects design and CHOLMOD."""
