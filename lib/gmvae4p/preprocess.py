"""Stage 01: cell and gene QC, normalization, log1p and highly variable genes, with scanpy.

After :func:`qc_normalize_hvg`, ``layers["counts"]`` holds the raw counts of the kept cells and genes, ``X`` holds
log1p of counts normalized to ``target_sum`` per cell, ``var["highly_variable"]`` flags the genes later stages model,
and ``uns["preprocess"]`` records the parameters and what QC removed. The matrix is never densified: peak memory
is the caller's matrix, the filtered counts and their normalized copy (normalized in place, a block of rows at a
time: ``sc.pp.normalize_total`` holds one more copy of the matrix while it runs).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from . import keys
from .data import CohortError, obs_column


def qc_metrics(adata: ad.AnnData, *, mito_prefix: str = "MT-") -> None:
    """Add scanpy's QC metrics: ``obs`` genes per cell, total counts, % mitochondrial; ``var["mt"]``."""
    adata.var[keys.MITO] = _is_mito(adata, mito_prefix)
    sc.pp.calculate_qc_metrics(adata, qc_vars=[keys.MITO], percent_top=None, log1p=False, inplace=True)


def qc_normalize_hvg(
    adata: ad.AnnData,
    *,
    min_genes: int = 100,
    min_cells: int = 3,
    max_pct_mito: float | None = 20.0,
    mito_prefix: str = "MT-",
    target_sum: float = 1e4,
    n_top_genes: int | None = 1_000,
) -> ad.AnnData:
    """Filter cells and genes, normalize and log-transform, flag highly variable genes; return the filtered AnnData.

    Parameters
    ----------
    adata
        Raw counts in ``X``, as :func:`gmvae4p.data.load_cohort` leaves them.
    min_genes
        Keep cells with at least this many detected genes.
    min_cells
        Keep genes detected in at least this many of the kept cells.
    max_pct_mito
        Keep cells with at most this percentage of mitochondrial counts; None turns the filter off.
    mito_prefix
        Gene-name prefix of mitochondrial genes (case-insensitive).
    target_sum
        Counts per cell after normalization.
    n_top_genes
        Highly variable genes (scanpy's ``seurat_v3`` on raw counts, per batch when the batch role is set);
        None flags every gene.
    """
    if keys.COUNTS in adata.layers:
        raise CohortError(f"adata.layers[{keys.COUNTS!r}] exists already: this AnnData has been preprocessed.")
    if min_genes < 0 or min_cells < 0 or target_sum <= 0:
        raise ValueError("min_genes and min_cells must not be negative and target_sum must be positive.")
    if max_pct_mito is not None and not 0 <= max_pct_mito <= 100:
        raise ValueError(f"max_pct_mito must lie in [0, 100], not {max_pct_mito}.")
    if n_top_genes is not None and n_top_genes < 1:
        raise ValueError(f"n_top_genes must be positive or null, not {n_top_genes}.")

    if not _has_qc_metrics(adata, mito_prefix):
        qc_metrics(adata, mito_prefix=mito_prefix)
    few_genes = adata.obs[keys.N_GENES].to_numpy() < min_genes
    high_mito = (adata.obs[keys.PCT_MITO].to_numpy() > max_pct_mito) if max_pct_mito is not None \
        else np.zeros(adata.n_obs, bool)
    keep_cells = ~(few_genes | high_mito)
    if not keep_cells.any():
        raise CohortError(f"QC removed every cell (min_genes={min_genes}, max_pct_mito={max_pct_mito}); "
                          "loosen these parameters.")
    keep_genes = _cells_detected(adata.X, keep_cells) >= min_cells
    if not keep_genes.any():
        raise CohortError(f"gene QC removed every gene (min_cells={min_cells}); lower min_cells.")
    record = {
        "parameters": {"min_genes": min_genes, "min_cells": min_cells, "max_pct_mito": max_pct_mito,
                       "mito_prefix": mito_prefix, "target_sum": target_sum, "n_top_genes": n_top_genes},
        "n_cells_in": adata.n_obs,
        "n_genes_in": adata.n_vars,
        "n_cells_removed_min_genes": int(few_genes.sum()),
        "n_cells_removed_mito": int((high_mito & ~few_genes).sum()),
        "n_genes_removed_min_cells": int((~keep_genes).sum()),
    }
    adata = adata[keep_cells, keep_genes].copy()
    _check_classes_survive(adata)

    adata.layers[keys.COUNTS] = adata.X
    adata.X = adata.X.copy()
    if sp.issparse(adata.X) and adata.X.format == "csr" and np.issubdtype(adata.X.dtype, np.floating):
        _normalize_total_in_place(adata.X, target_sum)
    else:
        sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        adata.var[keys.HIGHLY_VARIABLE] = True
    else:
        batch = obs_column(adata, "batch")
        sc.pp.highly_variable_genes(adata, layer=keys.COUNTS, flavor="seurat_v3", n_top_genes=n_top_genes,
                                    batch_key=batch)
    record.update(n_cells_out=adata.n_obs, n_genes_out=adata.n_vars,
                  n_highly_variable=int(adata.var[keys.HIGHLY_VARIABLE].sum()))
    record["parameters"] = {k: v for k, v in record["parameters"].items() if v is not None}  # h5ad has no None
    adata.uns[keys.UNS_PREPROCESS] = record
    return adata


def qc_summary(adata: ad.AnnData) -> dict:
    """Cells, genes and what QC removed, from ``uns["preprocess"]`` (for a notebook's checked summary cell)."""
    record = adata.uns[keys.UNS_PREPROCESS]
    summary = {k: int(v) for k, v in record.items() if k.startswith("n_")}
    label = obs_column(adata, "label")
    if label is not None:
        unit = obs_column(adata, "sample") or obs_column(adata, "patient")
        summary["units_per_class"] = adata.obs.groupby(label, observed=True)[unit].nunique().astype(int).to_dict()
    return summary


def _normalize_total_in_place(x: sp.csr_matrix, target_sum: float, *, block_rows: int = 65_536) -> None:
    """``sc.pp.normalize_total(adata, target_sum=target_sum)`` on a float CSR in place: each cell's counts scaled to
    sum to ``target_sum`` (cells without counts stay zero), one block of rows at a time."""
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0).astype(x.dtype)
    for start in range(0, x.shape[0], block_rows):
        end = min(start + block_rows, x.shape[0])
        lo, hi = x.indptr[start], x.indptr[end]
        x.data[lo:hi] *= np.repeat(scale[start:end], np.diff(x.indptr[start:end + 1]))


def _is_mito(adata: ad.AnnData, mito_prefix: str):
    return adata.var_names.str.upper().str.startswith(mito_prefix.upper())


def _has_qc_metrics(adata: ad.AnnData, mito_prefix: str) -> bool:
    """Whether :func:`qc_metrics` has run with this prefix (the notebook plots QC before filtering)."""
    if keys.PCT_MITO not in adata.obs or keys.MITO not in adata.var:
        return False
    return bool((adata.var[keys.MITO] == _is_mito(adata, mito_prefix)).all())


def _cells_detected(counts, rows: np.ndarray) -> np.ndarray:
    """Per gene, how many of the cells in the boolean ``rows`` have a non-zero count (no copy of the matrix)."""
    if sp.issparse(counts) and counts.format == "csr":
        in_rows = np.repeat(rows, np.diff(counts.indptr))
        return np.bincount(counts.indices[in_rows & (counts.data > 0)], minlength=counts.shape[1])
    return np.asarray((counts[rows] > 0).sum(axis=0)).ravel()


def _check_classes_survive(adata: ad.AnnData) -> None:
    label = obs_column(adata, "label")
    if label is not None and adata.obs[label].nunique() < 2:
        raise CohortError(f"after QC only one class is left in label_key column {label!r}; loosen min_genes or "
                          "max_pct_mito.")
