"""How GMVAE4P combines its learners: the mean of their logits, each standardized by its spread on held-out units.

GMVAE4P has several learners that read bulk expression (:data:`~gmvae4p.classify.config.LEARNERS`): ``linear``,
L2 logistic regression on the standardized most variable genes; ``program``, logistic regression on the learned
disease program's score; ``network``, the modality network. Which of them carries the signal depends on the cohort:
on a disease that moves one co-expressed program across patients the program's score wins; where the label shows in
hundreds of genes at once a regularized linear model over all genes wins; where the single-cell modalities hold what
bulk hides, the modality network should. Each learner's logits on units it was not fitted on give its scale, its
held-out AUC (reported) and, combined, the temperature (:func:`fit_stack`): for the linear and program learners, inner
folds over the training patients; for the network, the validation units on which it stops early. Those units are out
of its training set, and refitting the network in every inner fold took most of GMVAE4P's time, for a scale.

A learner whose logit is a function of what another learner reads is left out of the mean (weight 0; it is still
scaled and its held-out AUC reported): the network reading bulk through the program's score (``bulk_input:
program``) sees one number per sample, a program score like the one the program learner reads, so from bulk it can
only add noise to that learner's ranking. Given the cells' modalities (scRNA mode) the network reads what no other
learner does, and is in.

The weights are equal, on purpose. Any weights estimated from the out-of-fold logits of a few dozen training patients
carry an estimation error as large as the differences between the learners: a regression of the labels on the logits
(stacked generalization, Wolpert 1992) swung from one outer fold to the next, and weights set by each learner's inner
AUC above chance followed the draw of the inner folds wherever the learners were close or the signal weak. Estimated
combinations of forecasts lose to the plain mean when the estimation error is that large (the "forecast combination
puzzle", Smith and Wallis 2009), and so they did here (``bench/results/cohort_benchmark_cpu_2026-12-07_balanced_batches/``).
Each learner's logit is divided by its spread on held-out units, so that no learner weighs more for having larger
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


HELD_OUT = "held-out units"
""":attr:`Stack.scaled_on` of a stack whose scales come from each learner's held-out units."""

LOGIT_LIMIT = 10.0
"""Learners' logits are clipped to ± this before they are combined: a separable training set gives unbounded logits."""


@dataclasses.dataclass
class Stack:
    """``probability = sigmoid(Σ weight_j · clip(logit_j) / scale_j)`` over the learners in ``learners``' order
    (equal weights over the learners in the mean, 0 for those left out, summing to 1); ``held_out_auc`` is each
    learner's per-unit AUC on its held-out training units (empty without them); ``scaled_on`` says where the scales
    came from (:data:`HELD_OUT`; ``equal`` when the training units were too few to hold units out, or of one label:
    logits taken unscaled; ``single learner``)."""

    learners: tuple[str, ...]
    weights: np.ndarray
    scale: np.ndarray
    scaled_on: str
    held_out_auc: dict[str, float] = dataclasses.field(default_factory=dict)
    temperature: float = 1.0
    """The factor on the combined logit that best fits the held-out units (class-balanced log-loss): the final
    model's reported probabilities read it (:meth:`probability` with ``calibrated``). Cross-validation does not: one
    temperature per fold reorders the units pooled over folds and lowered the pooled AUC
    (``bench/results/stack_rules_cpu_2026-12-06/``). A positive factor moves neither the ranking nor the 0.5
    threshold."""

    def probability(self, logits: np.ndarray, *, calibrated: bool = False) -> np.ndarray:
        """The combined probability of rows of learner ``logits`` (rows × learners); ``calibrated``: with the
        :attr:`temperature`."""
        z = (np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT) / self.scale) @ self.weights
        return 1.0 / (1.0 + np.exp(-z * (self.temperature if calibrated else 1.0)))


def fit_stack(logits: np.ndarray, y: np.ndarray, unit: np.ndarray, learners: tuple[str, ...],
              left_out: tuple[str, ...] = ()) -> Stack:
    """The stack of the learners' held-out ``logits`` (training rows × learners; NaN where a learner was fitted on
    the row): each learner's scale is the SD of its clipped held-out logits, the weights are equal but for the
    learners ``left_out`` of the mean (weight 0); each learner's per-unit AUC (rows averaged per ``unit``; ``y``: 1 =
    positive) is reported, and the temperature is fitted to the units that every learner holds out. Equal unscaled
    weights when some learner holds out fewer than two rows or the units are of one label."""
    x = np.clip(np.asarray(logits, dtype=np.float64), -LOGIT_LIMIT, LOGIT_LIMIT)
    per_unit = pd.DataFrame(x).groupby(np.asarray(unit)).mean()
    truth = pd.Series(np.asarray(y)).groupby(np.asarray(unit)).first().loc[per_unit.index].to_numpy()
    held = ~np.isnan(x)
    if truth.min() == truth.max() or held.sum(0).min() < 2:
        return equal_stack(learners, left_out)
    held_out_auc = {name: _held_out_auc(truth, per_unit[j].to_numpy()) for j, name in enumerate(learners)}
    spread = np.nanstd(x, 0)
    scale = np.where(spread > 1e-6, spread, 1.0)
    weights = mean_weights(learners, left_out)
    complete = per_unit.notna().all(axis=1).to_numpy()
    temperature = (fit_temperature((per_unit.to_numpy()[complete] / scale) @ weights, truth[complete],
                                   class_balanced=True) if len(set(truth[complete])) == 2 else 1.0)
    return Stack(tuple(learners), weights, scale, HELD_OUT, held_out_auc, temperature)


def _held_out_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """AUC over the units with a score; NaN when they are of one label."""
    known = ~np.isnan(score)
    return auc(truth[known], score[known]) if len(set(truth[known])) == 2 else float("nan")


def single_stack(learners: tuple[str, ...]) -> Stack:
    """One learner taken as it is (its logit unchanged): no units need be held out."""
    return Stack(tuple(learners), np.ones(1), np.ones(1), "single learner")


def equal_stack(learners: tuple[str, ...], left_out: tuple[str, ...] = ()) -> Stack:
    """The mean of the learners' unscaled logits (but those ``left_out``): used when the training units are too few
    to hold units out."""
    return Stack(tuple(learners), mean_weights(learners, left_out), np.ones(len(learners)), "equal")


def mean_weights(learners: tuple[str, ...], left_out: tuple[str, ...] = ()) -> np.ndarray:
    """Equal weights summing to 1 over ``learners``, 0 for those ``left_out`` (at least one must stay in)."""
    kept = np.array([name not in left_out for name in learners], dtype=np.float64)
    if not kept.any():
        raise ValueError(f"every learner of {list(learners)} is left out of the stack.")
    return kept / kept.sum()
