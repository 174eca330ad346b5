"""One check of the cohort against every parameter, before stage 01 computes anything.

A run that cannot work should fail in seconds, not after the GMVAE has trained: :func:`check` reads the cohort's
annotations (and, for a real cohort, one pass over its counts for the quality-control preview) and raises a
:class:`~gmvae4p.params.ParameterError` with one sentence naming the parameter for the first thing that cannot work.
What a user should know but that does not stop the run (QC removing many cells) comes back as notes, each said once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .params import Parameters, ParameterError

PATIENT_STAGES = ("04_classify", "05_ablation", "06_figures")
"""Stages that need a label: a cohort without one runs the cell-level stages only."""
QC_NOTE_SHARE = 0.05
"""QC that would remove more than this share of cells is said before the run."""
_ROWS = 50_000  # cells read at a time for the QC preview


@dataclasses.dataclass
class Cohort:
    """What the checks need to know of a cohort: per cell its patient, unit and label (``cells``), and its genes."""

    cells: pd.DataFrame
    genes: pd.Index
    simulated: bool


def check(params: Parameters, stages: list[str]) -> list[str]:
    """Raise :class:`ParameterError` for the first parameter the cohort cannot satisfy; return the notes."""
    data, classify, preprocess = (params.sections[name] for name in ("data", "classify", "preprocess"))
    cohort = read_cohort(params)
    notes = []
    n_genes = len(cohort.genes)
    if preprocess.n_top_genes is not None and preprocess.n_top_genes > n_genes:
        raise ParameterError(f"preprocess.n_top_genes is {preprocess.n_top_genes} but the cohort has {n_genes} "
                             f"genes: set it to at most {n_genes}, or null to keep every gene.")
    if not cohort.simulated:
        notes += _qc_notes(params, cohort)
    patient_stages = [s for s in stages if s in PATIENT_STAGES]
    if not patient_stages:
        return notes
    if data.label_key is None:
        return notes + [f"data.label_key is null: stages {', '.join(patient_stages)} need a label per patient and "
                        "are skipped; the cell-level stages run."]
    if classify.n_top_genes > n_genes:
        raise ParameterError(f"classify.n_top_genes is {classify.n_top_genes} but the cohort has {n_genes} genes: "
                             f"set it to at most {n_genes}.")
    labels = sorted(cohort.cells["label"].unique())
    if len(labels) != 2:
        raise ParameterError(f"data.label_key {data.label_key!r} has {len(labels)} labels ({labels}); the patient "
                             "classifier needs exactly two.")
    positive = classify.positive_label
    if positive is None and not cohort.simulated:
        raise ParameterError(f"classify.positive_label is null: name the label scored as positive, one of {labels}.")
    if positive is not None and positive not in labels:
        raise ParameterError(f"classify.positive_label {positive!r} is not a label of column {data.label_key!r} "
                             f"(its labels: {labels}).")
    patients = cohort.cells.drop_duplicates(["patient", "label"]).groupby("label")["patient"].nunique()
    fewest = patients.idxmin()
    if patients.min() < classify.n_folds:
        raise ParameterError(f"classify.n_folds is {classify.n_folds} but label {fewest!r} has {patients.min()} "
                             f"patient(s); each test fold needs one of each label: set n_folds to at most "
                             f"{max(2, patients.min())}" + (" or add patients." if patients.min() < 2 else "."))
    units_per_patient = cohort.cells.groupby("patient")["unit"].nunique()
    training = units_per_patient.sum() - units_per_patient.max()  # the fewest units a fold can train on
    too_large = [n for n in classify.small_cohort_sizes if n > training]
    if too_large:
        raise ParameterError(f"classify.small_cohort_sizes {too_large} exceed the units a fold may train on (at most "
                             f"about {training}); use smaller sizes.")
    return notes


def read_cohort(params: Parameters) -> Cohort:
    """The cohort's cells' patient, unit and label, and its genes: from the simulator's settings (nothing is
    simulated) or from the ``.h5ad``'s annotations (the counts are not read)."""
    data = params.sections["data"]
    if data.path is None:
        from .data import simulate as sim

        settings = params.sections["simulate"]
        n_disease = round(settings.disease_fraction * settings.n_patients)
        patient = [f"P{p + 1:03d}" for p in range(settings.n_patients)]
        label = [sim.DISEASE] * n_disease + [sim.HEALTHY] * (settings.n_patients - n_disease)
        cells = pd.DataFrame({"patient": patient, "unit": patient, "label": label})
        return Cohort(cells, pd.RangeIndex(settings.n_genes), simulated=True)
    import anndata as ad

    from .data import CohortError

    backed = ad.read_h5ad(data.path, backed="r")
    try:
        obs, genes = backed.obs, backed.var_names.copy()
    finally:
        backed.file.close()
    roles = {"patient": data.patient_key, "unit": data.sample_key or data.patient_key, "label": data.label_key}
    missing = [f"data.{name}_key {column!r}" for name, column in
               (("patient", data.patient_key), ("sample", data.sample_key), ("label", data.label_key))
               if column is not None and column not in obs]
    if missing:
        raise CohortError(f"{missing[0]} is not a column of {data.path}'s obs (columns: {list(obs.columns)}).")
    cells = pd.DataFrame({role: obs[column].astype(str).to_numpy() if column else "" for role, column in roles.items()})
    return Cohort(cells, genes, simulated=False)


def _qc_notes(params: Parameters, cohort: Cohort) -> list[str]:
    """Stage 01's cell filters applied to the counts, in chunks: what share of cells and which patients they
    would remove."""
    import h5py
    import scipy.sparse as sp
    from anndata.io import sparse_dataset

    data, preprocess = params.sections["data"], params.sections["preprocess"]
    mito = np.asarray(cohort.genes.str.upper().str.startswith(preprocess.mito_prefix.upper()))
    with h5py.File(data.path, "r") as file:
        node = file["X"] if data.counts_layer is None else file["layers"][data.counts_layer]
        matrix = sparse_dataset(node) if isinstance(node, h5py.Group) else node
        n_cells = matrix.shape[0]
        detected, mito_share = np.empty(n_cells), np.zeros(n_cells)
        for start in range(0, n_cells, _ROWS):
            block = sp.csr_matrix(matrix[start:start + _ROWS])
            block.eliminate_zeros()
            rows = slice(start, start + block.shape[0])
            detected[rows] = np.diff(block.indptr)
            total = np.asarray(block.sum(1)).ravel()
            mito_share[rows] = 100 * np.asarray(block[:, mito].sum(1)).ravel() / np.maximum(total, 1)
    removed = detected < preprocess.min_genes
    reasons = [f"min_genes {preprocess.min_genes} removes {removed.mean():.1%}"]
    if preprocess.max_pct_mito is not None:
        by_mito = mito_share > preprocess.max_pct_mito
        reasons.append(f"max_pct_mito {preprocess.max_pct_mito:g} removes {by_mito.mean():.1%} (the cohort has "
                       f"{int(mito.sum())} genes with prefix {preprocess.mito_prefix!r})")
        removed |= by_mito
    notes = []
    if removed.mean() > QC_NOTE_SHARE:
        notes.append(f"quality control would remove {removed.sum():,} of {n_cells:,} cells ({removed.mean():.1%}): "
                     + "; ".join(reasons) + ".")
    kept = pd.Series(~removed).groupby(cohort.cells["patient"].to_numpy()).sum()
    if (kept == 0).any():
        lost = list(kept.index[kept == 0])
        raise ParameterError(f"preprocess: quality control would remove every cell of patient(s) {lost[:5]}: lower "
                             "preprocess.min_genes or raise (or null) preprocess.max_pct_mito.")
    return notes
