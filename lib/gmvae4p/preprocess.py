"""Stage 01: cell and gene QC, normalization, log1p and highly variable genes, with scanpy.

After :func:`filter_cells_genes` and :func:`normalize_log1p_hvg` (or :func:`qc_normalize_hvg`, both in one call),
``layers["counts"]`` holds the raw counts of the kept cells and genes, ``X`` holds log1p of counts normalized to
``target_sum`` per cell, ``var["highly_variable"]`` flags the genes later stages model, and ``uns["preprocess"]``
records the parameters and what QC removed. The matrix is never densified, and no step holds more than two copies
of it; the stage 01 notebook holds one throughout (``filter_cells_genes(..., reuse_matrix=True)`` filters the loaded
matrix in its own arrays, ``normalize_log1p_hvg(..., write_to=path)`` writes the counts before normalizing them in
place).
"""

from __future__ import annotations

import gc
import os

import anndata as ad
import numba
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from . import keys
from .data import BLOCK_ROWS, CohortError, obs_column, write_h5ad



def qc_metrics(adata: ad.AnnData, *, mito_prefix: str = "MT-") -> None:
    """Add scanpy's QC metrics, as ``sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None,
    log1p=False)`` names them: ``obs`` genes per cell, total and mitochondrial counts, % mitochondrial; ``var``
    cells per gene, mean and total counts, % dropout; ``var["mt"]``.

    On a CSR matrix they are read off its arrays a block of rows at a time (scanpy's function holds one more copy of
    the matrix while it runs).
    """
    mito = _is_mito(adata, mito_prefix)
    adata.var[keys.MITO] = mito
    x = adata.X
    if not (sp.issparse(x) and x.format == "csr"):
        sc.pp.calculate_qc_metrics(adata, qc_vars=[keys.MITO], percent_top=None, log1p=False, inplace=True)
        return
    genes_per_cell, cells_per_gene = _detected(x)
    total = np.asarray(x.sum(axis=1)).ravel()
    total_mito = x @ np.asarray(mito, dtype=x.dtype)
    gene_total = x.T @ np.ones(x.shape[0], dtype=x.dtype)
    adata.obs[keys.N_GENES] = genes_per_cell
    adata.obs[keys.TOTAL_COUNTS] = total
    adata.obs[f"total_counts_{keys.MITO}"] = total_mito
    share = np.full(total.shape, np.nan, np.result_type(total, np.float32))  # float even for integer counts
    adata.obs[keys.PCT_MITO] = np.divide(100 * total_mito, total, out=share, where=total > 0)
    adata.var["n_cells_by_counts"] = cells_per_gene
    adata.var["mean_counts"] = gene_total / x.shape[0]
    adata.var["pct_dropout_by_counts"] = 100 * (1 - cells_per_gene / x.shape[0])
    adata.var[keys.TOTAL_COUNTS] = gene_total


def qc_normalize_hvg(adata: ad.AnnData, **settings) -> ad.AnnData:
    """:func:`filter_cells_genes`, then :func:`normalize_log1p_hvg` on what it kept; returns the filtered AnnData.

    ``settings`` are the keys of either (the ``preprocess`` section of a parameters file). The caller's matrix stays
    alive until this returns, so the peak is three copies of the counts; the stage 01 notebook calls the two steps
    apart, so that the loaded matrix is freed before its normalized copy is made (two copies).
    """
    _check_settings(**settings)
    qc, normalize = split_settings(settings)
    adata = filter_cells_genes(adata, **qc)
    normalize_log1p_hvg(adata, **normalize)
    return adata


def split_settings(settings: dict) -> tuple[dict, dict]:
    """The ``preprocess`` section split into :func:`filter_cells_genes`'s settings and :func:`normalize_log1p_hvg`'s."""
    normalize = {k: v for k, v in settings.items() if k in _NORMALIZE_SETTINGS}
    return {k: v for k, v in settings.items() if k not in _NORMALIZE_SETTINGS}, normalize


def filter_cells_genes(
    adata: ad.AnnData,
    *,
    min_genes: int = 100,
    min_cells: int = 3,
    max_pct_mito: float | None = 20.0,
    mito_prefix: str = "MT-",
    reuse_matrix: bool = False,
) -> ad.AnnData:
    """Keep cells with enough genes and few mitochondrial counts, then genes seen in enough of the kept cells.

    Returns a new AnnData of the kept cells and genes (``adata`` itself when QC removes nothing) and records what
    was removed in ``uns["preprocess"]``. The input and the result are the only copies of the matrix
    (:func:`_subset_csr`); with ``reuse_matrix`` the result is made in the input's own CSR arrays, so that there is
    one copy, and ``adata`` gives up its ``X`` (it becomes None).

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
    reuse_matrix
        Filter a CSR ``X`` in its own arrays instead of copying the kept part (for a caller done with ``adata``).
    """
    _check_settings(min_genes=min_genes, min_cells=min_cells, max_pct_mito=max_pct_mito)
    if keys.COUNTS in adata.layers:
        raise CohortError(f"adata.layers[{keys.COUNTS!r}] exists already: this AnnData has been preprocessed.")
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
                       "mito_prefix": mito_prefix},
        "n_cells_in": adata.n_obs,
        "n_genes_in": adata.n_vars,
        "n_cells_removed_min_genes": int(few_genes.sum()),
        "n_cells_removed_mito": int((high_mito & ~few_genes).sum()),
        "n_genes_removed_min_cells": int((~keep_genes).sum()),
    }
    if not (keep_cells.all() and keep_genes.all()):
        adata = _subset(adata, keep_cells, keep_genes, reuse_matrix=reuse_matrix)
    _check_classes_survive(adata)
    adata.uns[keys.UNS_PREPROCESS] = record
    return adata


def normalize_log1p_hvg(adata: ad.AnnData, *, target_sum: float = 1e4, n_top_genes: int | None = 1_000,
                        write_to: str | os.PathLike | None = None) -> None:
    """In place: flag highly variable genes, move the counts to ``layers["counts"]`` and put log1p of the counts
    normalized to ``target_sum`` per cell in ``X``.

    The genes are chosen first, while ``X`` is the only copy of the counts (scanpy gathers each batch's rows); the
    normalized copy is then scaled in place a block of rows at a time (``sc.pp.normalize_total`` holds one more copy
    of the matrix while it runs).

    With ``write_to`` (an ``.h5ad`` path) the result goes to that file and memory holds one copy of the matrix, not
    two: the counts are written first (as ``layers["counts"]``), then ``X`` is normalized in place and written beside
    them, and the file appears whole or not at all (:func:`gmvae4p.data.write_h5ad`). The AnnData in memory is then
    the file's without its counts layer.

    Parameters
    ----------
    adata
        Raw counts in ``X``, after :func:`filter_cells_genes`.
    target_sum
        Counts per cell after normalization.
    n_top_genes
        Highly variable genes (scanpy's ``seurat_v3`` on raw counts, per batch when the batch role is set);
        None flags every gene.
    write_to
        Where to write the result with one copy of the matrix in memory; None keeps both in ``adata``.
    """
    _check_settings(target_sum=target_sum, n_top_genes=n_top_genes)
    gc.collect()  # an AnnData the caller has just let go of (the unfiltered one) is freed by the cycle collector only
    if keys.COUNTS in adata.layers:
        raise CohortError(f"adata.layers[{keys.COUNTS!r}] exists already: this AnnData has been preprocessed.")
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        adata.var[keys.HIGHLY_VARIABLE] = True
    else:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top_genes,
                                    batch_key=obs_column(adata, "batch"))
    record = adata.uns.setdefault(keys.UNS_PREPROCESS, {"parameters": {}})
    record["parameters"].update(target_sum=target_sum, n_top_genes=n_top_genes)
    record["parameters"] = {k: v for k, v in record["parameters"].items() if v is not None}  # h5ad has no None
    record.update(n_cells_out=adata.n_obs, n_genes_out=adata.n_vars,
                  n_highly_variable=int(adata.var[keys.HIGHLY_VARIABLE].sum()))
    if write_to is None:
        adata.layers[keys.COUNTS] = adata.X
        adata.X = adata.X.copy()
        _normalize_log1p(adata, target_sum)
        return

    def normalize_beside_the_counts(file):
        file.move("X", f"layers/{keys.COUNTS}")
        _normalize_log1p(adata, target_sum)
        ad.io.write_elem(file, "X", adata.X)
        ad.io.write_elem(file, "uns/log1p", adata.uns["log1p"])  # what scanpy's log1p recorded

    write_h5ad(adata, write_to, finish=normalize_beside_the_counts)


def _normalize_log1p(adata: ad.AnnData, target_sum: float) -> None:
    """``X`` normalized to ``target_sum`` per cell, then log1p, in place where ``X`` is a CSR of floats."""
    x = adata.X
    if sp.issparse(x) and x.format == "csr":
        if not np.issubdtype(x.dtype, np.floating):
            x.data = x.data.astype(np.float32)  # integer counts: only the values are copied, not the indices
        _normalize_total_in_place(x, target_sum)
    else:
        sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)


def qc_summary(adata: ad.AnnData) -> dict:
    """Cells, genes and what QC removed, from ``uns["preprocess"]`` (for a notebook's checked summary cell)."""
    record = adata.uns[keys.UNS_PREPROCESS]
    summary = {k: int(v) for k, v in record.items() if k.startswith("n_")}
    label = obs_column(adata, "label")
    if label is not None:
        unit = obs_column(adata, "sample") or obs_column(adata, "patient")
        summary["units_per_class"] = adata.obs.groupby(label, observed=True)[unit].nunique().astype(int).to_dict()
    return summary


def _normalize_total_in_place(x: sp.csr_matrix, target_sum: float, *, block_rows: int = BLOCK_ROWS) -> None:
    """``sc.pp.normalize_total(adata, target_sum=target_sum)`` on a float CSR in place: each cell's counts scaled to
    sum to ``target_sum`` (cells without counts stay zero), one block of rows at a time."""
    totals = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0).astype(x.dtype)
    for start in range(0, x.shape[0], block_rows):
        end = min(start + block_rows, x.shape[0])
        lo, hi = x.indptr[start], x.indptr[end]
        x.data[lo:hi] *= np.repeat(scale[start:end], np.diff(x.indptr[start:end + 1]))


_NORMALIZE_SETTINGS = ("target_sum", "n_top_genes")


def _check_settings(*, min_genes=0, min_cells=0, max_pct_mito=None, target_sum=1.0, n_top_genes=None,
                    mito_prefix=None) -> None:
    """The ``preprocess`` settings' ranges, checked before anything is computed."""
    if min_genes < 0 or min_cells < 0 or target_sum <= 0:
        raise ValueError("min_genes and min_cells must not be negative and target_sum must be positive.")
    if max_pct_mito is not None and not 0 <= max_pct_mito <= 100:
        raise ValueError(f"max_pct_mito must lie in [0, 100], not {max_pct_mito}.")
    if n_top_genes is not None and n_top_genes < 1:
        raise ValueError(f"n_top_genes must be positive or null, not {n_top_genes}.")


def _subset(adata: ad.AnnData, keep_cells: np.ndarray, keep_genes: np.ndarray, *,
            reuse_matrix: bool = False) -> ad.AnnData:
    """The kept cells and genes as a new AnnData; a CSR ``X`` is gathered without intermediate copies, or, with
    ``reuse_matrix``, compacted in its own arrays (``adata`` then gives up its ``X``)."""
    x = adata.X
    if not (sp.issparse(x) and x.format == "csr"):
        return adata[keep_cells, keep_genes].copy()
    rest = ad.AnnData(obs=adata.obs, var=adata.var, uns=adata.uns, obsm=dict(adata.obsm), varm=dict(adata.varm),
                      layers=dict(adata.layers))[keep_cells, keep_genes].copy()
    if reuse_matrix:
        adata.X = None  # its arrays now hold the kept entries: using them as the whole matrix would be wrong
    rest.X = _subset_csr(x, keep_cells, keep_genes, in_place=reuse_matrix)
    return rest


def _subset_csr(x: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, *, in_place: bool = False) -> sp.csr_matrix:
    """``x[rows][:, cols]`` for boolean masks with at most one new copy of the kept part: scipy gathers the rows,
    then the dropped columns' entries are squeezed out of that copy in place (scipy's column subset would make one
    more copy of the matrix). ``in_place``: no copy, dropped rows and columns are squeezed out of ``x``'s own arrays,
    which the result then shares (``x`` is no longer the matrix it was)."""
    if in_place:
        out, keep_rows = x, rows
    else:
        out, keep_rows = x[np.flatnonzero(rows)] if not rows.all() else x.copy(), np.ones(rows.sum(), dtype=bool)
    if cols.all() and keep_rows.all():
        return out
    new_column = np.where(cols, np.cumsum(cols) - 1, -1)
    indptr = np.zeros(int(keep_rows.sum()) + 1, dtype=out.indptr.dtype)
    written = _squeeze_csr(out.indptr, out.indices, out.data, np.asarray(keep_rows, dtype=bool), new_column, indptr)
    return sp.csr_matrix((out.data[:written], out.indices[:written], indptr), shape=(len(indptr) - 1, int(cols.sum())))


@numba.njit(cache=True)
def _squeeze_csr(indptr, indices, data, keep_rows, new_column, new_indptr):
    """Move the entries of kept rows in kept columns (``new_column`` ≥ 0: their new index) to the front of
    ``indices`` and ``data``, in order, and write the kept rows' bounds into ``new_indptr``; returns the entries
    kept. In place: an entry is only ever written at or before where it was read."""
    written = 0
    row = 0
    for r in range(len(indptr) - 1):
        if not keep_rows[r]:
            continue
        for k in range(indptr[r], indptr[r + 1]):
            column = new_column[indices[k]]
            if column >= 0:
                data[written] = data[k]
                indices[written] = column
                written += 1
        row += 1
        new_indptr[row] = written
    return written


def _is_mito(adata: ad.AnnData, mito_prefix: str):
    return adata.var_names.str.upper().str.startswith(mito_prefix.upper())


def _has_qc_metrics(adata: ad.AnnData, mito_prefix: str) -> bool:
    """Whether :func:`qc_metrics` has run with this prefix (the notebook plots QC before filtering)."""
    if keys.PCT_MITO not in adata.obs or keys.MITO not in adata.var:
        return False
    return bool((adata.var[keys.MITO] == _is_mito(adata, mito_prefix)).all())


def _cells_detected(counts, rows: np.ndarray) -> np.ndarray:
    """Per gene, how many of the cells in the boolean ``rows`` have a non-zero count."""
    if sp.issparse(counts) and counts.format == "csr":
        return _detected(counts, rows)[1]
    return np.asarray((counts[rows] > 0).sum(axis=0)).ravel()


def _detected(x: sp.csr_matrix, rows: np.ndarray | None = None):
    """Non-zero genes per cell, and per gene the cells among ``rows`` (all when None) where it is non-zero, in one
    pass over the entries (explicit zeros do not count)."""
    genes_per_cell = np.zeros(x.shape[0], dtype=np.int64)
    cells_per_gene = np.zeros(x.shape[1], dtype=np.int64)
    counted = np.ones(x.shape[0], dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    _count_detected(x.indptr, x.indices, x.data, counted, genes_per_cell, cells_per_gene)
    return genes_per_cell, cells_per_gene


@numba.njit(cache=True)
def _count_detected(indptr, indices, data, counted, genes_per_cell, cells_per_gene):
    """Per row its positive entries; per column the positive entries of the rows where ``counted`` is True."""
    for r in range(len(indptr) - 1):
        n = 0
        for k in range(indptr[r], indptr[r + 1]):
            if data[k] > 0:
                n += 1
                if counted[r]:
                    cells_per_gene[indices[k]] += 1
        genes_per_cell[r] = n


def _check_classes_survive(adata: ad.AnnData) -> None:
    label = obs_column(adata, "label")
    if label is not None and adata.obs[label].nunique() < 2:
        raise CohortError(f"after QC only one class is left in label_key column {label!r}; loosen min_genes or "
                          "max_pct_mito.")
