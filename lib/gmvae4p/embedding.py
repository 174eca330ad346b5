"""UMAPs of the GMVAE latent space, computed once (stage 02) and stored in the AnnData for every figure that shows
them: a UMAP's numba compilation alone takes most of half a minute, so no figure recomputes one."""

from __future__ import annotations

import anndata as ad
import numpy as np

from . import keys

MAX_CELLS = 20_000
"""Cells embedded at most; the figures say when they show a subsample."""


def latent_umaps(adata: ad.AnnData, *, bases: tuple[str, ...] = (keys.X_GMVAE, keys.X_GMVAE_ZSCORE),
                 max_cells: int = MAX_CELLS, seed: int = 0) -> None:
    """UMAP (15 neighbours) of ``obsm[basis]`` for each of ``bases`` on the same random subsample of at most
    ``max_cells`` cells; writes ``uns["gmvae_umap"]``."""
    import umap  # umap-learn directly: scanpy 1.11's neighbors calls csr_array.getnnz, which scipy 1.17 removed

    missing = [b for b in bases if b not in adata.obsm]
    if missing:
        raise KeyError(f"adata.obsm lacks {missing}: train the GMVAE (stage 02) first.")
    cells = subsample(adata.n_obs, max_cells, seed)
    adata.uns[keys.UNS_GMVAE_UMAP] = {
        "cells": cells, "seed": seed,
        **{basis: umap.UMAP(n_neighbors=15, random_state=seed).fit_transform(np.asarray(adata.obsm[basis])[cells])
           .astype(np.float32) for basis in bases}}


def subsample(n: int, max_n: int, seed: int) -> np.ndarray:
    """Sorted positions of ``max_n`` of ``n`` rows drawn without replacement, or all rows when ``n <= max_n``."""
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))
