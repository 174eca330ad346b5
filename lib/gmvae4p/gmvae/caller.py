"""The GMVAE's cell-type call (``obs["gmvae_cell_type"]``, label transfer): a class-weighted multinomial logistic
regression on the latent means E[z|x] of the annotated cells, its logits scaled by a factor fitted on the held-out
patients' cells (temperature scaling, :mod:`gmvae4p.calibration`).

Why not q(y|x), the mixture's own posterior: trained beside the reconstruction with a heavily weighted classification
term, it is over-confident, and on new donors it named types less well than a logistic regression on the same latent
means (``bench/results/label_transfer_h100_2026-12-06_transfer_labels/``). q(y|x) still assigns each unannotated cell
its mixture component for the z-scores.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ..calibration import fit_temperature, scaled_probabilities

FIT_CELLS = 200_000
"""At most this many training cells (drawn at random) fit the regression: 32 latent dimensions need no more, and an
atlas of millions would make it the slowest step of stage 02."""
ABSENT = -1e4
"""Bias of a component without training cells: the call never names it."""


@dataclasses.dataclass
class CellTypeCaller:
    """``weight`` (components × latent dims) and ``bias`` of the regression, and the ``calibration`` factor."""

    weight: np.ndarray
    bias: np.ndarray
    calibration: float = 1.0

    def probabilities(self, z_mean: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities of cells with latent means ``z_mean`` (cells × components)."""
        return scaled_probabilities(np.asarray(z_mean, dtype=np.float64) @ self.weight.T + self.bias,
                                    self.calibration).astype(np.float32)

    def state(self) -> dict:
        """What a saved GMVAE's ``.pt`` file keeps (tensors and a float: ``torch.load(weights_only=True)`` reads it)."""
        return {"weight": torch.from_numpy(self.weight), "bias": torch.from_numpy(self.bias),
                "calibration": float(self.calibration)}

    @classmethod
    def from_state(cls, state: dict) -> CellTypeCaller:
        return cls(state["weight"].numpy(), state["bias"].numpy(), float(state["calibration"]))


def fit_caller(z_mean: np.ndarray, components: np.ndarray, validation: np.ndarray, n_components: int, *,
               seed: int = 0) -> tuple[CellTypeCaller, np.ndarray]:
    """A regression fitted on the cells outside ``validation`` with a known component (``components`` ≥ 0) calls the
    ``validation`` cells, and its calibration factor is found on those with a known component (1 without any); then
    the regression is refitted on every cell with a known component, keeping that factor (a fifth of the patients is
    too much to leave out of the call for new cells). Returns that caller, and the ``validation`` cells' calibrated
    probabilities from the regression that did not see them (what their held-out accuracy must be measured on)."""
    z_mean = np.asarray(z_mean, dtype=np.float64)
    known = components >= 0
    if not (validation & known).any() or not (~validation & known).any():
        final = CellTypeCaller(*_regression(z_mean, components, known, n_components, seed))
        return final, final.probabilities(z_mean[validation])
    held_out = CellTypeCaller(*_regression(z_mean, components, ~validation & known, n_components, seed))
    held = validation & known
    held_out.calibration = fit_temperature(z_mean[held] @ held_out.weight.T + held_out.bias, components[held])
    final = CellTypeCaller(*_regression(z_mean, components, known, n_components, seed), held_out.calibration)
    return final, held_out.probabilities(z_mean[validation])


def _regression(z_mean, components, cells, n_components, seed) -> tuple[np.ndarray, np.ndarray]:
    """``weight`` and ``bias`` of the class-weighted regression on ``cells`` (at most :data:`FIT_CELLS` of them)."""
    train = np.flatnonzero(cells)
    if len(train) > FIT_CELLS:
        train = np.sort(np.random.default_rng(seed).choice(train, FIT_CELLS, replace=False))
    weight = np.zeros((n_components, z_mean.shape[1]))
    bias = np.full(n_components, ABSENT)
    classes = np.unique(components[train])
    if len(classes) == 1:
        bias[classes] = 0.0
        return weight, bias
    model = LogisticRegression(class_weight="balanced", max_iter=1000).fit(z_mean[train], components[train])
    if len(classes) == 2:  # sklearn keeps one row: the second class's logit against the first's 0
        weight[classes[1]], bias[classes] = model.coef_[0], [0.0, model.intercept_[0]]
    else:
        weight[classes], bias[classes] = model.coef_, model.intercept_
    return weight, bias
