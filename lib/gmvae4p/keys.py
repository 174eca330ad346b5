"""Every AnnData key gmvae4p reads or writes, named once.

Columns of the user's data are parameters (``patient_key`` …); :func:`gmvae4p.data.load_cohort` records
which column plays which role in ``adata.uns[UNS]["columns"]`` so later stages need not be told again.
"""

UNS = "gmvae4p"
"""``adata.uns[UNS]``: ``{"columns": {role: obs column}, "source": path or "simulated"}``."""

ROLES = ("patient", "cell_type", "label", "sample", "batch")
"""Roles an ``obs`` column can play; patient and cell_type are required, the others optional."""

COUNTS = "counts"
"""``adata.layers[COUNTS]``: raw integer counts (``X`` holds log1p of normalized counts after stage 01)."""

# Written by preprocessing (the QC names are scanpy's own, from ``sc.pp.calculate_qc_metrics``).
MITO = "mt"
N_GENES = "n_genes_by_counts"
TOTAL_COUNTS = "total_counts"
PCT_MITO = "pct_counts_mt"
HIGHLY_VARIABLE = "highly_variable"
UNS_PREPROCESS = "preprocess"
"""``adata.uns[UNS_PREPROCESS]``: parameters and what QC removed."""

# Written by the simulator.
UNS_SIMULATION = "simulation"
"""``adata.uns[UNS_SIMULATION]``: ground truth (disease genes, cell types, per-patient activity, oracle AUC)."""
LOW_QUALITY = "simulated_low_quality"
"""``obs[LOW_QUALITY]``: cells the simulator made low quality (high mitochondrial share, small library)."""

# Written by the GMVAE (stage 02, :class:`gmvae4p.gmvae.model.GMVAE`).
X_GMVAE = "X_gmvae"
"""``adata.obsm[X_GMVAE]``: posterior mean E[z|x] of each cell."""
X_GMVAE_ZSCORE = "X_gmvae_zscore"
"""``adata.obsm[X_GMVAE_ZSCORE]``: (E[z|x] − μ_k) / σ_k for the cell's component k (annotated type where known)."""
X_GMVAE_MSE_ZSCORE = "X_gmvae_mse_zscore"
"""``adata.obsm[X_GMVAE_MSE_ZSCORE]``: the z-score of a second GMVAE, trained like the first but with ``likelihood:
mse`` (written when ``gmvae.mse_for_ablation`` is true; stage 05's row "GMVAE trained with mse" reads its states)."""
GMVAE_CELL_TYPE = "gmvae_cell_type"
"""``adata.obs[GMVAE_CELL_TYPE]``: the GMVAE's cell-type call, the argmax of :data:`GMVAE_PROBA`, categorical with
the components' names; label transfer (:func:`gmvae4p.gmvae.model.transfer_labels`) calls :data:`UNKNOWN` where the
call is too uncertain."""
GMVAE_CELL_TYPE_UNCERTAINTY = "gmvae_cell_type_uncertainty"
"""``adata.obs[GMVAE_CELL_TYPE_UNCERTAINTY]``: 1 − the largest of :data:`GMVAE_PROBA`: the call's uncertainty."""
UNKNOWN = "unknown"
"""The cell type label transfer calls a cell whose uncertainty exceeds its threshold."""
GMVAE_PROBA = "gmvae_proba"
"""``adata.obsm[GMVAE_PROBA]``: per component, the probability of the cell-type call (a regression on E[z|x],
calibrated on the held-out patients' cells: :mod:`gmvae4p.gmvae.caller`; q(y|x) when the GMVAE was trained
without cell types); order in ``uns[UNS_GMVAE]["components"]``."""
GMVAE_HELD_OUT = "gmvae_held_out"
"""``adata.obs[GMVAE_HELD_OUT]``: the cell's patient was held out of GMVAE training (validation)."""
UNS_GMVAE = "gmvae"
"""``adata.uns[UNS_GMVAE]``: settings, components, genes, held-out patients, per-epoch history, metrics."""
UNS_GMVAE_UMAP = "gmvae_umap"
"""``adata.uns[UNS_GMVAE_UMAP]``: UMAP of a cell subsample in ``X_gmvae`` and in ``X_gmvae_zscore``
(:func:`gmvae4p.embedding.latent_umaps`): ``cells`` (row positions), ``seed``, and per basis its 2-D coordinates."""

# Written by the pseudobulk stage (stage 03, :func:`gmvae4p.modalities.make_pseudobulk`), on an AnnData of samples.
KIND = "kind"
"""``obs[KIND]``: :data:`MIXTURE` or :data:`WHOLE`."""
MIXTURE, WHOLE = "mixture", "whole"
"""Values of ``obs[KIND]``: a random cell-type mixture, or all of a unit's cells (what bulk RNA-seq would see)."""
PROPORTIONS = "proportions"
"""``obsm[PROPORTIONS]``: the sample's realized cell-type fractions (a DataFrame, one column per cell type)."""
COMPOSITION = "composition"
"""``obsm[COMPOSITION]``: the unit's true cell-type fractions over all its cells."""
STATES = "states"
"""``obsm[STATES]``: per cell type, the mean GMVAE z-score of the drawn cells (NaN where a type was not drawn);
feature names in ``uns[UNS_PSEUDOBULK]["state_features"]``."""
STATES_EXPRESSION = "states_expression"
"""``obsm[STATES_EXPRESSION]``: per cell type, the mean log-normalized expression of the most variable genes of the
drawn cells (an ablation: the seed's states); names in ``uns[UNS_PSEUDOBULK]["state_expression_features"]``."""
STATES_GMVAE_MSE = "states_gmvae_mse"
"""``obsm[STATES_GMVAE_MSE]``: as :data:`STATES`, from ``obsm["X_gmvae_mse_zscore"]`` (present when the cells
have it)."""
COMMUNICATION = "communication"
"""``obsm[COMMUNICATION]``: ligand–receptor scores per (pair, sender, receiver), all of them (selection happens
inside cross-validation); names in ``uns[UNS_PSEUDOBULK]["communication_features"]``."""
UNS_PSEUDOBULK = "pseudobulk"
"""``uns[UNS_PSEUDOBULK]``: settings, cell-type order, feature names."""
