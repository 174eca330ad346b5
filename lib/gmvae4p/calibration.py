"""Temperature scaling (Guo et al., 2017): one positive factor on a model's logits, fitted by likelihood on data the
model was not trained on, so that its probabilities say how often it is right without changing which class it calls.

GMVAE4P's stack uses it for the final model's calibrated probability; the GMVAE for the uncertainty of its cell-type
calls (fitted on the held-out patients' cells).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

FACTOR_BOUNDS = (0.05, 20.0)
"""The factor is searched in this interval: beyond it the data say the logits carry nothing, or everything."""


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, class_balanced: bool = False) -> float:
    """The factor t minimizing the mean negative log-likelihood of softmax(t · ``logits``) against ``labels``
    (rows × classes, or a 1-D logit of class 1 against class 0); ``class_balanced``: every class present weighs the
    same in that mean."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1:
        logits = np.column_stack([np.zeros_like(logits), logits])
    labels = np.asarray(labels, dtype=np.int64)
    if class_balanced:
        present, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weight = 1.0 / (len(present) * counts[inverse])
    else:
        weight = np.full(len(labels), 1.0 / max(len(labels), 1))
    chosen = logits[np.arange(len(labels)), labels]

    def loss(t):
        scaled = t * logits
        top = scaled.max(1)
        return float(weight @ (top + np.log(np.exp(scaled - top[:, None]).sum(1)) - t * chosen))

    return float(minimize_scalar(loss, bounds=FACTOR_BOUNDS, method="bounded").x)


def scaled_probabilities(logits: np.ndarray, factor: float) -> np.ndarray:
    """softmax(``factor`` · ``logits``) over the last axis."""
    scaled = factor * np.asarray(logits, dtype=np.float64)
    scaled -= scaled.max(-1, keepdims=True)
    e = np.exp(scaled)
    return e / e.sum(-1, keepdims=True)
