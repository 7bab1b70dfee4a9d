"""Fits on data that arrive in chunks (the partitions of a Dask DataFrame).

The in-memory pipeline needs every row at once only to build the cross-products
(:mod:`lmm_sparse.crossprod`); after them nothing depends on n. Here they are built in two
passes over the chunks, each a map over chunks and a reduce of small summaries:

1. :mod:`~lmm_sparse.chunked.scan`: the global state every chunk must share: the rows left
   after dropping incomplete ones, the levels of every grouping factor and the distinct
   values of every factor the fixed part encodes. From them a :class:`~.scan.ChunkPlan`:
   formulaic specs that give every chunk the same X columns, and the global level codes.
2. :mod:`~lmm_sparse.chunked.partial`: each chunk's sums (Z'Z blocks keyed by level pairs,
   Z'[1 X y], [1 X y]'[1 X y]) and their merge.

:mod:`~lmm_sparse.chunked.finish` turns the summed sums into the
:class:`~lmm_sparse.crossprod.CrossProducts` the in-memory path builds (aliased columns,
centring, y's least-squares residual) and :mod:`~lmm_sparse.chunked.dask_fit` runs the
passes on Dask and fits with the unchanged engine. Only that last module imports Dask.
"""
