import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gmvae4p import keys
from gmvae4p.classify import baselines
from gmvae4p.classify.baselines import BASELINES, fit_predict_baselines
from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
from gmvae4p.classify.metrics import binary_metrics


def _samples(n_patients=16, n_samples=4, n_genes=60, signal=1.5, seed=0):
    """Mixture samples per patient plus one whole-patient row; gene 0 and the composition carry the label."""
    rng = np.random.default_rng(seed)
    label = np.where(np.arange(n_patients) % 2 == 0, "SLE", "healthy")
    rows = [(f"P{i:02d}_{k}", f"P{i:02d}", f"P{i:02d}", label[i], kind)
            for i in range(n_patients) for k, kind in enumerate(["mixture"] * n_samples + ["whole"])]
    obs = pd.DataFrame(rows, columns=["sample_id", "unit", "patient", "label", "kind"]).set_index("sample_id",
                                                                                                  drop=False)
    x = rng.normal(size=(len(obs), n_genes)).astype(np.float32)
    positive = (obs["label"] == "SLE").to_numpy()
    x[positive, 0] += signal
    samples = ad.AnnData(X=x, obs=obs)
    first = np.clip(0.5 + 0.15 * positive + rng.normal(0, 0.05, len(obs)), 0, 1)
    samples.obsm[keys.COMPOSITION] = pd.DataFrame({"A": first, "B": 1 - first}, index=obs.index)
    return samples


def _units(samples):
    return unit_table(samples, "SLE")


def test_every_baseline_is_trained_and_predicts_each_test_unit_once():
    samples = _samples(signal=2.5)
    folds = patient_folds(_units(samples), n_folds=4, seed=1)
    predictions = fit_predict_baselines(samples, sample_labels(samples, _units(samples)), folds, n_top_genes=10)
    assert set(predictions["method"]) == set(BASELINES)
    for method, part in predictions.groupby("method"):
        assert sorted(part["unit"]) == sorted(_units(samples)["unit"])
        metrics = binary_metrics(part["label"], part["probability"], n_boot=50)
        assert metrics["auc"] > 0.8, (method, metrics)


def test_gene_selection_never_sees_a_test_units_samples(monkeypatch):
    samples = _samples()
    folds = patient_folds(_units(samples), n_folds=4, seed=2)
    units = samples.obs["unit"].to_numpy()
    seen = []
    original = baselines.most_variable

    def spy(features, rows, n_top):
        seen.append(set(units[rows]))
        return original(features, rows, n_top)

    monkeypatch.setattr(baselines, "most_variable", spy)
    fit_predict_baselines(samples, sample_labels(samples, _units(samples)), folds, methods=["logistic_regression"],
                          n_top_genes=5)
    assert len(seen) == len(folds)
    for fold, rows_units in zip(folds, seen):
        assert rows_units and not rows_units & set(fold.test)


def test_unknown_baseline_is_an_error():
    with pytest.raises(ValueError, match="unknown baseline"):
        fit_predict_baselines(_samples(), np.zeros(1), [], methods=["svm"])
