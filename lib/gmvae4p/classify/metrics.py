"""Per-unit metrics of a binary classifier: predictions are averaged per unit first (mean probability over its
pseudobulk samples), so a unit counts once whatever its number of samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score


def unit_probabilities(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean positive-class probability per unit from per-sample rows (columns ``unit``, ``label``,
    ``probability``); one row per unit with its label."""
    grouped = samples.groupby("unit", observed=True, sort=True)
    if (grouped["label"].nunique() > 1).any():
        raise ValueError("a unit's samples carry different labels.")
    return grouped.agg(label=("label", "first"), probability=("probability", "mean")).reset_index()


def auc_with_ci(y: np.ndarray, p: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                seed: int = 0) -> tuple[float, float, float]:
    """ROC-AUC and its percentile bootstrap interval over units (resamples holding one class only are redrawn:
    AUC is undefined there)."""
    y, p = np.asarray(y), np.asarray(p)
    return _with_interval(y, lambda pick: roc_auc_score(y[pick], p[pick]), n_boot=n_boot, level=level, seed=seed)


def _with_interval(y: np.ndarray, statistic, *, n_boot: int, level: float, seed: int) -> tuple[float, float, float]:
    """``statistic`` of all units and its percentile interval over ``n_boot`` resamples of units (index arrays);
    a resample holding one class only is redrawn."""
    rng = np.random.default_rng(seed)
    draws = []
    while len(draws) < n_boot:
        pick = rng.integers(0, len(y), len(y))
        if y[pick].min() != y[pick].max():
            draws.append(statistic(pick))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(statistic(np.arange(len(y)))), float(low), float(high)


def paired_auc_difference(y: np.ndarray, p: np.ndarray, p_reference: np.ndarray, *, n_boot: int = 1000,
                          level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """AUC(p) − AUC(p_reference) on the same units, with a percentile interval from resampling units (both models
    scored on each resample, so the interval reflects their paired difference)."""
    y, p, p_reference = np.asarray(y), np.asarray(p), np.asarray(p_reference)
    return _with_interval(y, lambda pick: roc_auc_score(y[pick], p[pick]) - roc_auc_score(y[pick], p_reference[pick]),
                          n_boot=n_boot, level=level, seed=seed)


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


def binary_metrics(y: np.ndarray, p: np.ndarray, *, threshold: float = 0.5, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, float]:
    """AUC with its 95 % bootstrap CI, accuracy, balanced accuracy, macro-F1 (at ``threshold``), ECE, Brier."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    called = (p >= threshold).astype(int)
    auc, low, high = auc_with_ci(y, p, n_boot=n_boot, seed=seed)
    return {"auc": auc, "auc_low": low, "auc_high": high, "accuracy": accuracy_score(y, called),
            "balanced_accuracy": balanced_accuracy_score(y, called),
            "macro_f1": f1_score(y, called, average="macro"), "ece": expected_calibration_error(y, p),
            "brier": float(np.mean((p - y) ** 2)), "n_units": len(y)}
