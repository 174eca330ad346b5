"""A disease program learned from the training units: GMVAE4P's bulk input when ``bulk_input`` is ``program``.

A disease signature such as lupus's interferon response is a set of genes that rise and fall together from patient
to patient. With tens of patients, labels alone find such genes poorly: a label is a noisy readout of disease
activity (on the embedded cohort the true activity separates the classes at AUC 0.82 only), so by t statistic the
program's genes rank among noise genes. Their co-variation across patients is much stronger than their association
with the label, so once a few of them are known, correlation with their common axis finds the rest. Fitted on the
training units' samples only:

1. Per unit, the mean expression of its samples; each gene standardized over the units.
2. Seed genes: the ``n_seed_genes`` with the largest |Welch t| between the units of the two labels.
3. ``iterations`` times: score every unit by the first principal component of the current genes, and take as the
   new genes those whose correlation with that score passes a Bonferroni test at ``alpha`` over all genes (Fisher's
   z with the number of units), as long as at least two pass.
4. The score of a sample: the first principal component of the final genes over the training samples (each gene
   standardized over them), oriented to rise with the positive label and scaled to unit SD over those samples.

This is supervised principal components (Bair and Tibshirani, 2006) whose gene set grows by co-expression, as a
module eigengene would be read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy.stats import norm

MIN_GENES = 2
"""Fewest genes a co-expression step may keep; below it the previous genes stay."""


@dataclasses.dataclass
class LearnedProgram:
    """The genes of the program (column indices), their centring and scale over the training samples, and the
    loading that turns the standardized genes into the score (``score = ((x - mean) / scale) @ loading``)."""

    genes: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    loading: np.ndarray
    seed_genes: np.ndarray
    correlation_threshold: float
    """|r| a gene needed with the units' program score to join (``nan`` when too few units to test)."""

    @classmethod
    def fit(cls, expression: np.ndarray, rows: np.ndarray, units: np.ndarray, y: np.ndarray, *,
            n_seed_genes: int = 20, iterations: int = 3, alpha: float = 0.05) -> LearnedProgram:
        """The program of samples ``rows`` of ``expression`` (samples × genes, log scale); ``units`` and ``y``
        (1 = positive label) give each sample's unit and label, for every sample of ``expression``."""
        values = np.asarray(expression[rows], dtype=np.float64)
        sample_units, sample_y = np.asarray(units)[rows], np.asarray(y)[rows]
        means = pd.DataFrame(values).groupby(sample_units, sort=True).mean().to_numpy()
        unit_y = pd.Series(sample_y).groupby(sample_units, sort=True).first().to_numpy()
        spread = means.std(0)
        varying = spread > 1e-8
        n_varying = int(varying.sum())
        z = np.zeros_like(means)
        z[:, varying] = (means[:, varying] - means[:, varying].mean(0)) / spread[varying]
        t = np.where(varying, np.abs(_welch_t(means, unit_y)), -np.inf)
        if n_varying == 0:  # one unit only: rank genes by their spread over its samples instead
            t = values.std(0)
        seed = np.sort(np.argsort(-t, kind="stable")[:min(n_seed_genes, n_varying or t.size)])
        genes, threshold = seed, np.nan
        n_units = len(means)
        if n_units > 3 and n_varying > 0:
            threshold = float(np.tanh(norm.isf(alpha / (2 * n_varying)) / np.sqrt(n_units - 3)))
            for _ in range(iterations):
                score = z[:, genes] @ _first_component(z[:, genes])
                correlation = z.T @ (score - score.mean()) / (n_units * max(score.std(), 1e-12))
                joined = np.flatnonzero(varying & (np.abs(correlation) > threshold))
                if len(joined) < MIN_GENES or np.array_equal(joined, genes):
                    break
                genes = joined
        # the score over samples, as it will be read: each gene standardized over the training samples
        centre, scale = values[:, genes].mean(0), values[:, genes].std(0)
        scale = np.where(scale > 1e-8, scale, 1.0)
        standardized = (values[:, genes] - centre) / scale
        loading = _first_component(standardized)
        score = standardized @ loading
        direction = np.corrcoef(score, sample_y)[0, 1] if np.ptp(sample_y) else 1.0
        loading = loading * (-1.0 if direction < 0 else 1.0) / max(score.std(), 1e-12)
        return cls(genes=genes, mean=centre, scale=scale, loading=loading, seed_genes=seed,
                   correlation_threshold=threshold)

    def score(self, expression: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The program's score of samples ``rows`` (float32)."""
        standardized = (np.asarray(expression[np.ix_(rows, self.genes)], dtype=np.float64) - self.mean) / self.scale
        return (standardized @ self.loading).astype(np.float32)


def _welch_t(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Welch's t of each column between rows with ``y`` 1 and 0 (0 where a label has no rows)."""
    positive, negative = values[y == 1], values[y == 0]
    if not len(positive) or not len(negative):
        return np.zeros(values.shape[1])
    variance = lambda part: part.var(0, ddof=1) / len(part) if len(part) > 1 else np.zeros(values.shape[1])
    return (positive.mean(0) - negative.mean(0)) / np.sqrt(variance(positive) + variance(negative) + 1e-12)


def _first_component(values: np.ndarray) -> np.ndarray:
    """Unit-norm loading of the first principal component of the rows of ``values`` (columns centred here)."""
    centred = values - values.mean(0)
    return np.linalg.svd(centred, full_matrices=False)[2][0]
