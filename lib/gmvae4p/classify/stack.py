"""How GMVAE4P combines its learners: the mean of their logits, each standardized by its spread on inner folds.

GMVAE4P has several learners that read bulk expression (:data:`~gmvae4p.classify.config.LEARNERS`): ``linear``,
L2 logistic regression on the standardized most variable genes; ``program``, logistic regression on the learned
disease program's score; ``network``, the modality network. Which of them carries the signal depends on the cohort:
on a disease that moves one co-expressed program across patients the program's score wins; where the label shows in
hundreds of genes at once a regularized linear model over all genes wins; where the single-cell modalities hold what
bulk hides, the modality network should. Inner folds over the training patients give every learner's out-of-fold
logits, from which :func:`fit_stack` takes each learner's scale, its inner AUC (reported) and the temperature.

The weights are equal, on purpose. Any weights estimated from the out-of-fold logits of a few dozen training patients
carry an estimation error as large as the differences between the learners: a regression of the labels on the logits
(stacked generalization, Wolpert 1992) swung from one outer fold to the next, and weights set by each learner's inner
AUC above chance followed the draw of the inner folds wherever the learners were close or the signal weak. Estimated
combinations of forecasts lose to the plain mean when the estimation error is that large (the "forecast combination
puzzle", Smith and Wallis 2009), and so they did here (``bench/results/cohort_benchmark_cpu_2026-12-07_balanced_batches/``).
Each learner's logit is divided by its spread on the inner folds, so that no learner weighs more for having larger
logits. No intercept is fitted: every learner is class-balanced, so its logit 0 already sits between the classes of
the training units, and their mean keeps it there (the threshold for accuracy and balanced accuracy comes from the
training units, not from the test units).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..calibration import fit_temperature
from .metrics import auc


LOGIT_LIMIT = 10.0
"""Learners' logits are clipped to ± this before they are combined: a separable inner fold gives unbounded logits."""


@dataclasses.dataclass
class Stack:
    """``probability = sigmoid(Σ weight_j · clip(logit_j) / scale_j)`` over the learners in ``learners``' order
    (equal weights, summing to 1); ``inner_auc`` is each learner's per-unit AUC on the inner folds (empty without
    them); ``inner`` says where the scales came from (``inner folds``; ``equal`` when the training units were too
    few to hold folds out, or of one label: logits taken unscaled; ``single learner``)."""

    learners: tuple[str, ...]
    weights: np.ndarray
    scale: np.ndarray
    inner: str
    inner_auc: dict[str, float] = dataclasses.field(default_factory=dict)
    temperature: float = 1.0
    """The factor on the combined logit that best fits the inner folds' units (class-balanced log-loss): the final
    model's reported probabilities read it (:meth:`probability` with ``calibrated``). Cross-validation does not: one
    temperature per fold reorders the units pooled over folds and lowered the pooled AUC
    (``bench/results/stack_rules_cpu_2026-12-06/``). A positive factor moves neither the ranking nor the 0.5
    threshold."""

    def probability(self, logits: np.ndarray, *, calibrated: bool = False) -> np.ndarray:
        """The combined probability of rows of learner ``logits`` (rows × learners); ``calibrated``: with the
        :attr:`temperature`."""
        z = (np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT) / self.scale) @ self.weights
        return 1.0 / (1.0 + np.exp(-z * (self.temperature if calibrated else 1.0)))


def fit_stack(logits: np.ndarray, y: np.ndarray, unit: np.ndarray, learners: tuple[str, ...]) -> Stack:
    """The stack of the learners' out-of-fold ``logits`` (rows × learners) on the inner folds: each learner's scale
    is the SD of its clipped logits, the weights are equal; its per-unit AUC (rows averaged per ``unit``; ``y``: 1 =
    positive) is reported, and the temperature fitted to the units."""
    x = np.clip(np.asarray(logits, dtype=np.float64), -LOGIT_LIMIT, LOGIT_LIMIT)
    per_unit = pd.DataFrame(x).groupby(np.asarray(unit)).mean()
    truth = pd.Series(np.asarray(y)).groupby(np.asarray(unit)).first().loc[per_unit.index].to_numpy()
    if truth.min() == truth.max():
        return equal_stack(learners)
    inner_auc = {name: auc(truth, per_unit[j].to_numpy()) for j, name in enumerate(learners)}
    scale = np.where(x.std(0) > 1e-6, x.std(0), 1.0)
    weights = np.full(len(learners), 1.0 / len(learners))
    return Stack(tuple(learners), weights, scale, "inner folds", inner_auc,
                 fit_temperature((per_unit.to_numpy() / scale) @ weights, truth, class_balanced=True))


def single_stack(learners: tuple[str, ...]) -> Stack:
    """One learner taken as it is (its logit unchanged): no inner folds are needed."""
    return Stack(tuple(learners), np.ones(1), np.ones(1), "single learner")


def equal_stack(learners: tuple[str, ...]) -> Stack:
    """The mean of the learners' unscaled logits: used when the training units are too few for inner folds."""
    return Stack(tuple(learners), np.full(len(learners), 1.0 / len(learners)), np.ones(len(learners)), "equal")
