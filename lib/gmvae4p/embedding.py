"""UMAPs of the GMVAE latent space, computed once (stage 02) and stored in the AnnData for every figure that shows
them: a UMAP's numba compilation alone takes most of half a minute, so no figure recomputes one, and stage 02 has it
compiled in a :class:`UMAPProcess` while the GMVAE trains."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable

import anndata as ad
import numpy as np

from . import keys

MAX_CELLS = 20_000
"""Cells embedded at most; the figures say when they show a subsample."""


class UMAPProcess:
    """A worker process that starts compiling UMAP's numba functions as soon as it is made (by embedding random points
    through the code path that ``n_cells`` cells will take), so that the caller's work meanwhile hides the
    compilation; :func:`start_latent_umaps` then embeds in it. Results are those of UMAP in this process (same
    inputs, same ``random_state``)."""

    BUSY_CORES = 1
    """Cores the compilation keeps busy: work meanwhile should leave them free (``GMVAE.fit``'s ``busy_cores``)."""

    EXACT_NEIGHBOURS_BELOW = 4_096
    """umap-learn finds the neighbours of fewer points exactly, of more by NN-descent (far longer to compile)."""

    def __init__(self, n_cells: int = MAX_CELLS):
        self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        n_embedded = min(n_cells, MAX_CELLS)
        n_points = n_embedded if n_embedded < self.EXACT_NEIGHBOURS_BELOW else self.EXACT_NEIGHBOURS_BELOW + 100
        points = np.random.default_rng(0).normal(size=(max(n_points, 20), 8)).astype(np.float32)
        self._warmup = self._pool.submit(_umap, points, 0, 5)

    def submit(self, values: np.ndarray, seed: int) -> concurrent.futures.Future:
        """Embed ``values`` once the compilation is done (tasks run in order); the future's result is the UMAP."""
        return self._pool.submit(_umap, values, seed)

    def close(self) -> None:
        self._pool.shutdown()


def start_latent_umaps(adata: ad.AnnData, *, bases: tuple[str, ...] = (keys.X_GMVAE, keys.X_GMVAE_ZSCORE),
                       max_cells: int = MAX_CELLS, seed: int = 0,
                       process: UMAPProcess | None = None) -> Callable[[], None]:
    """UMAP (15 neighbours) of ``obsm[basis]`` for each of ``bases`` on the same random subsample of at most
    ``max_cells`` cells, started in ``process`` (a :class:`UMAPProcess` made earlier; default: a new one) so that
    other work can run meanwhile (it keeps :attr:`UMAPProcess.BUSY_CORES` busy). Calling the returned function waits
    for them, writes ``uns["gmvae_umap"]`` and closes the process."""
    try:
        missing = [b for b in bases if b not in adata.obsm]
        if missing:
            raise KeyError(f"adata.obsm lacks {missing}: train the GMVAE (stage 02) first.")
        process = process or UMAPProcess(adata.n_obs)
        cells = subsample(adata.n_obs, max_cells, seed)
        pending = {basis: process.submit(np.asarray(adata.obsm[basis])[cells], seed) for basis in bases}
    except BaseException:
        if process is not None:
            process.close()
        raise

    def write() -> None:
        try:
            adata.uns[keys.UNS_GMVAE_UMAP] = {"cells": cells, "seed": seed,
                                              **{basis: task.result() for basis, task in pending.items()}}
        finally:
            process.close()

    return write


def latent_umaps(adata: ad.AnnData, **settings) -> None:
    """:func:`start_latent_umaps` (same ``settings``), waited for: ``uns["gmvae_umap"]`` is written on return."""
    start_latent_umaps(adata, **settings)()


def _umap(values: np.ndarray, seed: int, n_epochs: int | None = None) -> np.ndarray:
    import umap  # umap-learn directly: scanpy 1.11's neighbors calls csr_array.getnnz, which scipy 1.17 removed

    # n_jobs=1: a seeded UMAP runs on one thread anyway (asked for more, umap-learn says so in a warning)
    return umap.UMAP(n_neighbors=15, random_state=seed, n_epochs=n_epochs, n_jobs=1).fit_transform(values).astype(
        np.float32)


def subsample(n: int, max_n: int, seed: int) -> np.ndarray:
    """Sorted positions of ``max_n`` of ``n`` rows drawn without replacement, or all rows when ``n <= max_n``."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
