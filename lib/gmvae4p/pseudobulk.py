"""Stage 03: TAPE-style pseudobulk samples per unit, made as one sparse (samples × cells) weight matrix.

A *unit* is a patient, or a sample when the cohort has a sample column (Kang ctrl/stim: two units per donor).
Each unit gets ``n_samples`` mixtures of ``n_cells`` cells drawn from its own cells (at the unit's own cell-type
proportions, or at random ones as TAPE draws them: :data:`PROPORTIONS`), and one whole-unit row (every cell once: what bulk RNA-seq of that unit would see). Row ``i`` of the weight matrix ``W``
says how often each cell was drawn into sample ``i``; every per-sample quantity is then one sparse product:
pseudobulk counts ``W @ X``, drawn cells per type ``W @ onehot(type)``, and the modalities of
:mod:`gmvae4p.modalities` likewise.
"""

from __future__ import annotations

import dataclasses
import functools

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm  # text bars: the same in a terminal, a notebook and a papermill log

from . import keys
from .data import obs_column

N_SAMPLES = 10
"""Mixtures per unit by default (plus one whole-unit sample)."""
N_CELLS = 500
"""Cells per mixture by default, drawn with replacement from the unit's own cells."""
SPARSE_PROB = 0.5
"""With ``dirichlet`` proportions, the default share of a unit's cell types left out of each mixture."""
PROPORTIONS = ("unit", "dirichlet")
"""How a mixture's cell-type proportions are drawn: ``unit``, the unit's own (cells drawn uniformly from all of its
typed cells, so a mixture keeps the composition that bulk RNA-seq of the unit would see, up to sampling noise);
``dirichlet``, TAPE's Dirichlet(1) over the types the unit has with ``int(K · sparse_prob)`` of them zeroed (varied
compositions for learning deconvolution, but no composition signal left for a classifier)."""


class PseudobulkError(ValueError):
    """Bad pseudobulk settings or input; the message names the parameter or column."""


@dataclasses.dataclass(frozen=True)
class MixturePlan:
    """Which cells make each pseudobulk sample.

    ``weights``: samples × cells CSR of draw counts. ``obs``: per sample ``sample_id``, ``unit``, ``patient``,
    ``sample``, ``label`` and ``batch`` (the unit's, when the cohort has them), ``n_cells``, ``kind``.
    ``cell_type_codes``: per cell, its index in ``cell_types`` (−1 for a cell without one; such cells enter
    whole-unit rows only).
    """

    weights: sp.csr_matrix
    obs: pd.DataFrame
    cell_types: list[str]
    cell_type_codes: np.ndarray

    @functools.cached_property
    def cells_per_type(self) -> np.ndarray:
        """Drawn cells of each type per sample (samples × types), from the weights (computed once)."""
        known = self.cell_type_codes >= 0
        onehot = sp.csr_matrix((np.ones(known.sum()), (np.flatnonzero(known), self.cell_type_codes[known])),
                               shape=(len(self.cell_type_codes), len(self.cell_types)))
        return np.asarray((self.weights @ onehot).todense())


def plan_mixtures(adata: ad.AnnData, *, n_samples: int = N_SAMPLES, n_cells: int = N_CELLS,
                  proportions: str = PROPORTIONS[0], sparse_prob: float = SPARSE_PROB, seed: int = 0,
                  progress: bool = True) -> MixturePlan:
    """Draw the mixtures of every unit (deterministic for a ``seed``).

    For each unit and each of its ``n_samples`` mixtures: proportions over the cell types the unit has, its own
    (``proportions="unit"``) or ~ Dirichlet(1) with ``int(K · sparse_prob)`` of its K types set to zero (never all;
    ``"dirichlet"``); integer cell counts ~ Multinomial(``n_cells``, proportions), so they sum to ``n_cells``
    exactly; cells drawn with replacement from the unit's cells of each type. Then one whole-unit row per unit.
    """
    _check_settings(n_samples=n_samples, n_cells=n_cells, proportions=proportions, sparse_prob=sparse_prob)
    unit_of_cell, units, patient_of_unit, label_of_unit, batch_of_unit = _units(adata)
    type_column = obs_column(adata, "cell_type")
    types = pd.Categorical(adata.obs[type_column])
    codes = np.asarray(types.codes, dtype=np.int64)
    _check_units_have_typed_cells(unit_of_cell, codes, units, type_column)
    rng = np.random.default_rng(seed)
    rows, cols, obs = [], [], []
    order = np.argsort(unit_of_cell, kind="stable")
    bounds = np.searchsorted(unit_of_cell[order], np.arange(len(units) + 1))
    for u in tqdm(range(len(units)), desc="Mixtures per unit", disable=not progress):
        cells = order[bounds[u]:bounds[u + 1]]
        by_type = [cells[codes[cells] == k] for k in range(len(types.categories))]
        present = [k for k, c in enumerate(by_type) if len(c)]
        counts = rng.multinomial(n_cells, _mixture_proportions([len(by_type[k]) for k in present], n_samples,
                                                               proportions, sparse_prob, rng))
        first_row = len(obs)
        for j, k in enumerate(present):
            drawn = by_type[k][rng.integers(0, len(by_type[k]), counts[:, j].sum())]
            rows.append(np.repeat(first_row + np.arange(n_samples), counts[:, j]))
            cols.append(drawn)
        obs += [(f"{units[u]}_mix{i}", units[u], patient_of_unit[u], label_of_unit[u], batch_of_unit[u], n_cells,
                 keys.MIXTURE) for i in range(n_samples)]
    for u in range(len(units)):
        cells = order[bounds[u]:bounds[u + 1]]
        rows.append(np.full(len(cells), len(obs)))
        cols.append(cells)
        obs.append((f"{units[u]}_whole", units[u], patient_of_unit[u], label_of_unit[u], batch_of_unit[u], len(cells),
                    keys.WHOLE))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    weights = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(obs), adata.n_obs))
    weights.sum_duplicates()
    frame = pd.DataFrame(obs, columns=["sample_id", "unit", "patient", "label", "batch", "n_cells", "kind"])
    frame["n_cells"] = np.asarray(weights.sum(1)).ravel().astype(np.int64)  # as drawn, so checks can trust it
    frame = frame.drop(columns=[c for c, per_unit in (("label", label_of_unit), ("batch", batch_of_unit))
                                if per_unit[0] is None])
    if obs_column(adata, "sample"):  # units are the cohort's samples
        frame.insert(3, "sample", frame["unit"])
    frame.index = frame["sample_id"].to_numpy()
    for column in ("unit", "patient", "kind") + tuple(c for c in ("sample", "label", "batch") if c in frame):
        frame[column] = frame[column].astype("category")
    return MixturePlan(weights=weights, obs=frame, cell_types=list(types.categories), cell_type_codes=codes)


def pseudobulk_counts(adata: ad.AnnData, plan: MixturePlan) -> np.ndarray:
    """Summed raw counts of each sample's drawn cells, ``W @ adata.layers["counts"]`` (dense float32: a sum of
    hundreds of cells is mostly non-zero)."""
    counts = _counts(adata)
    identity = np.arange(counts.shape[1], dtype=np.int64)
    sums = weighted_sums(plan, counts, columns=identity, per_type=False)
    return sums[:, 0, :].astype(np.float32)


def weighted_sums(plan: MixturePlan, values: sp.csr_matrix | np.ndarray, *, columns: np.ndarray,
                  per_type: bool = True, log_cpm_library: np.ndarray | None = None) -> np.ndarray:
    """Samples × types × ``len(columns)`` sums of ``values[cell, columns]`` over each sample's drawn cells, times
    their draw counts: the product ``W @ values`` split by the cells' types (``per_type``; else one block), in one
    parallel pass over the weights. ``log_cpm_library``: per-cell library sizes; each value is then taken as
    log1p(value · 10⁶ / library) (sparse values only)."""
    n_blocks = len(plan.cell_types) if per_type else 1
    block = plan.cell_type_codes if per_type else np.zeros(len(plan.cell_type_codes), dtype=np.int64)
    out = np.zeros((plan.weights.shape[0], n_blocks, len(columns)))
    weights = plan.weights
    if sp.issparse(values):
        position = np.full(values.shape[1], -1, dtype=np.int64)  # a value's column → its place in the output
        position[columns] = np.arange(len(columns))
        indptr, indices, data = values.indptr, values.indices, values.data
        if len(columns) < values.shape[1]:  # cells are drawn many times: cut the matrix to the columns once
            indptr, indices, data = _select_columns(indptr, indices, data, position)
            position = np.arange(len(columns), dtype=np.int64)
        scale = (1e6 / np.maximum(log_cpm_library, 1.0)) if log_cpm_library is not None else np.ones(0)
        _sparse_sums(weights.indptr, weights.indices, weights.data, indptr, indices, data, position, block, scale,
                     log_cpm_library is not None, out)
    else:
        _dense_sums(weights.indptr, weights.indices, weights.data, np.ascontiguousarray(values[:, columns]),
                    block, out)
    return out


@numba.njit(parallel=True, cache=True)
def _sparse_sums(w_indptr, w_cells, w_draws, x_indptr, x_columns, x_values, position, block, scale, log_cpm, out):
    for sample in numba.prange(len(w_indptr) - 1):  # one sample per thread: no two threads write a row
        for e in range(w_indptr[sample], w_indptr[sample + 1]):
            cell, draws = w_cells[e], w_draws[e]
            if block[cell] < 0:
                continue
            for f in range(x_indptr[cell], x_indptr[cell + 1]):
                j = position[x_columns[f]]
                if j >= 0:
                    value = np.log1p(x_values[f] * scale[cell]) if log_cpm else x_values[f]
                    out[sample, block[cell], j] += draws * value


@numba.njit(parallel=True, cache=True)
def _select_columns(indptr, indices, data, position):
    """The CSR restricted to columns with ``position`` ≥ 0, renumbered to those positions."""
    n_rows = len(indptr) - 1
    kept = np.zeros(n_rows + 1, dtype=np.int64)
    for row in numba.prange(n_rows):
        for f in range(indptr[row], indptr[row + 1]):
            if position[indices[f]] >= 0:
                kept[row + 1] += 1
    new_indptr = np.cumsum(kept)
    new_indices = np.empty(new_indptr[-1], dtype=np.int64)
    new_data = np.empty(new_indptr[-1], dtype=data.dtype)
    for row in numba.prange(n_rows):
        k = new_indptr[row]
        for f in range(indptr[row], indptr[row + 1]):
            j = position[indices[f]]
            if j >= 0:
                new_indices[k], new_data[k] = j, data[f]
                k += 1
    return new_indptr, new_indices, new_data


@numba.njit(parallel=True, cache=True)
def _dense_sums(w_indptr, w_cells, w_draws, values, block, out):
    for sample in numba.prange(len(w_indptr) - 1):
        for e in range(w_indptr[sample], w_indptr[sample + 1]):
            cell = w_cells[e]
            if block[cell] >= 0:
                out[sample, block[cell], :] += w_draws[e] * values[cell]


def log_cpm(counts: sp.spmatrix | np.ndarray) -> np.ndarray:
    """log1p of counts per million, per row (dense float32)."""
    dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    totals = np.maximum(dense.sum(1, keepdims=True), 1.0)
    return np.log1p(dense * (1e6 / totals)).astype(np.float32)


def _units(adata):
    """Per cell, its unit's index; unit names; and per unit its patient, label (None without a label) and batch,
    the processing batch of most of its cells (None where the cohort names no batch key)."""
    patient_column = obs_column(adata, "patient")
    unit_column = obs_column(adata, "sample") or patient_column
    label_column = obs_column(adata, "label")
    missing = adata.obs[unit_column].isna()
    if missing.any():
        raise PseudobulkError(f"obs[{unit_column!r}] is missing for {int(missing.sum())} cells: every cell needs "
                              "its unit.")
    unit = pd.Categorical(adata.obs[unit_column].astype(str))
    unit = unit.remove_unused_categories()
    first = pd.Series(np.arange(adata.n_obs)).groupby(np.asarray(unit.codes)).first().to_numpy()
    patients = adata.obs[patient_column].astype(str).to_numpy()[first]
    labels = adata.obs[label_column].astype(str).to_numpy()[first] if label_column else [None] * len(first)
    batch_column = obs_column(adata, "batch")
    batches = [None] * len(first)
    if batch_column:
        batch = pd.Categorical(adata.obs[batch_column].astype(str))
        cells_per_batch = sp.csr_matrix((np.ones(adata.n_obs), (unit.codes, batch.codes)),
                                        shape=(len(first), len(batch.categories))).toarray()
        batches = list(np.asarray(batch.categories)[cells_per_batch.argmax(1)])
    return np.asarray(unit.codes, dtype=np.int64), list(unit.categories), list(patients), list(labels), batches


def _check_units_have_typed_cells(unit_of_cell, codes, units, type_column):
    typed = np.bincount(unit_of_cell[codes >= 0], minlength=len(units))
    empty = [units[u] for u in np.flatnonzero(typed == 0)]
    if empty:
        raise PseudobulkError(f"unit(s) {', '.join(empty[:5])} have no cells with a cell type in "
                              f"obs[{type_column!r}]: no mixture can be drawn from them.")


def _mixture_proportions(cells_per_type: list[int], n_samples: int, proportions: str, sparse_prob: float,
                         rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` × types proportions over a unit's present types (:func:`plan_mixtures`)."""
    if proportions == "unit":
        return np.tile(np.asarray(cells_per_type, dtype=float) / sum(cells_per_type), (n_samples, 1))
    drawn = rng.dirichlet(np.ones(len(cells_per_type)), size=n_samples)
    n_zero = min(int(len(cells_per_type) * sparse_prob), len(cells_per_type) - 1)
    if n_zero:
        zeroed = np.argsort(rng.random(drawn.shape), axis=1)[:, :n_zero]
        np.put_along_axis(drawn, zeroed, 0.0, axis=1)
        drawn /= drawn.sum(1, keepdims=True)
    return drawn


def _check_settings(*, n_samples, n_cells, proportions, sparse_prob):
    for name, value in (("n_samples", n_samples), ("n_cells", n_cells)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise PseudobulkError(f"{name} must be an integer of at least 1, not {value!r}.")
    if proportions not in PROPORTIONS:
        raise PseudobulkError(f"proportions must be one of {list(PROPORTIONS)}, not {proportions!r}.")
    if not 0 <= sparse_prob < 1:
        raise PseudobulkError(f"sparse_prob must be in [0, 1), not {sparse_prob!r}.")


def _counts(adata):
    if keys.COUNTS not in adata.layers:
        raise PseudobulkError(f"adata.layers[{keys.COUNTS!r}] is missing: run stage 01 (preprocessing) first.")
    counts = adata.layers[keys.COUNTS]
    return counts.tocsr() if sp.issparse(counts) else sp.csr_matrix(counts)


def to_anndata(adata: ad.AnnData, plan: MixturePlan, counts: np.ndarray, *, obsm: dict | None = None,
               uns: dict | None = None) -> ad.AnnData:
    """One AnnData of samples: ``X`` log-CPM, ``layers["counts"]``, ``obsm["proportions"]`` (realized mixture
    fractions) and ``obsm["composition"]`` (the unit's true cell-type fractions), both with one column per cell type,
    plus ``obsm`` given (modalities) and ``uns["pseudobulk"]``."""
    drawn = plan.cells_per_type
    proportions = drawn / np.maximum(drawn.sum(1, keepdims=True), 1)
    whole = (plan.obs[keys.KIND] == keys.WHOLE).to_numpy()
    unit_composition = pd.DataFrame(proportions[whole], index=plan.obs["unit"].to_numpy()[whole])
    composition = unit_composition.loc[plan.obs["unit"].to_numpy()].to_numpy()
    result = ad.AnnData(X=log_cpm(counts), obs=plan.obs.copy(), var=pd.DataFrame(index=adata.var_names.copy()))
    result.layers[keys.COUNTS] = counts
    result.obsm[keys.PROPORTIONS] = pd.DataFrame(proportions, index=result.obs_names, columns=plan.cell_types)
    result.obsm[keys.COMPOSITION] = pd.DataFrame(composition, index=result.obs_names, columns=plan.cell_types)
    for key, value in (obsm or {}).items():
        result.obsm[key] = value
    result.uns[keys.UNS] = dict(adata.uns.get(keys.UNS, {}))
    result.uns[keys.UNS_PSEUDOBULK] = {"cell_types": plan.cell_types, **(uns or {})}
    return result
