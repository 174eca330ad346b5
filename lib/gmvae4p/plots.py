"""Figures. Each function returns ``(Figure, DataFrame)``: the figure and the data its panels plot, so a notebook
saves both (:func:`save_figure`) and no plotted value exists only inside a picture."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import numpy as np
import pandas as pd

from . import keys
from .data import atomic_path

MAX_POINTS = 20_000
"""Cells drawn at most per cell-level figure; the figure says when it shows a subsample."""


def qc_overview(adata: ad.AnnData, *, min_genes: int, max_pct_mito: float | None, seed: int = 0):
    """Genes per cell, mitochondrial share and counts per cell before filtering, with the QC thresholds.

    Needs :func:`gmvae4p.preprocess.qc_metrics` to have run.
    """
    missing = [k for k in (keys.N_GENES, keys.TOTAL_COUNTS, keys.PCT_MITO) if k not in adata.obs]
    if missing:
        raise KeyError(f"adata.obs lacks {missing}: run gmvae4p.preprocess.qc_metrics first.")
    cells = _subsample(adata.n_obs, seed)
    data = adata.obs.iloc[cells][[keys.N_GENES, keys.TOTAL_COUNTS, keys.PCT_MITO]].copy()
    removed = data[keys.N_GENES] < min_genes
    if max_pct_mito is not None:
        removed |= data[keys.PCT_MITO] > max_pct_mito
    data["removed_by_qc"] = removed.to_numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    axes[0].hist(data[keys.N_GENES], bins=60, color="0.35")
    axes[0].axvline(min_genes, color="crimson", ls="--", label=f"min_genes = {min_genes}")
    axes[0].set(xlabel="genes detected per cell", ylabel="cells")
    axes[1].hist(data[keys.PCT_MITO], bins=60, color="0.35", log=True)  # log: the few damaged cells stay visible
    if max_pct_mito is not None:
        axes[1].axvline(max_pct_mito, color="crimson", ls="--", label=f"max_pct_mito = {max_pct_mito:g}")
    axes[1].set(xlabel="% mitochondrial counts", ylabel="cells")
    kept = ~data["removed_by_qc"]
    axes[2].scatter(data.loc[kept, keys.TOTAL_COUNTS], data.loc[kept, keys.N_GENES], s=2, alpha=0.4,
                    color="0.35", label="kept", rasterized=True)
    axes[2].scatter(data.loc[~kept, keys.TOTAL_COUNTS], data.loc[~kept, keys.N_GENES], s=4, alpha=0.8,
                    color="crimson", label="removed", rasterized=True)
    axes[2].set(xscale="log", yscale="log", xlabel="counts per cell", ylabel="genes detected per cell")
    for axis in (axes[2].xaxis, axes[2].yaxis):
        axis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=8)
    shown = f"{len(cells):,} of {adata.n_obs:,} cells" if len(cells) < adata.n_obs else f"{adata.n_obs:,} cells"
    fig.suptitle(f"Quality control before filtering ({shown}; {int(data['removed_by_qc'].sum()):,} shown "
                 "would be removed)")
    return fig, data


def save_figure(fig, data: pd.DataFrame, folder: str | os.PathLike, name: str) -> list[Path]:
    """Write ``name.pdf``, ``name.png`` and the plotted data ``name.csv`` into ``folder``, each atomically."""
    folder = Path(folder)
    written = []
    for suffix in (".pdf", ".png"):
        with atomic_path(folder / f"{name}{suffix}") as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150)
        written.append(folder / f"{name}{suffix}")
    with atomic_path(folder / f"{name}.csv") as tmp:
        data.to_csv(tmp)
    written.append(folder / f"{name}.csv")
    return written


def _subsample(n: int, seed: int) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))
