"""UMAPs of the GMVAE latent space, computed once (stage 02, in a background process while its second GMVAE trains)
and stored in the AnnData for every figure that shows them. umap-learn's numba code takes longer to compile than
20,000 cells take to embed: it is cached on disk, so only a machine's first run compiles it. The neighbours are
found exactly (the subsample is small), not by NN-descent, whose numba code cannot be cached and takes longest to
compile."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable

import anndata as ad
import numpy as np

from . import keys

N_NEIGHBOURS = 15

MAX_CELLS = 20_000
"""Cells embedded at most; the figures say when they show a subsample."""


BASES = (keys.X_GMVAE, keys.X_GMVAE_ZSCORE)
SPARE_CORES = 4
"""Machines with at least this many cores embed each basis in a process of its own; smaller ones embed them one
after the other in one process, so that the work going on meanwhile keeps its cores."""


def busy_cores(n_bases: int = len(BASES)) -> int:
    """Cores that :func:`start_latent_umaps` keeps busy (one per process; a seeded UMAP runs on one core): work
    meanwhile should leave them free (``GMVAE.fit``'s ``busy_cores``)."""
    return n_bases if (os.cpu_count() or 1) >= SPARE_CORES else 1


def start_latent_umaps(adata: ad.AnnData, *, bases: tuple[str, ...] = BASES, max_cells: int = MAX_CELLS,
                       seed: int = 0) -> Callable[[], None]:
    """UMAP (:func:`umap_embedding`) of ``obsm[basis]`` for each of ``bases`` on the same random subsample of at most
    ``max_cells`` cells, started in background processes (:func:`busy_cores` of them) so that other work can run
    meanwhile on the other cores. Calling the returned function waits for them and writes ``uns["gmvae_umap"]``."""
    missing = [b for b in bases if b not in adata.obsm]
    if missing:
        raise KeyError(f"adata.obsm lacks {missing}: train the GMVAE (stage 02) first.")
    cells = subsample(adata.n_obs, max_cells, seed)
    process = concurrent.futures.ProcessPoolExecutor(busy_cores(len(bases)),
                                                     mp_context=multiprocessing.get_context("spawn"))
    pending = {basis: process.submit(umap_embedding, np.asarray(adata.obsm[basis])[cells], seed) for basis in bases}

    def write() -> None:
        try:
            adata.uns[keys.UNS_GMVAE_UMAP] = {"cells": cells, "seed": seed,
                                              **{basis: task.result() for basis, task in pending.items()}}
        finally:
            process.shutdown()

    return write


def latent_umaps(adata: ad.AnnData, **settings) -> None:
    """:func:`start_latent_umaps` (same ``settings``), waited for: ``uns["gmvae_umap"]`` is written on return."""
    start_latent_umaps(adata, **settings)()


def umap_embedding(values: np.ndarray, seed: int, *, n_epochs: int | None = None, threads: int = 1) -> np.ndarray:
    """UMAP of ``values`` (rows are points) over their ``N_NEIGHBOURS`` exact nearest neighbours, on ``threads``
    cores; umap-learn's numba code is compiled once per machine and read from its on-disk cache afterwards."""
    import umap  # umap-learn directly: scanpy 1.11's neighbors calls csr_array.getnnz, which scipy 1.17 removed
    from sklearn.neighbors import NearestNeighbors
    from threadpoolctl import threadpool_limits

    _cache_compiled_code(umap)
    with threadpool_limits(threads):
        distances, neighbours = NearestNeighbors(n_neighbors=min(N_NEIGHBOURS, len(values)) - 1).fit(values).kneighbors()
    # kneighbors() leaves each point out; umap-learn's own neighbour lists start with the point itself
    own = np.arange(len(values))[:, None]
    neighbours, distances = np.hstack([own, neighbours]), np.hstack([np.zeros_like(own, float), distances])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precomputed_knn")  # only `transform` would need a search index
        model = umap.UMAP(n_neighbors=N_NEIGHBOURS, random_state=seed, n_epochs=n_epochs, n_jobs=threads,
                          precomputed_knn=(neighbours, distances.astype(np.float32)))
        return model.fit_transform(values).astype(np.float32)


def _cache_compiled_code(package) -> None:
    """Turn on numba's on-disk cache for the compiled functions of ``package``'s loaded modules (umap-learn does not
    declare them ``cache=True``), so that a later process loads them instead of compiling them again; functions numba
    cannot cache are compiled as before."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if name.startswith(f"{package.__name__}."):
            for function in vars(module).values():
                if isinstance(function, Dispatcher) and isinstance(function._cache, NullCache):
                    try:
                        function.enable_caching()
                    except RuntimeError:  # no writable cache folder: numba compiles as it would have
                        return


def subsample(n: int, max_n: int, seed: int) -> np.ndarray:
    """Sorted positions of ``max_n`` of ``n`` rows drawn without replacement, or all rows when ``n <= max_n``."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
