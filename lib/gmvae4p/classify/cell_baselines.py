"""Baselines that read a unit's cells (stage 02's ``gmvae.h5ad``) rather than its pseudobulk samples.

- ``gmvae_embedding_logistic_regression``: the scVI + logistic regression recipe with the GMVAE as the embedding:
  each unit is the mean ``X_gmvae`` of its cells.
- ``prototype_cells`` (ProtoCell4P-style): cells' GMVAE z-scores and cell types → learned prototypes, pooled per
  unit with learned per-cell importance (:class:`~gmvae4p.classify.module.PrototypeModule`); trained on random draws
  of ``CELLS_PER_DRAW`` cells per unit, stopped early on at most ``VALIDATION_CELLS`` cells per validation unit,
  predicted from all of a unit's cells.
- ``per_type_networks`` (singleDeep-style): per unit and cell type the mean log-normalized expression of its cells;
  one small network per type; the unit's call is the vote over its types
  (:class:`~gmvae4p.classify.module.PerTypeModule`).

Per fold, genes, scalers and networks are fitted on the training units (the networks stop early on the validation
units); the test units are only predicted. The GMVAE itself was trained once, before cross-validation, without
phenotype labels (as the pseudobulk modalities were).
"""

from __future__ import annotations

import dataclasses
import warnings

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import keys
from ..data import obs_column, row_blocks
from .config import N_TOP_GENES, ClassifierConfig
from .cv import Fold, most_variable
from .module import PerTypeModule, PrototypeModule
from .training import fit

CELL_BASELINES = ("gmvae_embedding_logistic_regression", "prototype_cells", "per_type_networks")
CELLS_PER_DRAW = 256
VALIDATION_CELLS = 1024
"""``prototype_cells`` scores each validation unit on a fixed draw of at most this many of its cells (drawn once per
fit): early stopping needs a stable loss, and every cell of every validation unit at each epoch would cost several
times the epoch's training on cohorts of thousands of cells per unit. Test units are predicted from all their cells."""
UNITS_PER_STEP = 8
"""The cell-level networks see one row per unit, tens of them per fold: 8 units per step gives several steps per
epoch (``batch_size``, sized for pseudobulk samples, would give one and stop training after a few updates)."""


@dataclasses.dataclass
class CellData:
    """What the cell-level baselines read, per cell: its unit's index in ``units``, its cell-type index in
    ``cell_types`` (−1 when unannotated), ``X_gmvae`` and ``X_gmvae_zscore``; and per unit and type the mean
    log-normalized expression (``type_means``, units × types × genes, made once from ``expression``, which is not
    kept: the workers of :mod:`~gmvae4p.classify.workers` each receive a copy of this object)."""

    units: list[str]
    unit_of_cell: np.ndarray
    cell_types: list[str]
    type_of_cell: np.ndarray
    embedding: np.ndarray
    zscore: np.ndarray
    expression: dataclasses.InitVar[sp.csr_matrix]
    type_means: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self, expression):
        self.type_means = self.unit_type_means(expression)

    @classmethod
    def from_anndata(cls, cells: ad.AnnData, expression=None) -> CellData:
        """From stage 02's cells; ``expression`` (default ``cells.X``) may be the matrix on disk
        (:func:`gmvae4p.data.x_on_disk`), read a block of rows at a time, for cells read without ``X``."""
        for key in (keys.X_GMVAE, keys.X_GMVAE_ZSCORE):
            if key not in cells.obsm:
                raise KeyError(f"cells.obsm[{key!r}] is missing: run stage 02 (GMVAE) with this output_dir.")
        unit_column = obs_column(cells, "sample") or obs_column(cells, "patient")
        unit = pd.Categorical(cells.obs[unit_column].astype(str))
        types = pd.Categorical(cells.obs[obs_column(cells, "cell_type")])
        # codes as int64: pandas stores them as int8 for few categories, and unit × n_types + type overflows that
        return cls(list(unit.categories), unit.codes.astype(np.int64), list(types.categories),
                   types.codes.astype(np.int64),
                   np.asarray(cells.obsm[keys.X_GMVAE], dtype=np.float32),
                   np.asarray(cells.obsm[keys.X_GMVAE_ZSCORE], dtype=np.float32),
                   cells.X if expression is None else expression)

    def unit_index(self, names) -> np.ndarray:
        index = pd.Index(self.units).get_indexer(np.asarray(names, dtype=str))
        if (index < 0).any():
            raise KeyError(f"units {list(np.asarray(names)[index < 0][:5])} have no cells in the cells AnnData.")
        return index

    def unit_means(self, values) -> np.ndarray:
        """Mean of ``values`` (cells × features) over each unit's cells."""
        return _group_means(values, self.unit_of_cell, len(self.units))

    def unit_type_means(self, values) -> np.ndarray:
        """units × types × features means over each unit's cells of each type; NaN where a unit has none."""
        group = np.where(self.type_of_cell >= 0, self.unit_of_cell * len(self.cell_types) + self.type_of_cell, -1)
        means = _group_means(values, group, len(self.units) * len(self.cell_types))
        return means.reshape(len(self.units), len(self.cell_types), -1)


def fit_predict_cell_baselines(cells: CellData, y_unit: pd.Series, folds: list[Fold], *, methods: list[str],
                               config: ClassifierConfig = ClassifierConfig(), n_top_genes: int = N_TOP_GENES,
                               device: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions per unit, as :func:`~gmvae4p.classify.baselines.fit_predict_baselines` gives them;
    ``y_unit`` maps unit name → 1 (positive) or 0."""
    unknown = [m for m in methods if m not in CELL_BASELINES]
    if unknown:
        raise ValueError(f"unknown cell-level baseline(s) {unknown}; known: {list(CELL_BASELINES)}.")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = dataclasses.replace(config, batch_size=UNITS_PER_STEP)
    y = np.full(len(cells.units), -1)
    y[cells.unit_index(y_unit.index)] = y_unit.to_numpy()
    inputs = {"gmvae_embedding_logistic_regression": lambda: cells.unit_means(cells.embedding),
              "prototype_cells": lambda: _cell_features(cells),
              "per_type_networks": lambda: cells.type_means}
    rows = []
    for method in methods:
        features = inputs[method]()
        for fold in folds:
            train, validation, test = (cells.unit_index(u) for u in (fold.train, fold.validation, fold.test))
            predict = _FITTERS[method]
            probability = predict(features, cells, y, train, validation, test, config=config, seed=seed + fold.index,
                                  n_top_genes=n_top_genes, device=device)
            rows.append(pd.DataFrame({"method": method, "fold": fold.index, "unit": np.asarray(cells.units)[test],
                                      "label": y[test], "probability": probability}))
    return pd.concat(rows, ignore_index=True)


def _embedding_logistic_regression(features, cells, y, train, validation, test, *, seed, **_):
    fitted = np.concatenate([train, validation])  # no early stopping: validation units are training units here
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    return model.fit(features[fitted], y[fitted]).predict_proba(features[test])[:, 1]


def _prototype_cells(features, cells, y, train, validation, test, *, config, seed, device, **_):
    torch.manual_seed(seed)
    order = np.argsort(cells.unit_of_cell, kind="stable")
    bounds = np.searchsorted(cells.unit_of_cell[order], np.arange(len(cells.units) + 1))
    values = torch.as_tensor(features[order], device=device)
    start = torch.as_tensor(bounds[:-1], device=device)
    size = torch.as_tensor(np.diff(bounds), device=device)
    labels = torch.as_tensor(y, device=device)
    module = PrototypeModule(features.shape[1], hidden_dim=config.embed_dim, dropout=config.dropout).to(device)
    train_units = torch.as_tensor(train, device=device)

    def batch_loss(rows):
        units = train_units[rows.to(device)]
        draw = (torch.rand(len(units), CELLS_PER_DRAW, device=device) * size[units, None]).long()
        return F.cross_entropy(module(values[start[units, None] + draw])[0], labels[units])

    def logits(groups):  # one unit's cells at a time (units differ in size)
        return torch.cat([module(cells[None])[0] for cells in groups])

    draw = np.random.default_rng(seed)
    held = [values[torch.as_tensor(np.sort(draw.choice(np.arange(bounds[u], bounds[u + 1]), VALIDATION_CELLS,
                                                        replace=False)), device=device)]
            if bounds[u + 1] - bounds[u] > VALIDATION_CELLS else values[bounds[u]:bounds[u + 1]] for u in validation]
    validation_loss = (lambda: F.cross_entropy(logits(held), labels[validation])) if len(validation) else None
    fit(module, batch_loss, len(train), validation_loss=validation_loss, config=config, seed=seed)
    with torch.no_grad():
        return torch.softmax(logits(values[bounds[u]:bounds[u + 1]] for u in test), -1)[:, 1].cpu().numpy()


def _per_type_networks(means, cells, y, train, validation, test, *, config, seed, device, n_top_genes):
    torch.manual_seed(seed)
    present = ~np.isnan(means[:, :, 0])
    # per type, its own most variable genes over the training units, standardized on them
    blocks = []
    for t in range(means.shape[1]):
        kept = most_variable(means[:, t, :], train, n_top_genes)
        block = means[:, t, kept]
        with warnings.catch_warnings():  # a type absent from every training unit
            warnings.simplefilter("ignore", RuntimeWarning)
            centre, spread = np.nanmean(block[train], 0), np.nanstd(block[train], 0)
        blocks.append(np.nan_to_num((block - np.nan_to_num(centre)) / np.where(spread > 1e-6, spread, 1.0)))
    x = torch.as_tensor(np.stack(blocks, 1), dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, device=device)
    module = PerTypeModule(means.shape[1], x.shape[2], hidden_dim=config.embed_dim // 2,
                           dropout=config.dropout).to(device)
    usable = present.copy()
    for t, network in enumerate(module.networks):  # each network trained and early-stopped on its own
        mine, held = train[present[train, t]], validation[present[validation, t]]
        if len(np.unique(y[mine])) < 2:  # too few training units have this type: it does not vote
            usable[:, t] = False
            continue
        inputs, held_inputs = x[torch.as_tensor(mine, device=device), t], x[torch.as_tensor(held, device=device), t]
        targets, held_targets = labels[mine], labels[held]
        fit(network, lambda rows: F.cross_entropy(network(inputs[rows.to(device)]), targets[rows.to(device)]),
            len(mine), validation_loss=(lambda: F.cross_entropy(network(held_inputs), held_targets))
            if len(held) else None, config=config, seed=seed + t)
    with torch.no_grad():
        units = torch.as_tensor(test, device=device)
        return PerTypeModule.vote(module(x[units]), torch.as_tensor(usable[test], device=device))[:, 1].cpu().numpy()


_FITTERS = {"gmvae_embedding_logistic_regression": _embedding_logistic_regression,
            "prototype_cells": _prototype_cells, "per_type_networks": _per_type_networks}


def _cell_features(cells: CellData) -> np.ndarray:
    """Per cell its GMVAE z-score and its cell type one-hot (unannotated cells: all zeros)."""
    onehot = np.zeros((len(cells.type_of_cell), len(cells.cell_types)), dtype=np.float32)
    typed = cells.type_of_cell >= 0
    onehot[np.flatnonzero(typed), cells.type_of_cell[typed]] = 1.0
    return np.concatenate([cells.zscore, onehot], axis=1)


def _group_means(values, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the rows of ``values`` per group (−1: in none); NaN for an empty group. ``values``: dense, sparse,
    or a matrix on disk that gives a block of rows when sliced (anndata's backed CSR), read a block at a time."""
    group = np.asarray(group, dtype=np.int64)
    sums = np.zeros((n_groups, values.shape[1]))
    blocks = [(0, len(group), values)] if isinstance(values, np.ndarray) or sp.issparse(values) \
        else row_blocks(values)
    for start, stop, block in blocks:
        if sp.issparse(block):  # entry by entry into its row's group: a product with a group indicator made a
            block = sp.csr_matrix(block)  # sparse groups × genes result as large as the dense one, then densified
            _add_csr_rows(block.indptr, block.indices, block.data, group[start:stop], sums)
        else:
            member = np.flatnonzero(group[start:stop] >= 0)
            indicator = sp.csr_matrix((np.ones(len(member)), (group[start:stop][member], member)),
                                      shape=(n_groups, stop - start))
            sums += indicator @ np.asarray(block)
    counts = np.bincount(group[group >= 0], minlength=n_groups)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan).astype(np.float32)


@numba.njit(cache=True)
def _add_csr_rows(indptr, indices, data, group, sums):
    """``sums[group[r]] += row r`` of a CSR block, for rows whose group is not −1."""
    for row in range(len(indptr) - 1):
        g = group[row]
        if g < 0:
            continue
        for k in range(indptr[row], indptr[row + 1]):
            sums[g, indices[k]] += data[k]
