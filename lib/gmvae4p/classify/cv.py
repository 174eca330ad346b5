"""Patient-grouped cross-validation folds.

Outer folds are stratified by label and grouped by patient, so no patient's units (its pseudobulk samples, or its
samples when units are samples) fall on both sides. Inside each outer training fold, a validation split, grouped by
patient too, is what early stopping and learning-rate changes may look at; the outer test fold is used once, to
score.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold


class FoldError(ValueError):
    """Folds that the cohort cannot give; the message names the parameter."""


@dataclasses.dataclass(frozen=True)
class Fold:
    """Unit names on each side of one outer fold (``validation`` may be empty: see :func:`patient_folds`)."""

    index: int
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def patient_folds(units: pd.DataFrame, *, n_folds: int = 5, validation_fraction: float = 0.2,
                  seed: int = 0) -> list[Fold]:
    """Outer folds over ``units`` (one row per unit with columns ``unit``, ``patient``, ``label``).

    Each unit is in exactly one test fold. The validation split takes about ``validation_fraction`` of a training
    fold's patients (stratified); with fewer than two training patients, or ``validation_fraction`` 0, it is empty
    and the classifier trains for a fixed number of epochs instead.
    """
    missing = {"unit", "patient", "label"} - set(units.columns)
    if missing:
        raise FoldError(f"units need the columns {sorted(missing)}.")
    n_patients = units["patient"].nunique()
    if not 2 <= n_folds <= n_patients:
        raise FoldError(f"n_folds must be between 2 and the number of patients ({n_patients}), not {n_folds}.")
    if not 0 <= validation_fraction < 1:
        raise FoldError(f"validation_fraction must be in [0, 1), not {validation_fraction!r}.")
    names, patients = units["unit"].to_numpy(), units["patient"].to_numpy()
    labels = units["label"].to_numpy()
    outer = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for index, (train, test) in enumerate(outer.split(names, labels, groups=patients)):
        validation = _validation_split(train, labels, patients, validation_fraction, seed + index)
        train = np.setdiff1d(train, validation)
        folds.append(Fold(index, names[train], names[validation], names[test]))
    return folds


def _validation_split(rows, labels, patients, fraction, seed) -> np.ndarray:
    n_patients = len(np.unique(patients[rows]))
    if fraction == 0 or n_patients < 2:
        return np.array([], dtype=int)
    n_splits = min(n_patients, max(2, round(1 / fraction)))
    inner = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, validation = next(inner.split(rows, labels[rows], groups=patients[rows]))
    return rows[validation]
