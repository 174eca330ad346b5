"""GMVAE4P on an AnnData of pseudobulk samples (stage 03's ``pseudobulk.h5ad``): fit on some units, predict others.

What is fitted — the bulk input (the learned disease program's score, or the most variable genes), the interactions
kept (most variable), every standardization — is fitted on the training units' mixture samples only
(:class:`FoldFeatures`); the validation units drive early stopping; any other unit is only ever predicted.
"""

from __future__ import annotations

import dataclasses
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import torch

from .. import keys
from .config import ClassifierConfig
from .cv import most_variable
from .module import GMVAE4PModule
from .program import LearnedProgram
from .training import fit

BULK = "bulk"
MODALITIES = (keys.PROPORTIONS, keys.STATES, keys.COMMUNICATION)
"""The auxiliary modalities, in the order of the fusion weights."""


def feature_block(samples: ad.AnnData, name: str) -> np.ndarray:
    """The samples × features matrix of ``bulk`` (``X``, log-CPM) or of a modality in ``obsm`` (float32)."""
    if name == BULK:
        return np.asarray(samples.X, dtype=np.float32)
    if name not in samples.obsm:
        raise KeyError(f"samples.obsm[{name!r}] is missing: run stage 03 (pseudobulk) with this output_dir.")
    value = samples.obsm[name]
    return np.asarray(value.to_numpy() if isinstance(value, pd.DataFrame) else value, dtype=np.float32)


@dataclasses.dataclass
class FoldFeatures:
    """Columns kept and their standardization, all fitted on training rows; ``sources`` names where a block is read
    when not under its own name (an ablation reads the states from ``states_expression``); ``program``, when set,
    replaces the bulk block by its one score."""

    columns: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    program: LearnedProgram | None = None

    @classmethod
    def fit(cls, samples: ad.AnnData, rows: np.ndarray, *, blocks: tuple[str, ...], n_top_genes: int,
            n_top_interactions: int, sources: dict[str, str] | None = None,
            program: LearnedProgram | None = None) -> FoldFeatures:
        """Bulk keeps its ``n_top_genes`` and communication its ``n_top_interactions`` most variable columns over
        ``rows``; every kept column is centred and scaled by its mean and SD over ``rows`` (NaN ignored). With a
        ``program`` (fitted on the same rows) bulk is its score instead."""
        top = {BULK: n_top_genes, keys.COMMUNICATION: n_top_interactions}
        sources = dict(sources or {})
        columns, mean, scale = {}, {}, {}
        for name in blocks:
            if name == BULK and program is not None:  # the program standardizes its genes itself
                columns[name] = program.genes
                continue
            values = feature_block(samples, sources.get(name, name))
            kept = most_variable(values, rows, top[name]) if name in top else np.arange(values.shape[1])
            train = values[np.ix_(rows, kept)]
            with warnings.catch_warnings():  # a type never drawn in training rows: an all-NaN column
                warnings.simplefilter("ignore", RuntimeWarning)
                centre, spread = np.nanmean(train, 0), np.nanstd(train, 0)
            columns[name] = kept
            mean[name] = np.nan_to_num(centre)
            scale[name] = np.where(np.nan_to_num(spread) > 1e-6, spread, 1.0).astype(np.float32)
        return cls(columns, mean, scale, sources, program)

    def width(self, name: str) -> int:
        """Features of block ``name`` as transformed."""
        return 1 if name == BULK and self.program is not None else len(self.columns[name])

    def transform(self, samples: ad.AnnData, rows: np.ndarray,
                  blocks: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Standardized ``blocks`` (default: all) of ``rows``; NaN (a cell type not drawn) stays NaN."""
        return {name: self.program.score(feature_block(samples, BULK), rows)[:, None]
                if name == BULK and self.program is not None
                else (feature_block(samples, self.sources.get(name, name))[np.ix_(rows, self.columns[name])]
                      - self.mean[name]) / self.scale[name]
                for name in blocks or self.columns}


@dataclasses.dataclass
class Predictions:
    """Per sample: ``probability`` of the positive label, ``fusion_weights`` (a DataFrame, one column per
    modality) and the ``fused`` representation the classifier read (samples × embed_dim)."""

    probability: np.ndarray
    fusion_weights: pd.DataFrame
    fused: np.ndarray


class GMVAE4P:
    """The multi-modal patient classifier (:class:`~gmvae4p.classify.module.GMVAE4PModule`) on pseudobulk samples.

    Parameters
    ----------
    config
        Architecture, loss weights, optimization, and what the bulk encoder reads (``bulk_input``: the learned
        disease program's score, or the ``n_top_genes`` most variable genes).
    n_top_genes, n_top_interactions
        Bulk genes (with ``bulk_input: genes``) and communication features kept (most variable over the training
        units).
    modalities
        Auxiliary modalities used (a subset of :data:`MODALITIES`; empty: bulk straight to the classifier).
    sources
        ``obsm`` key to read a modality from when not its own name (``{"states": "states_expression"}``).
    device
        ``cpu`` or ``cuda``; ``None`` picks CUDA when available.
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig(), *, n_top_genes: int = 2000,
                 n_top_interactions: int = 500, modalities: tuple[str, ...] = MODALITIES,
                 sources: dict[str, str] | None = None, device: str | None = None, seed: int = 0):
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"modalities must be a subset of {list(MODALITIES)}, not {list(modalities)}.")
        self.config, self.modalities, self.sources, self.seed = config, tuple(modalities), dict(sources or {}), seed
        self.n_top_genes, self.n_top_interactions = n_top_genes, n_top_interactions
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module: GMVAE4PModule | None = None
        self.features: FoldFeatures | None = None
        self.history: list[dict] = []

    def fit(self, samples: ad.AnnData, y: np.ndarray, *, train: np.ndarray,
            validation: np.ndarray | None = None) -> GMVAE4P:
        """Train on the sample rows ``train`` (labels ``y``, 1 = positive, one per sample of ``samples``), early
        stopping on ``validation`` rows."""
        torch.manual_seed(self.seed)
        c = self.config
        program = LearnedProgram.fit(feature_block(samples, BULK), train, samples.obs["unit"].astype(str).to_numpy(),
                                     y, n_seed_genes=c.program_seed_genes, alpha=c.program_alpha) \
            if c.bulk_input == "program" else None
        self.features = FoldFeatures.fit(samples, train, blocks=(BULK, *self.modalities),
                                         n_top_genes=self.n_top_genes, n_top_interactions=self.n_top_interactions,
                                         sources=self.sources, program=program)
        data = self._tensors(samples, train)
        labels = torch.as_tensor(y[train], dtype=torch.long, device=self.device)
        dims = {m: self.features.width(m) for m in self.modalities}
        self.module = GMVAE4PModule(self.features.width(BULK), dims, fusion=c.fusion, hidden_dim=c.hidden_dim,
                                    embed_dim=c.embed_dim, dropout=c.dropout).to(self.device)

        def batch_loss(rows):
            rows = rows.to(self.device)
            bulk, modalities = data[BULK][rows], {m: data[m][rows] for m in self.modalities}
            out = self.module(bulk)
            true_out = self.module(bulk, modalities, use_true=True) if self.modalities else None
            return self.module.loss(out, labels[rows], modalities, true_out=true_out, nll_weight=c.nll_weight,
                                    contrastive_weight=c.contrastive_weight)["loss"]

        validation_loss = None
        if validation is not None and len(validation):
            held = self._tensors(samples, validation, blocks=(BULK,))[BULK]
            held_labels = torch.as_tensor(y[validation], dtype=torch.long, device=self.device)
            validation_loss = lambda: torch.nn.functional.cross_entropy(self.module(held)["logits"], held_labels)
        self.history = fit(self.module, batch_loss, len(train), validation_loss=validation_loss, config=c,
                           seed=self.seed)
        return self

    @torch.no_grad()
    def predict(self, samples: ad.AnnData, rows: np.ndarray, *, use_true: bool = False) -> Predictions:
        """Predictions for sample rows ``rows`` from bulk expression alone, or (``use_true``, scRNA mode) with the
        samples' true modalities fed to the modality encoders."""
        if self.module is None:
            raise RuntimeError("GMVAE4P.predict needs a fitted model: call fit first.")
        data = self._tensors(samples, rows, blocks=(BULK, *self.modalities) if use_true else (BULK,))
        out = self.module(data[BULK], {m: data[m] for m in self.modalities} if use_true else None,
                          use_true=use_true)
        weights = pd.DataFrame(out["fusion_weights"].cpu().numpy(), columns=list(self.modalities),
                               index=samples.obs_names[rows])
        return Predictions(torch.softmax(out["logits"], -1)[:, 1].cpu().numpy(), weights, out["fused"].cpu().numpy())

    def _tensors(self, samples, rows, blocks=None) -> dict[str, torch.Tensor]:
        values = self.features.transform(samples, rows, blocks)
        return {name: torch.as_tensor(value, device=self.device) for name, value in values.items()}
