"""Per-unit metrics of a binary classifier: predictions are averaged per unit first (mean probability over its
pseudobulk samples), so a unit counts once whatever its number of samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score


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
    y, p = _binary(y), np.asarray(p, dtype=float)
    return _with_interval(y, lambda picks: _auc_rows(y[picks], p[picks]), n_boot=n_boot, level=level, seed=seed)


def paired_auc_difference(y: np.ndarray, p: np.ndarray, p_reference: np.ndarray, *, n_boot: int = 1000,
                          level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """AUC(p) − AUC(p_reference) on the same units, with a percentile interval from resampling units (both models
    scored on each resample, so the interval reflects their paired difference)."""
    y, p, p_reference = _binary(y), np.asarray(p, dtype=float), np.asarray(p_reference, dtype=float)
    return _with_interval(y, lambda picks: _auc_rows(y[picks], p[picks]) - _auc_rows(y[picks], p_reference[picks]),
                          n_boot=n_boot, level=level, seed=seed)


def _with_interval(y: np.ndarray, statistic, *, n_boot: int, level: float, seed: int) -> tuple[float, float, float]:
    """``statistic`` of all units and its percentile interval over ``n_boot`` resamples of units. ``statistic``
    maps a (resamples × units) index array to one value per resample; a resample holding one class only is redrawn
    (the resamples are the draws of ``n_boot`` successive ``rng.integers(0, n, n)`` calls, skipping those)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    picks = np.empty((0, n), dtype=np.int64)
    while len(picks) < n_boot:
        batch = rng.integers(0, n, (n_boot - len(picks), n))
        classes = y[batch]
        picks = np.concatenate([picks, batch[classes.min(1) != classes.max(1)]])
    low, high = np.quantile(statistic(picks), [(1 - level) / 2, (1 + level) / 2])
    return float(statistic(np.arange(n)[None])[0]), float(low), float(high)


def _auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of (resamples × units) labels and scores, from the positives' mean ranks (ties share
    their rank: the Mann–Whitney statistic, as ``roc_auc_score`` computes it)."""
    ranks = rankdata(p, axis=1)
    positives = y.sum(1)
    negatives = y.shape[1] - positives
    return ((ranks * y).sum(1) - positives * (positives + 1) / 2) / (positives * negatives)


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
