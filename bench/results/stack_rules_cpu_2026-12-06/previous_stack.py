"""How GMVAE4P combines its learners: a non-negative logistic regression on their out-of-fold logits.

GMVAE4P has several learners that read bulk expression (:data:`~gmvae4p.classify.config.LEARNERS`): ``linear``,
L2 logistic regression on the standardized most variable genes; ``program``, logistic regression on the learned
disease program's score; ``network``, the modality network. Which of them carries the signal depends
on the cohort: on a disease that moves one co-expressed program across patients the program's score wins; where the
label shows in hundreds of genes at once a regularized linear model over all genes wins; where the single-cell
modalities hold what bulk hides, the modality network should. Rather than fix the choice, GMVAE4P learns it from the
training units alone (stacked generalization, Wolpert 1992): inner folds over the training patients give every
learner's out-of-fold logits, and :func:`fit_stack` weighs them. The weights are non-negative, so a learner that
anti-learns on the inner folds is dropped rather than turned around, and the fit is class-balanced, so the
stack's probability 0.5 is the decision point that the training units put halfway between the classes (the
threshold for accuracy and balanced accuracy comes from them, not from the test units).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import minimize


LOGIT_LIMIT = 10.0
"""Learners' logits are clipped to ± this before stacking: a separable inner fold gives unbounded logits."""
PENALTY = 1e-2
"""L2 penalty on the stack's weights (keeps them finite when the inner folds are separable)."""


@dataclasses.dataclass
class Stack:
    """``probability = sigmoid(intercept + Σ weight_j · clip(logit_j))`` over the learners in ``learners``' order;
    ``inner`` says how the weights were found (``inner folds``; ``equal`` when the training units were too few to
    hold folds out; ``single learner``)."""

    learners: tuple[str, ...]
    weights: np.ndarray
    intercept: float
    inner: str

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """The stacked probability of rows of learner ``logits`` (rows × learners)."""
        z = self.intercept + np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT) @ self.weights
        return 1.0 / (1.0 + np.exp(-z))


def fit_stack(logits: np.ndarray, y: np.ndarray, learners: tuple[str, ...]) -> Stack:
    """Weights ≥ 0 and an intercept minimizing the class-balanced log loss of ``y`` (1 = positive) given the
    learners' out-of-fold ``logits`` (rows × learners), plus :data:`PENALTY` · ‖weights‖²."""
    x = np.clip(np.asarray(logits, dtype=np.float64), -LOGIT_LIMIT, LOGIT_LIMIT)
    y = np.asarray(y, dtype=np.float64)
    counts = np.array([(y == 0).sum(), (y == 1).sum()], dtype=np.float64)
    if counts.min() == 0:
        return equal_stack(learners)
    balance = (len(y) / (2 * counts))[y.astype(int)]
    balance /= balance.sum()
    k = x.shape[1]

    def objective(theta):
        weights, intercept = theta[:k], theta[k]
        z = intercept + x @ weights
        residual = balance * (1.0 / (1.0 + np.exp(-z)) - y)
        value = float(balance @ (np.logaddexp(0.0, z) - y * z) + PENALTY * weights @ weights)
        gradient = np.append(x.T @ residual + 2 * PENALTY * weights, residual.sum())
        return value, gradient

    start = np.append(np.full(k, 1.0 / k), 0.0)
    fitted = minimize(objective, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * k + [(None, None)])
    return Stack(tuple(learners), fitted.x[:k], float(fitted.x[k]), "inner folds")


def single_stack(learners: tuple[str, ...]) -> Stack:
    """One learner taken as it is (its logit unchanged): no inner folds are needed."""
    return Stack(tuple(learners), np.ones(1), 0.0, "single learner")


def equal_stack(learners: tuple[str, ...]) -> Stack:
    """The mean of the learners' logits: used when the training units are too few for inner folds."""
    return Stack(tuple(learners), np.full(len(learners), 1.0 / len(learners)), 0.0, "equal")
