"""Simulated patient cohort: PBMC-like cell types, a disease program that scales with a latent activity.

Each patient has a binary label and a latent disease activity drawn from overlapping label-dependent normals, so
even a perfect model cannot reach AUC 1; the AUC of the true activity (the oracle) is recorded. Expression of a
cell is negative binomial around ``library × profile``, where the profile of a (patient, cell type) combines a
gene baseline, cell-type markers, a donor effect, a processing-batch effect and the disease program (in chosen
cell types, scaled by activity × ``effect_size``). Composition is Dirichlet per patient, optionally shifted with
activity. Counts are drawn straight into CSR (see :func:`_sample_nb_csr`); no cells × genes array is ever made.

Importable with numpy, scipy and pandas alone (the GPU benchmarks use it where anndata is not installed).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from .. import keys

PATIENT, CELL_TYPE, LABEL, BATCH = "ind_cov", "ct_cov", "disease_cov", "batch_cov"
"""The lupus cohort's column names, so one parameters file serves the simulated and the real cohort."""
HEALTHY, DISEASE = "healthy", "SLE"

CELL_TYPES = ("CD4 T", "CD8 T", "NK", "B", "CD14 Mono", "FCGR3A Mono", "cDC", "pDC")
BASE_COMPOSITION = (0.35, 0.15, 0.10, 0.12, 0.17, 0.06, 0.03, 0.02)
NAMED_MARKERS = {
    "CD4 T": ("CD3E", "CD3D", "IL7R", "CD4", "CCR7"),
    "CD8 T": ("CD3E", "CD3D", "CD8A", "CD8B", "GZMK"),
    "NK": ("NKG7", "GNLY", "KLRD1", "PRF1"),
    "B": ("MS4A1", "CD79A", "CD79B", "CD19"),
    "CD14 Mono": ("CD14", "LYZ", "S100A8", "S100A9"),
    "FCGR3A Mono": ("FCGR3A", "MS4A7", "LST1"),
    "cDC": ("FCER1A", "CST3", "CLEC10A"),
    "pDC": ("LILRA4", "IL3RA", "CLEC4C"),
}
# Interferon-stimulated genes, the best-known lupus signature, name the first disease-program genes.
INTERFERON_GENES = ("IFI27", "IFI44L", "ISG15", "MX1", "RSAD2", "IFIT1", "IFIT3", "OAS1", "OAS2", "IFI6",
                    "HERC5", "EPSTI1", "LY6E", "XAF1", "SIGLEC1", "USP18")
MITO_GENES = ("MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3", "MT-ND4L",
              "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB")
MITO_SHARE, LOW_QUALITY_MITO_SHARE, LOW_QUALITY_LIBRARY_FACTOR = 0.03, 0.4, 0.25
GENE_BASELINE_SD, DISPERSION_SD = 1.5, 0.3


@dataclasses.dataclass
class SimulatedCohort:
    """Counts (CSR, cells × genes, float32 integers), cell annotations, gene names and the ground truth."""

    counts: sp.csr_matrix
    obs: pd.DataFrame
    var_names: pd.Index
    truth: dict

    def to_anndata(self):
        """The cohort as an AnnData with the truth in ``uns["simulation"]``."""
        import anndata as ad

        adata = ad.AnnData(X=self.counts, obs=self.obs, var=pd.DataFrame(index=self.var_names))
        adata.var["disease_gene"] = adata.var_names.isin(self.truth["disease_genes"])
        adata.uns[keys.UNS_SIMULATION] = self.truth
        return adata


def simulate_cohort(
    *,
    n_patients: int = 60,
    n_cells: int = 12_000,
    n_genes: int = 2_000,
    n_cell_types: int = 8,
    disease_fraction: float = 0.5,
    effect_size: float = 0.6,
    activity_sd: float = 0.6,
    n_disease_genes: int = 40,
    disease_cell_types: list[str] = ("CD14 Mono", "B", "CD4 T"),
    second_program_cell_types: list[str] = (),
    composition_shift: float = 0.3,
    composition_shift_cell_types: list[str] = ("CD14 Mono",),
    composition_concentration: float = 30.0,
    n_marker_genes: int = 25,
    marker_lfc: float = 2.0,
    donor_effect_sd: float = 0.15,
    n_batches: int = 2,
    batch_effect_sd: float = 0.1,
    library_size: float = 2_000.0,
    library_size_sd: float = 0.35,
    dispersion: float = 3.0,
    zero_inflation: float = 0.0,
    low_quality_fraction: float = 0.02,
    n_ligand_receptor_genes: int = 200,
    seed: int = 0,
    n_threads: int | None = None,
) -> SimulatedCohort:
    """Simulate a cohort of patients' PBMC-like cells with a binary label.

    Parameters
    ----------
    n_patients, n_cells, n_genes
        Cohort size; cells are spread over patients multinomially.
    n_cell_types
        The first ``n_cell_types`` of :data:`CELL_TYPES` (more get generic names ``type9`` …).
    disease_fraction
        Fraction of patients labelled :data:`DISEASE`.
    effect_size
        Log fold change of the disease program per unit of activity; 0 gives a null cohort.
    activity_sd
        Spread of the latent activity: healthy ~ N(0, sd), disease ~ N(1, sd); sets the oracle AUC.
    n_disease_genes, disease_cell_types
        The disease program: which genes (weights ~ U(0.5, 1.5)) in which cell types.
    second_program_cell_types
        When not empty, a second disease program of ``n_disease_genes`` other genes in these cell types, driven by a
        second activity drawn like the first and independently of it: a disease with two axes, which one program
        score cannot hold. The oracle reads the sum of the two activities.
    composition_shift, composition_shift_cell_types
        Log change of those types' Dirichlet concentration per unit of activity.
    composition_concentration
        Total Dirichlet concentration; smaller means more patient-to-patient variation in composition.
    n_marker_genes, marker_lfc
        Marker program of each cell type: that many genes up by ``marker_lfc`` (natural log).
    donor_effect_sd, n_batches, batch_effect_sd
        Gene-wise random effects of donor and of processing batch. Patients are dealt to batches at random but evenly
        within each label, as in a designed study: a chance excess of patients of one label in a batch would let the
        batch effect predict the label, and a cohort without a disease effect would not be a null.
    library_size, library_size_sd
        Log-normal library size: median and sd of its log.
    dispersion, zero_inflation
        Negative-binomial inverse dispersion (gene-wise, log-normal around this) and the zero-inflation probability.
    low_quality_fraction
        Cells with a high mitochondrial share and a small library, for QC to remove.
    n_ligand_receptor_genes
        About this many background genes are named after whole ligand–receptor pairs of liana's consensus resource
        (:func:`~gmvae4p.data.ligand_receptor_genes`), so that the communication modality has pairs to score; their
        expression is background like any other. 0 names none (and needs no liana).
    seed
        The result depends on the seed alone, not on ``n_threads``.
    n_threads
        Threads drawing counts (numpy releases the GIL while sampling); default: all cores.
    """
    disease_cell_types, composition_shift_cell_types = list(disease_cell_types), list(composition_shift_cell_types)
    second_program_cell_types = list(second_program_cell_types)
    cell_types = [*CELL_TYPES[:n_cell_types], *(f"type{k + 1}" for k in range(len(CELL_TYPES), n_cell_types))]
    _check_arguments(locals(), cell_types)
    rng = np.random.default_rng(seed)

    genes = _gene_layout(cell_types, n_genes, n_marker_genes, n_disease_genes, n_ligand_receptor_genes, rng,
                         second_program=bool(second_program_cell_types))
    n_disease = round(disease_fraction * n_patients)
    is_disease = rng.permutation(np.arange(n_patients) < n_disease)
    activity = rng.normal(is_disease.astype(float), activity_sd)
    batch_of_patient = _balanced_batches(rng.permutation(n_patients), is_disease, n_batches)

    baseline = rng.normal(0.0, GENE_BASELINE_SD, n_genes)
    baseline[genes.mito] = -np.inf  # the mitochondrial share is set apart, below
    markers = np.zeros((n_cell_types, n_genes))
    for k, idx in enumerate(genes.markers):
        markers[k, idx] = marker_lfc
    program = np.zeros((n_cell_types, n_genes))
    program[np.isin(cell_types, disease_cell_types)] += genes.disease_weights
    # the second program's draws come last, so a cohort without one is the same as before it existed
    second_program, second_activity = np.zeros((n_cell_types, n_genes)), np.zeros(n_patients)
    if second_program_cell_types:
        second_program[np.isin(cell_types, second_program_cell_types)] += genes.second_weights
        second_activity = rng.normal(is_disease.astype(float), activity_sd)
    donor = rng.normal(0.0, donor_effect_sd, (n_patients, n_genes))
    batch = rng.normal(0.0, batch_effect_sd, (n_batches, n_genes))
    theta = dispersion * np.exp(rng.normal(0.0, DISPERSION_SD, n_genes))
    mito_profile = np.zeros(n_genes)
    mito_profile[genes.mito] = rng.dirichlet(np.full(len(genes.mito), 5.0))

    composition_base = np.array([*BASE_COMPOSITION, *[0.02] * (n_cell_types - len(BASE_COMPOSITION))])
    composition_base = composition_base[:n_cell_types] / composition_base[:n_cell_types].sum()
    shifted = np.isin(cell_types, composition_shift_cell_types)
    cells_per_patient = rng.multinomial(n_cells, np.full(n_patients, 1.0 / n_patients))

    # One group = cells sharing an expression profile: (patient, cell type, low quality or not).
    groups = []
    for p in range(n_patients):
        alpha = composition_concentration * composition_base * np.exp(composition_shift * activity[p] * shifted)
        per_type = rng.multinomial(cells_per_patient[p], rng.dirichlet(alpha))
        for k in range(n_cell_types):
            n_low = rng.binomial(per_type[k], low_quality_fraction)
            groups += [(p, k, False, per_type[k] - n_low), (p, k, True, n_low)]
    groups = [g for g in groups if g[3] > 0]
    group_seeds = np.random.SeedSequence(seed).spawn(len(groups))

    def draw(i):
        p, k, low_quality, n = groups[i]
        group_rng = np.random.default_rng(group_seeds[i])
        logits = baseline + markers[k] + donor[p] + batch[batch_of_patient[p]] \
            + effect_size * (activity[p] * program[k] + second_activity[p] * second_program[k])
        expressed = np.exp(logits - logits.max())
        mito_share = LOW_QUALITY_MITO_SHARE if low_quality else MITO_SHARE
        profile = (1 - mito_share) * expressed / expressed.sum() + mito_share * mito_profile
        library = library_size * np.exp(group_rng.normal(0.0, library_size_sd, n))
        if low_quality:
            library *= LOW_QUALITY_LIBRARY_FACTOR
        return _sample_nb_csr(group_rng, library, profile, theta, zero_inflation)

    with ThreadPoolExecutor(n_threads or os.cpu_count()) as pool:
        pieces = list(pool.map(draw, range(len(groups))))
    counts = _stack_csr(pieces, n_genes)
    _release_freed_memory()

    patient_ids = np.array([f"P{p + 1:03d}" for p in range(n_patients)])
    group_patient, group_type, group_low, group_n = (np.array(col) for col in zip(*groups))
    patient_of_cell = np.repeat(group_patient, group_n)
    type_of_cell = np.repeat(group_type, group_n)
    labels = np.where(is_disease, DISEASE, HEALTHY)
    obs = pd.DataFrame(
        {
            PATIENT: pd.Categorical(patient_ids[patient_of_cell], categories=patient_ids),
            CELL_TYPE: pd.Categorical(np.asarray(cell_types)[type_of_cell], categories=cell_types),
            LABEL: pd.Categorical(labels[patient_of_cell], categories=[HEALTHY, DISEASE]),
            BATCH: pd.Categorical([f"batch{b + 1}" for b in batch_of_patient[patient_of_cell]]),
            keys.LOW_QUALITY: np.repeat(group_low, group_n).astype(bool),
        },
        index=pd.Index([f"cell{i}" for i in range(counts.shape[0])]),
    )
    truth = {
        "parameters": {k: v for k, v in _arguments(locals()).items() if v is not None},
        "disease_genes": genes.names[np.r_[genes.disease, genes.second]],
        "disease_gene_weights": np.r_[genes.disease_weights[genes.disease], genes.second_weights[genes.second]],
        "disease_cell_types": np.asarray(disease_cell_types, dtype=str),
        "composition_shift_cell_types": np.asarray(composition_shift_cell_types, dtype=str),
        "marker_genes": {t: genes.names[idx] for t, idx in zip(cell_types, genes.markers)},
        "effect_size": float(effect_size),
        "patients": patient_ids,
        "patient_label": labels,
        "patient_activity": activity + second_activity,
        "patient_batch": np.array([f"batch{b + 1}" for b in batch_of_patient]),
        "positive_label": DISEASE,
        "oracle_auc": auc(activity + second_activity, is_disease),
    }
    return SimulatedCohort(counts=counts, obs=obs, var_names=pd.Index(genes.names), truth=truth)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC of ``scores`` for the boolean ``positive`` (Mann–Whitney U / n₁n₀; ties count half)."""
    positive = np.asarray(positive, bool)
    ranks = stats.rankdata(scores)
    n1, n0 = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclasses.dataclass
class _Genes:
    names: np.ndarray
    markers: list[np.ndarray]
    disease: np.ndarray
    disease_weights: np.ndarray  # per gene, 0 outside the program
    mito: np.ndarray
    second: np.ndarray  # the second program's genes (empty without one)
    second_weights: np.ndarray


def _balanced_batches(order: np.ndarray, is_disease: np.ndarray, n_batches: int) -> np.ndarray:
    """Each patient's batch: the patients of each label in the random ``order``, dealt to the batches in turn, the
    second label going on where the first stopped (so the batches' sizes differ by at most one as well)."""
    batch_of_patient = np.empty(len(order), dtype=int)
    dealt = 0
    for label in (is_disease, ~is_disease):
        members = order[label[order]]
        batch_of_patient[members] = (dealt + np.arange(len(members))) % n_batches
        dealt += len(members)
    return batch_of_patient


def _gene_layout(cell_types, n_genes, n_marker_genes, n_disease_genes, n_ligand_receptor_genes, rng, *,
                 second_program: bool = False) -> _Genes:
    """Named markers, interferon and mitochondrial genes first, then ligand–receptor symbols, then generic
    ``G00001`` … (the latter two are background genes alike: names do not change what is drawn)."""
    named = list(dict.fromkeys(g for t in cell_types for g in NAMED_MARKERS.get(t, ())))
    named += list(INTERFERON_GENES[:n_disease_genes]) + list(MITO_GENES)
    background = []
    if n_ligand_receptor_genes:
        from .ligand_receptor import ligand_receptor_genes  # reads liana's resource: only when asked for
        taken = set(named)
        background = [g for g in ligand_receptor_genes(n_ligand_receptor_genes + len(taken)) if g not in taken]
        background = background[:max(0, min(n_ligand_receptor_genes, n_genes - len(named)))]
    background += [f"G{i:05d}" for i in range(1, n_genes - len(named) - len(background) + 1)]
    names = np.array(named + background)
    index = {g: i for i, g in enumerate(names)}
    generic = iter(rng.permutation(np.arange(len(named), n_genes)))
    disease = [index[g] for g in INTERFERON_GENES[:n_disease_genes]]
    disease += [next(generic) for _ in range(n_disease_genes - len(disease))]
    markers = []
    for t in cell_types:
        own = [index[g] for g in NAMED_MARKERS.get(t, ())][:n_marker_genes]
        markers.append(np.array(own + [next(generic) for _ in range(n_marker_genes - len(own))], dtype=int))
    weights = np.zeros(n_genes)
    weights[disease] = rng.uniform(0.5, 1.5, len(disease))
    mito = np.array([index[g] for g in MITO_GENES])
    second = np.array([next(generic) for _ in range(n_disease_genes)] if second_program else [], dtype=int)
    second_weights = np.zeros(n_genes)
    if second_program:
        second_weights[second] = rng.uniform(0.5, 1.5, len(second))
    return _Genes(names=names, markers=markers, disease=np.array(disease, dtype=int), disease_weights=weights,
                  mito=mito, second=second, second_weights=second_weights)


def _sample_nb_csr(rng, library, profile, theta, zero_inflation):
    """Zero-inflated NB(mean = library[c] · profile[g], inverse dispersion theta[g]) counts as CSR pieces.

    Genes whose mean can exceed 1 in some cell are drawn densely (gamma–Poisson). For the others, the cells a gene
    is non-zero in are found without touching the zeros: Poisson(mean) ≥ 1 happens with probability
    1 − e^(−mean), which bounds the NB's 1 − P₀ from above, so candidates come from ``Poisson(library · Σ profile)``
    categorical draws per cell (a Poisson process split over genes), each kept with probability
    (1 − π)(1 − P₀_NB) / (1 − e^(−mean)) and given a zero-truncated NB value. The result is exactly ZINB.

    Returns ``(nnz per cell, column indices, values)`` with sorted columns within each cell.
    """
    n_cells, n_genes = library.size, profile.size
    dense_genes = np.flatnonzero(profile * library.max() > 1.0)
    mean = library[:, None] * profile[dense_genes]
    shape = theta[dense_genes]
    dense = rng.poisson(mean * rng.gamma(shape, 1.0 / shape, size=mean.shape))
    if zero_inflation:
        dense[rng.random(dense.shape) < zero_inflation] = 0
    dense_rows, dense_cols = np.nonzero(dense)
    dense_values = dense[dense_rows, dense_cols]

    sparse_genes = np.flatnonzero(profile * library.max() <= 1.0)
    weights = profile[sparse_genes]
    total = weights.sum()
    n_draws = rng.poisson(library * total)
    cumulative = np.cumsum(weights) / total
    picks = np.minimum(np.searchsorted(cumulative, rng.random(n_draws.sum()), side="right"), len(sparse_genes) - 1)
    # sort + drop repeats, not np.unique: numpy 2's unique hashes first and is far slower on these keys
    cell_gene = np.sort(np.repeat(np.arange(n_cells, dtype=np.int64), n_draws) * n_genes + sparse_genes[picks])
    cell_gene = cell_gene[np.r_[True, cell_gene[1:] != cell_gene[:-1]]] if cell_gene.size else cell_gene
    rows, cols = np.divmod(cell_gene, n_genes)
    mean = library[rows] * profile[cols]
    shape = theta[cols]
    p_zero = (shape / (shape + mean)) ** shape
    keep = rng.random(mean.size) * -np.expm1(-mean) < (1 - zero_inflation) * (1 - p_zero)
    values = _zero_truncated_nb(rng, mean[keep], shape[keep], p_zero[keep])

    rows = np.concatenate([dense_rows, rows[keep]])
    cols = np.concatenate([dense_genes[dense_cols], cols[keep]])
    order = np.argsort(rows * n_genes + cols, kind="stable")
    return (np.bincount(rows, minlength=n_cells), cols[order].astype(np.int32),
            np.concatenate([dense_values, values])[order].astype(np.float32))


def _zero_truncated_nb(rng, mean, theta, p_zero):
    """One draw of NB(mean, theta) conditioned on > 0 per entry, by inverse CDF (P(k+1)/P(k) = (k+θ)/(k+1)·r)."""
    ratio = mean / (mean + theta)
    target = rng.random(mean.size) * (1 - p_zero)
    k = np.ones(mean.size, dtype=np.int64)
    p_k = p_zero * theta * ratio
    cdf = p_k.copy()
    active = np.flatnonzero(target > cdf)
    while active.size:
        p_k[active] *= (k[active] + theta[active]) / (k[active] + 1) * ratio[active]
        k[active] += 1
        cdf[active] += p_k[active]
        active = active[(target[active] > cdf[active]) & (p_k[active] > 0)]  # p_k underflow ends a tail
    return k


def _stack_csr(pieces: list, n_genes: int) -> sp.csr_matrix:
    """One CSR from the groups' pieces, freeing each piece once copied (untouched pages of ``np.empty`` cost
    nothing, so the peak stays near one copy of the matrix rather than two)."""
    nnz_per_cell = np.concatenate([p[0] for p in pieces])
    indptr = np.zeros(nnz_per_cell.size + 1, dtype=np.int64)
    np.cumsum(nnz_per_cell, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    start = 0
    for i, (_, piece_indices, piece_data) in enumerate(pieces):
        pieces[i] = None
        indices[start:start + piece_indices.size] = piece_indices
        data[start:start + piece_data.size] = piece_data
        start += piece_indices.size
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(nnz_per_cell.size, n_genes))


def _release_freed_memory() -> None:
    """Hand freed heap back to the operating system: the sampling threads' pieces, freed while stacked, otherwise stay
    in glibc's per-thread arenas, about one more matrix of resident memory (1.4 GB of 3.1 GB at a quarter of the
    lupus shape) that preprocessing then adds to. A no-op where the C library is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _arguments(scope: dict) -> dict:
    names = simulate_cohort.__code__.co_varnames[: simulate_cohort.__code__.co_kwonlyargcount]
    return {name: (list(scope[name]) if isinstance(scope[name], tuple) else scope[name]) for name in names
            if name != "n_threads"}


def _check_arguments(scope: dict, cell_types: list[str]) -> None:
    a = _arguments(scope)
    positive = ["n_patients", "n_cells", "n_genes", "n_cell_types", "n_batches", "library_size",
                "composition_concentration", "dispersion"]
    for name in positive:
        if not a[name] > 0:
            raise ValueError(f"simulate: {name} must be positive, not {a[name]!r}.")
    for name in ["activity_sd", "donor_effect_sd", "batch_effect_sd", "library_size_sd", "n_disease_genes",
                 "effect_size", "n_marker_genes", "n_ligand_receptor_genes"]:
        if a[name] < 0:
            raise ValueError(f"simulate: {name} must not be negative, not {a[name]!r}.")
    for name in ["zero_inflation", "low_quality_fraction"]:
        if not 0 <= a[name] < 1:
            raise ValueError(f"simulate: {name} must lie in [0, 1), not {a[name]!r}.")
    if not 0 < a["disease_fraction"] < 1:
        raise ValueError(f"simulate: disease_fraction must lie in (0, 1), not {a['disease_fraction']!r}.")
    if a["n_cell_types"] < 2:
        raise ValueError("simulate: n_cell_types must be at least 2.")
    n_disease = round(a["disease_fraction"] * a["n_patients"])
    if not 0 < n_disease < a["n_patients"]:
        raise ValueError(f"simulate: n_patients={a['n_patients']} with disease_fraction={a['disease_fraction']} "
                         "leaves a class empty; add patients.")
    if a["n_cells"] < 20 * a["n_patients"]:
        raise ValueError(f"simulate: n_cells={a['n_cells']} gives fewer than 20 cells per patient; raise n_cells.")
    for name in ["disease_cell_types", "second_program_cell_types", "composition_shift_cell_types"]:
        unknown = sorted(set(a[name]) - set(cell_types))
        if unknown:
            raise ValueError(f"simulate: {name} names {unknown}, not among the simulated cell types {cell_types}.")
    n_named = len({g for t in cell_types for g in NAMED_MARKERS.get(t, ())}) + len(MITO_GENES)
    needed = n_named + min(a["n_disease_genes"], len(INTERFERON_GENES)) + a["n_cell_types"] * a["n_marker_genes"] \
        + max(0, a["n_disease_genes"] - len(INTERFERON_GENES)) + (a["n_disease_genes"] if a["second_program_cell_types"]
                                                                   else 0)
    if a["n_genes"] < needed:
        raise ValueError(f"simulate: n_genes={a['n_genes']} is too few for the markers and disease program "
                         f"(at least {needed}); raise n_genes or lower n_marker_genes / n_disease_genes.")
