"""Per-sample modalities beyond expression, each one more sparse product with a pseudobulk plan's weights.

- **states**: for each cell type, the mean GMVAE z-score (``obsm["X_gmvae_zscore"]``, stage 02) of the sample's drawn
  cells of that type: what a type's cells are doing once their identity is removed. A type with no drawn cells is
  NaN (missing), not zero.
- **communication**: for each ligand–receptor pair of liana's curated consensus resource (read from the installed
  liana package; no network) whose genes the data has, and each sender and receiver type, the mean log-CPM of the
  ligand in the sender's drawn cells times that of the receptor in the receiver's. A complex counts as its least
  expressed subunit, as liana does. Selecting the most variable interactions must see training units only, so this
  module returns the full matrix and the classifier selects inside each cross-validation fold
  (:func:`gmvae4p.classify.cv.most_variable`).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import keys
from .data import row_blocks
from .data.ligand_receptor import ligand_receptor_table
from .pseudobulk import (N_CELLS, N_SAMPLES, PROPORTIONS, SPARSE_PROB, MixturePlan, PseudobulkError, _check_settings,
                         _counts, plan_mixtures, pseudobulk_counts, to_anndata, weighted_sums)


def make_pseudobulk(adata: ad.AnnData, *, n_samples: int = N_SAMPLES, n_cells: int = N_CELLS,
                    proportions: str = PROPORTIONS[0], sparse_prob: float = SPARSE_PROB,
                    seed: int = 0, resource: str = "consensus", expression=None,
                    progress: bool = True) -> ad.AnnData:
    """Stage 03 in one call: the plan (:func:`gmvae4p.pseudobulk.plan_mixtures`), pseudobulk counts, states and
    communication, as one AnnData of samples (keys in :mod:`gmvae4p.keys`). Every input is checked first.
    ``expression``: the log-normalized matrix the expression states read (default ``adata.X``; or the matrix on
    disk, :func:`gmvae4p.data.x_on_disk`, for cells read without it)."""
    _check_settings(n_samples=n_samples, n_cells=n_cells, proportions=proportions, sparse_prob=sparse_prob)
    _counts(adata)
    _require_zscore(adata)
    pairs = ligand_receptor_pairs(adata.var_names, resource=resource)
    plan = plan_mixtures(adata, n_samples=n_samples, n_cells=n_cells, proportions=proportions,
                         sparse_prob=sparse_prob, seed=seed, progress=progress)
    state_values, state_names = states(adata, plan)
    expression_values, expression_names = expression_states(adata, plan, expression=expression)
    communication_values, communication_names = communication(adata, plan, pairs)
    obsm = {keys.STATES: state_values, keys.STATES_EXPRESSION: expression_values,
            keys.COMMUNICATION: communication_values}
    if keys.X_GMVAE_MSE_ZSCORE in adata.obsm:  # the ablation's second GMVAE, over the same mixtures
        obsm[keys.STATES_GMVAE_MSE] = states(adata, plan, key=keys.X_GMVAE_MSE_ZSCORE)[0]
    return to_anndata(adata, plan, pseudobulk_counts(adata, plan), obsm=obsm,
                      uns={"settings": {"n_samples": n_samples, "n_cells": n_cells, "proportions": proportions,
                                        "sparse_prob": sparse_prob,
                                        "seed": seed, "resource": resource},
                           "state_features": state_names, "state_expression_features": expression_names,
                           "communication_features": communication_names,
                           "ligand_receptor_pairs": pairs.to_dict(orient="list")})


def states(adata: ad.AnnData, plan: MixturePlan, *, key: str = keys.X_GMVAE_ZSCORE) -> tuple[np.ndarray, list[str]]:
    """Samples × (types · latent dims) means of ``obsm[key]`` per type (the z-scores; ``X_gmvae`` for the raw
    latent), and the feature names ``"<type>|z<j>"``."""
    _require_zscore(adata)
    latent = np.asarray(adata.obsm[key], dtype=np.float64)
    means = _means(plan, weighted_sums(plan, latent, columns=np.arange(latent.shape[1])))
    names = [f"{t}|z{j}" for t in plan.cell_types for j in range(latent.shape[1])]
    return means.reshape(len(means), -1).astype(np.float32), names


EXPRESSION_STATE_GENES = 200
"""Genes of the expression states (:func:`expression_states`): the seed built states from highly variable gene means;
200 genes × types keeps them of the z-score states' order of size."""


def expression_states(adata: ad.AnnData, plan: MixturePlan, *, n_genes: int = EXPRESSION_STATE_GENES,
                      expression=None) -> tuple[np.ndarray, list[str]]:
    """Samples × (types · genes) mean log-normalized expression (``expression``, default ``X``) per type of the
    ``n_genes`` most variable genes (stage 01's ``highly_variable_rank`` when it ranked them, else the variance of
    the expression), and the names ``"<type>|<gene>"``. Label-free, like every input of stage 03. The expression is
    read a block of rows at a time, so it may be the matrix on disk (:func:`gmvae4p.data.x_on_disk`)."""
    x = adata.X if expression is None else expression
    if "highly_variable_rank" in adata.var and adata.var["highly_variable_rank"].notna().any():
        genes = np.argsort(adata.var["highly_variable_rank"].fillna(np.inf).to_numpy(), kind="stable")[:n_genes]
    else:
        genes = np.argsort(-_column_variance(x), kind="stable")[:n_genes]
    genes = np.sort(genes)
    kept = sp.vstack([sp.csr_matrix(block)[:, genes] for _, _, block in row_blocks(x)], format="csr")
    means = _means(plan, weighted_sums(plan, kept, columns=np.arange(len(genes))))
    names = [f"{t}|{g}" for t in plan.cell_types for g in adata.var_names[genes]]
    return means.reshape(len(means), -1).astype(np.float32), names


def _column_variance(x) -> np.ndarray:
    """Variance of each column, summed a block of rows at a time (``x.multiply(x)`` would be one more copy of the
    cells' matrix; ``x`` may be on disk)."""
    sums, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for _, _, block in row_blocks(x):
        block = sp.csr_matrix(block)
        values = block.data.astype(np.float64)
        sums += np.bincount(block.indices, weights=values, minlength=x.shape[1])
        squares += np.bincount(block.indices, weights=values * values, minlength=x.shape[1])
    mean = sums / x.shape[0]
    return squares / x.shape[0] - mean ** 2


def ligand_receptor_pairs(genes, *, resource: str = "consensus") -> pd.DataFrame:
    """Pairs of liana's ``resource`` whose every ligand and receptor subunit is among ``genes``: columns
    ``ligand``, ``receptor`` (complexes as ``A_B``)."""
    genes = set(genes)
    pairs = ligand_receptor_table(resource)
    present = pairs.map(lambda name: all(g in genes for g in name.split("_"))).all(axis=1)
    return pairs[present].reset_index(drop=True)


def communication(adata: ad.AnnData, plan: MixturePlan, pairs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Samples × (pairs · senders · receivers) scores, and the names ``"<ligand>→<receptor>|<sender>→<receiver>"``.

    Missing types make NaN scores, as in :func:`states`.
    """
    subunits = sorted({g for name in pd.concat([pairs["ligand"], pairs["receptor"]]) for g in name.split("_")})
    column = pd.Index(adata.var_names).get_indexer(subunits)
    if (column < 0).any():
        raise PseudobulkError(f"genes {[g for g, c in zip(subunits, column) if c < 0][:5]} of the pairs are not in "
                              "adata.var_names.")
    counts = _counts(adata)
    library = np.asarray(counts.sum(1), dtype=np.float64).ravel()
    sums = weighted_sums(plan, counts, columns=column, log_cpm_library=library)
    means = _means(plan, sums).astype(np.float32)  # samples × types × subunit genes: mean log-CPM
    index = {g: i for i, g in enumerate(subunits)}

    def expression(names):  # samples × pairs × types, a complex as its least expressed subunit
        return np.stack([means[:, :, [index[g] for g in name.split("_")]].min(-1) for name in names], axis=1)

    ligand, receptor = expression(pairs["ligand"]), expression(pairs["receptor"])
    # made directly in (sample, pair, sender, receiver) order: the product is the one large array written
    scores = (ligand[:, :, :, None] * receptor[:, :, None, :]).reshape(len(ligand), -1)
    types = plan.cell_types
    names = [f"{lig}→{rec}|{s}→{r}" for lig, rec in zip(pairs["ligand"], pairs["receptor"])
             for s in types for r in types]
    return scores, names


def _means(plan: MixturePlan, sums: np.ndarray) -> np.ndarray:
    """Per-type sums over drawn cells → means; NaN where a sample drew no cell of the type."""
    drawn = plan.cells_per_type[:, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(drawn > 0, sums / drawn, np.nan)


def _require_zscore(adata: ad.AnnData) -> None:
    for key in (keys.X_GMVAE_ZSCORE, keys.X_GMVAE):
        if key not in adata.obsm:
            raise PseudobulkError(f"adata.obsm[{key!r}] is missing: run stage 02 (GMVAE) first.")
