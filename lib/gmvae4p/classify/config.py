"""Classifier settings as a plain dataclass (no torch import, so a parameters file can be checked anywhere).

The ``classify`` section of a parameters file is :class:`ClassifierConfig` plus what the evaluation needs
(:class:`gmvae4p.params.ClassifySection`).
"""

from __future__ import annotations

import dataclasses

from ..gmvae.config import _require

METHODS = ("gmvae4p", "logistic_regression", "random_forest", "xgboost", "composition_logistic_regression",
           "gmvae_embedding_logistic_regression", "prototype_cells", "per_type_networks")
"""Every method of Table 1 by name, GMVAE4P first (:mod:`gmvae4p.classify.evaluate` maps each to its code)."""

N_TOP_GENES = 2000
"""Bulk genes a classifier keeps per fold by default: the most variable over the fold's training units."""
N_TOP_INTERACTIONS = 500
"""Communication features the modality network keeps per fold by default (most variable over training units)."""

LEARNERS = ("linear", "program", "network")
"""GMVAE4P's learners (:mod:`gmvae4p.classify.stack` says what each reads)."""

BULK_INPUTS = ("program", "genes")
"""What GMVAE4P's bulk encoder may read (:attr:`ClassifierConfig.bulk_input`)."""


@dataclasses.dataclass
class ClassifierConfig:
    """GMVAE4P's architecture, loss weights and optimization; the cell-level baselines share the optimization."""

    learners: list[str] = dataclasses.field(default_factory=lambda: list(LEARNERS))
    """GMVAE4P's learners, combined by a stack fitted on their held-out training units."""
    stack_folds: int = 3
    """Inner folds over a fold's training patients that give the linear and program learners' out-of-fold logits
    for the stack (the network's come from its validation units)."""
    bulk_input: str = "program"
    """What the modality network's bulk encoder reads: ``program``, the score of the disease program learned on the
    training units (:mod:`gmvae4p.classify.program`), or ``genes``, the ``n_top_genes`` most variable genes' log-CPM."""
    program_seed_genes: int = 20
    """The learned program (the program learner; the network with ``bulk_input: program``): genes by |Welch t|
    between the labels that seed it."""
    program_alpha: float = 0.05
    """The learned program: family-wise error rate of the correlation test by which genes join it."""
    hidden_dim: int = 256
    embed_dim: int = 64
    dropout: float = 0.2
    fusion: str = "certainty"
    """How modality encodings are fused: ``certainty`` (weighted by predicted certainty) or ``mean``."""
    nll_weight: float = 1.0
    """Weight of the modalities' Gaussian NLL (auxiliary targets)."""
    contrastive_weight: float = 0.1
    """Weight of the InfoNCE alignment of predicted and true modality encodings."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    """Pseudobulk samples per step (the cell-level baselines take 8 units per step)."""
    max_epochs: int = 200
    patience: int = 15
    """Epochs without a better validation loss before training stops (the learning rate halves after a third of
    that); the best epoch's weights are kept. Without validation units, ``max_epochs`` are run."""

    def __post_init__(self):
        _require(bool(self.learners) and set(self.learners) <= set(LEARNERS)
                 and len(set(self.learners)) == len(self.learners),
                 "learners", f"distinct names among {list(LEARNERS)}", self.learners)
        _require(self.stack_folds >= 2, "stack_folds", "at least 2", self.stack_folds)
        for name in ("hidden_dim", "embed_dim", "batch_size", "max_epochs", "patience"):
            _require(getattr(self, name) >= 1, name, "at least 1", getattr(self, name))
        _require(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)
        _require(self.fusion in ("certainty", "mean"), "fusion", "certainty or mean", self.fusion)
        _require(self.bulk_input in BULK_INPUTS, "bulk_input", " or ".join(BULK_INPUTS), self.bulk_input)
        _require(self.program_seed_genes >= 2, "program_seed_genes", "at least 2", self.program_seed_genes)
        _require(0 < self.program_alpha < 1, "program_alpha", "in (0, 1)", self.program_alpha)
        _require(self.lr > 0, "lr", "positive", self.lr)
        for name in ("nll_weight", "contrastive_weight", "weight_decay"):
            _require(getattr(self, name) >= 0, name, "non-negative", getattr(self, name))
