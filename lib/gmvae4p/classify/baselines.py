"""Baselines on the same folds as GMVAE4P: logistic regression, random forest and XGBoost on pseudobulk log-CPM,
and logistic regression on true composition.

Each is fitted on the mixture samples of a fold's training units (training and validation patients: these models
have no early stopping) and scores the test units' mixture samples; a unit's probability is the mean over its
samples. Everything fitted — gene selection (the most variable genes over the training samples), scaling, the model —
sees training units only.
"""

from __future__ import annotations

from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import keys
from .config import N_TOP_GENES
from .cv import Fold, most_variable
from .metrics import unit_probabilities
from .workers import task_threads

EXPRESSION, COMPOSITION = "expression", "composition"

BASELINES: dict[str, tuple[str, Callable[[int], ClassifierMixin]]] = {
    "logistic_regression": (EXPRESSION, lambda seed: make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000))),
    "random_forest": (EXPRESSION, lambda seed: RandomForestClassifier(
        n_estimators=300, min_samples_leaf=2, class_weight="balanced", n_jobs=task_threads(), random_state=seed)),
    # 32 histogram bins: training sets are hundreds of samples, and 256 bins make each fit several times slower
    "xgboost": (EXPRESSION, lambda seed: _xgboost()(
        n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8, colsample_bytree=0.5, max_bin=32,
        random_state=seed, n_jobs=task_threads())),
    "composition_logistic_regression": (COMPOSITION, lambda seed: make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))),
}
"""Name → (input, factory of an unfitted sklearn classifier given a seed)."""


def _xgboost():
    """XGBoost's classifier, imported when first used: GMVAE4P and the other methods run where it is not installed."""
    from xgboost import XGBClassifier

    return XGBClassifier


def fit_predict_baselines(samples: ad.AnnData, y: np.ndarray, folds: list[Fold], *,
                          methods: list[str] | None = None, n_top_genes: int = N_TOP_GENES,
                          seed: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions per unit: columns ``method``, ``fold``, ``unit``, ``label`` (1 = positive),
    ``probability``; ``y`` is each sample's label (1 = positive, see :func:`~gmvae4p.classify.cv.sample_labels`)."""
    methods = list(BASELINES) if methods is None else methods
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {list(BASELINES)}.")
    mixture = (samples.obs[keys.KIND] == "mixture").to_numpy()
    units = samples.obs["unit"].astype(str).to_numpy()
    expression = np.asarray(samples.X, dtype=np.float32)
    composition = np.asarray(samples.obsm[keys.COMPOSITION], dtype=np.float32)
    rows = []
    for fold in folds:
        train = np.flatnonzero(mixture & np.isin(units, np.concatenate([fold.train, fold.validation])))
        test = np.flatnonzero(mixture & np.isin(units, fold.test))
        genes = most_variable(expression, train, n_top_genes)
        for method in methods:
            source, factory = BASELINES[method]
            features = expression[:, genes] if source == EXPRESSION else composition
            model = factory(seed + fold.index).fit(features[train], y[train])
            probability = model.predict_proba(features[test])[:, 1]
            per_sample = pd.DataFrame({"unit": units[test], "label": y[test], "probability": probability})
            rows.append(unit_probabilities(per_sample).assign(method=method, fold=fold.index))
    return pd.concat(rows, ignore_index=True)[["method", "fold", "unit", "label", "probability"]]
