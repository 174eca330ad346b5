"""Per-unit metrics of a binary classifier: predictions are averaged per unit first (mean probability over its
pseudobulk samples), so a unit counts once whatever its number of samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score


def unit_probabilities(samples: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Mean positive-class probability per unit from per-sample rows (columns ``unit``, ``label`` and the
    probabilities ``columns``, default ``["probability"]``); one row per unit with its label."""
    grouped = samples.groupby("unit", observed=True, sort=True)
    if (grouped["label"].nunique() > 1).any():
        raise ValueError("a unit's samples carry different labels.")
    return grouped.agg(label=("label", "first"),
                       **{column: (column, "mean") for column in columns or ["probability"]}).reset_index()


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC-AUC of units (the Mann–Whitney statistic; ties count half)."""
    y = _binary(y)
    return float(_weighted_auc(y, np.asarray(p, dtype=float), np.ones((1, len(y))))[0])


def auc_with_ci(y: np.ndarray, p: np.ndarray, *, patients: np.ndarray | None = None, n_boot: int = 1000,
                level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """ROC-AUC of units and its percentile bootstrap interval over **patients** (``patients``: each unit's patient;
    default: each unit its own): a draw takes patients with replacement, each with all of its units, so a patient
    with several samples is not counted as several independent ones (:func:`patient_draws`)."""
    y, p = _binary(y), np.asarray(p, dtype=float)
    weights = patient_draws(y, patients, n_boot=n_boot, seed=seed)
    return _with_interval(lambda w: _weighted_auc(y, p, w), weights, level)


def paired_auc_difference(y: np.ndarray, p: np.ndarray, p_reference: np.ndarray, *,
                          patients: np.ndarray | None = None, n_boot: int = 1000, level: float = 0.95,
                          seed: int = 0) -> tuple[float, float, float]:
    """AUC(p) − AUC(p_reference) on the same units, with a percentile interval from the same draws of patients
    as :func:`auc_with_ci` (both models scored on each draw, so the interval is their paired difference's)."""
    y, p, p_reference = _binary(y), np.asarray(p, dtype=float), np.asarray(p_reference, dtype=float)
    weights = patient_draws(y, patients, n_boot=n_boot, seed=seed)
    return _with_interval(lambda w: _weighted_auc(y, p, w) - _weighted_auc(y, p_reference, w), weights, level)


def patient_draws(y: np.ndarray, patients: np.ndarray | None, *, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot × units) multiplicities of the units in ``n_boot`` bootstrap draws of patients.

    The draws depend only on ``seed`` and the sorted set of patients (with each one's labels), not on the order of
    the units: the same predictions get the same interval in every table. A draw holding one class only is
    redrawn (AUC is undefined there)."""
    y = np.asarray(y)
    patients = np.arange(len(y)).astype(str) if patients is None else np.asarray(patients).astype(str)
    names, of_unit = np.unique(patients, return_inverse=True)
    positives = np.bincount(of_unit, weights=y, minlength=len(names))
    negatives = np.bincount(of_unit, weights=1 - y, minlength=len(names))
    rng = np.random.default_rng(seed)
    counts = np.empty((0, len(names)))
    while len(counts) < n_boot:
        batch = np.stack([np.bincount(row, minlength=len(names))
                          for row in rng.integers(0, len(names), (n_boot - len(counts), len(names)))])
        both = (batch @ positives > 0) & (batch @ negatives > 0)
        counts = np.concatenate([counts, batch[both]])
    return counts[:, of_unit]


def _with_interval(statistic, weights: np.ndarray, level: float) -> tuple[float, float, float]:
    """``statistic`` of all units (each once) and its percentile interval over the draws ``weights``."""
    low, high = np.quantile(statistic(weights), [(1 - level) / 2, (1 + level) / 2])
    return float(statistic(np.ones((1, weights.shape[1])))[0]), float(low), float(high)


def _weighted_auc(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC under each row of unit multiplicities ``weights`` (draws × units): the Mann–Whitney statistic with
    each unit counted that many times, ties counting half (as ``roc_auc_score``)."""
    _, level = np.unique(p, return_inverse=True)
    n_levels = level.max() + 1
    positive = np.zeros((len(weights), n_levels))
    negative = np.zeros((len(weights), n_levels))
    np.add.at(positive.T, level, (weights * y).T)
    np.add.at(negative.T, level, (weights * (1 - y)).T)
    below = np.cumsum(negative, 1) - negative
    return (positive * (below + 0.5 * negative)).sum(1) / (positive.sum(1) * negative.sum(1))


def _binary(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1.")
    return y.astype(np.int64)


def calibration_bins(p: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Index of each probability's bin among ``n_bins`` equal-width bins of [0, 1] (exactly 1 falls in the last)."""
    return np.minimum((np.asarray(p, dtype=float) * n_bins).astype(int), n_bins - 1)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, *, n_bins: int = 10) -> float:
    """Σ_bins (n_bin / n) · |mean label − mean probability| over the :func:`calibration_bins` of the
    positive-class probability."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    bins = calibration_bins(p, n_bins)
    total = 0.0
    for b in np.unique(bins):
        mine = bins == b
        total += mine.sum() * abs(y[mine].mean() - p[mine].mean())
    return float(total / len(y))


def binary_metrics(y: np.ndarray, p: np.ndarray, *, patients: np.ndarray | None = None, threshold: float = 0.5,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """AUC with its 95 % bootstrap CI over patients (:func:`auc_with_ci`), accuracy, balanced accuracy, macro-F1
    (at ``threshold``), ECE, Brier."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    called = (p >= threshold).astype(int)
    auc, low, high = auc_with_ci(y, p, patients=patients, n_boot=n_boot, seed=seed)
    return {"auc": auc, "auc_low": low, "auc_high": high, "accuracy": accuracy_score(y, called),
            "balanced_accuracy": balanced_accuracy_score(y, called),
            "macro_f1": f1_score(y, called, average="macro"), "ece": expected_calibration_error(y, p),
            "brier": float(np.mean((p - y) ** 2)), "n_units": len(y),
            "n_patients": len(np.unique(patients)) if patients is not None else len(y)}
