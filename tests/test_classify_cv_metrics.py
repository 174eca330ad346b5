import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from gmvae4p.classify import cv
from gmvae4p.classify.cv import FoldError, folds_table, most_variable, patient_folds, read_folds, unit_table
from gmvae4p.classify.metrics import (auc_with_ci, binary_metrics, expected_calibration_error, paired_auc_difference,
                                     patient_draws, unit_probabilities)


def _units(n_patients=20, samples_per_patient=1):
    rows = [(f"P{i:02d}" + (f"_s{j}" if samples_per_patient > 1 else ""), f"P{i:02d}",
             ("SLE" if i % 2 else "healthy") if samples_per_patient == 1 else ("stim" if j else "ctrl"))
            for i in range(n_patients) for j in range(samples_per_patient)]
    return pd.DataFrame(rows, columns=["unit", "patient", "label"])


@pytest.mark.parametrize("samples_per_patient", [1, 2])
def test_folds_keep_each_patient_on_one_side_and_test_every_unit_once(samples_per_patient):
    units = _units(samples_per_patient=samples_per_patient)
    patient_of = dict(zip(units["unit"], units["patient"]))
    folds = patient_folds(units, n_folds=5, seed=3)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == sorted(units["unit"])
    for fold in folds:
        sides = [{patient_of[u] for u in side} for side in (fold.train, fold.validation, fold.test)]
        assert len(fold.validation) > 0
        assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
        assert set(fold.train) | set(fold.validation) | set(fold.test) == set(units["unit"])
    assert [list(f.test) for f in folds] == [list(f.test) for f in patient_folds(units, n_folds=5, seed=3)]


def test_folds_spread_each_label_and_batch_stratum_evenly_over_the_test_folds():
    # 60 patients, 30 of each label, batches 13/17 and 17/13 (a null cohort of the benchmark): stratified by label
    # only, some fold seed puts one label's test patients in one batch and the other's in the other
    label = np.repeat(["SLE", "healthy"], 30)
    batch = np.where(np.r_[np.arange(30) < 17, np.arange(30) < 13], "b1", "b2")
    units = pd.DataFrame({"unit": [f"P{i:02d}" for i in range(60)], "patient": [f"P{i:02d}" for i in range(60)],
                          "label": label, "batch": batch})
    stratum = units["label"] + units["batch"]
    for seed in range(10):
        for fold in patient_folds(units, n_folds=5, seed=seed):
            per_stratum = stratum[units["unit"].isin(fold.test)].value_counts()
            expected = stratum.value_counts() / 5
            assert (per_stratum.reindex(expected.index, fill_value=0) - expected).abs().max() < 1, (seed, fold)
    confounded = []
    for seed in range(10):
        for fold in patient_folds(units.drop(columns="batch"), n_folds=5, seed=seed):
            test = units[units["unit"].isin(fold.test)]
            share = test.groupby("label")["batch"].apply(lambda b: (b == "b1").mean())
            confounded.append(abs(share["SLE"] - share["healthy"]))
    assert max(confounded) >= 0.5  # what the batch strata prevent


def test_units_carry_the_batch_their_samples_carry():
    obs = pd.DataFrame({"unit": ["s1", "s1", "s2", "s3"], "patient": ["a", "a", "a", "b"],
                        "label": ["x", "x", "y", "y"]}, index=["0", "1", "2", "3"])
    samples = ad.AnnData(np.zeros((4, 1)), obs=obs)
    assert "batch" not in unit_table(samples, "y")  # no batch: stratified by label only
    samples.obs["batch"] = pd.Categorical(["B1", "B1", "B2", "B3"])
    assert unit_table(samples, "y")[["unit", "batch"]].values.tolist() == [["s1", "B1"], ["s2", "B2"], ["s3", "B3"]]


def test_the_folds_table_that_stage_04_writes_gives_back_the_same_units_and_folds(tmp_path):
    units = _units(samples_per_patient=2)
    units = units.assign(unit=units["unit"].str.replace("P", ""), y=(units["label"] == "stim").astype(int))
    folds = patient_folds(units, n_folds=4, seed=1)
    folds_table(units, folds).to_csv(tmp_path / "folds.csv", index=False)
    read_units, read = read_folds(pd.read_csv(tmp_path / "folds.csv"))  # unit names that look like numbers stay text
    pd.testing.assert_frame_equal(read_units, units[["unit", "patient", "label", "y"]])
    assert [f.index for f in read] == [0, 1, 2, 3]
    for fold, back in zip(folds, read):
        for side in ("train", "validation", "test"):
            assert list(getattr(back, side)) == list(getattr(fold, side)), side
    with pytest.raises(FoldError, match="lacks every fold_<i>"):
        read_folds(units)


def test_most_variable_ranks_training_rows_by_variance_ignoring_nan_across_column_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 25)).astype(np.float32) * np.linspace(0.1, 3.0, 25, dtype=np.float32)
    features[:, 4:][rng.random((40, 21)) < 0.1] = np.nan  # the first block has no NaN: computed without nanvar
    features[:, 7] = np.nan  # a type never drawn: never chosen
    features[30:, 2] = 50.0  # varies only outside the training rows
    rows = np.arange(30)
    monkeypatch.setattr(cv, "COLUMN_BLOCK", 4)  # several blocks, the last one short
    chosen = most_variable(features, rows, 5)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        variance = np.nan_to_num(np.nanvar(features[rows], axis=0), nan=-np.inf)
    assert list(chosen) == sorted(np.argsort(-variance, kind="stable")[:5]) and 7 not in chosen and 2 not in chosen
    for n_top in range(1, 25):  # the whole ranking, the NaN-free block's columns among it
        assert list(most_variable(features, rows, n_top)) == sorted(np.argsort(-variance, kind="stable")[:n_top])
    assert len(most_variable(features, rows, 30)) == 25 and len(most_variable(features, rows[:0], 3)) == 3


def test_a_training_fold_of_one_patient_has_no_validation_split_and_bad_settings_are_named():
    units = _units(n_patients=2, samples_per_patient=2)
    folds = patient_folds(units, n_folds=2)
    assert all(len(f.validation) == 0 and len(f.train) == 2 for f in folds)
    with pytest.raises(FoldError, match=r"n_folds must be between 2 and the number of patients \(2\), not 5"):
        patient_folds(units, n_folds=5)
    with pytest.raises(FoldError, match="validation_fraction"):
        patient_folds(units, n_folds=2, validation_fraction=1.0)


def test_ece_matches_a_hand_computation():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.12, 0.95, 1.0])
    # bins: [0, .1): {0.05 → y 0}; [.1, .2): {0.15 → 0, 0.12 → 1}; [.9, 1]: {0.95 → 1, 1.0 → 1}
    hand = (1 * abs(0 - 0.05) + 2 * abs(0.5 - 0.135) + 2 * abs(1 - 0.975)) / 5
    assert expected_calibration_error(y, p) == pytest.approx(hand)


def test_auc_ci_matches_a_hand_bootstrap_and_is_degenerate_for_a_perfect_ranking():
    y = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    p = np.array([0.2, 0.7, 0.6, 0.4, 0.9, 0.1, 0.8, 0.3])
    auc, low, high = auc_with_ci(y, p, n_boot=200, seed=5)
    rng, draws = np.random.default_rng(5), []
    while len(draws) < 200:
        pick = rng.integers(0, 8, 8)
        if len(set(y[pick])) == 2:
            draws.append(roc_auc_score(y[pick], p[pick]))
    assert auc == pytest.approx(roc_auc_score(y, p)) and roc_auc_score(y, p) == 15 / 16  # 0.4 ranks below 0.6
    # the vectorized rank statistic equals sklearn's AUC resample by resample (to rounding)
    assert (low, high) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])), abs=1e-12)
    assert auc_with_ci(y, y * 0.5 + 0.25, n_boot=50) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        auc_with_ci(y * 2, p)


def test_intervals_resample_patients_and_do_not_depend_on_the_order_of_units():
    rng = np.random.default_rng(0)
    patient_y = np.arange(16) % 2
    patient_score = rng.normal(patient_y * 0.8, 1.0)
    # each patient has three units scoring alike: counted as independent units, they would narrow the interval
    patients = np.repeat([f"P{i:02d}" for i in range(16)], 3)
    y, p = np.repeat(patient_y, 3), np.repeat(patient_score, 3) + rng.normal(0, 0.01, 48)
    by_patient = auc_with_ci(y, p, patients=patients, n_boot=400)
    by_unit = auc_with_ci(y, p, n_boot=400)
    assert by_patient[0] == by_unit[0] == pytest.approx(roc_auc_score(y, p))
    assert by_patient[2] - by_patient[1] > 1.4 * (by_unit[2] - by_unit[1])
    order = rng.permutation(48)  # the same units in another order: the same draws, the same interval
    assert auc_with_ci(y[order], p[order], patients=patients[order], n_boot=400) == pytest.approx(by_patient)
    metrics = binary_metrics(y, p, patients=patients, n_boot=400)
    assert (metrics["auc_low"], metrics["auc_high"]) == pytest.approx(by_patient[1:])
    assert metrics["n_units"] == 48 and metrics["n_patients"] == 16
    weights = patient_draws(y, patients, n_boot=50, seed=1)
    assert weights.shape == (50, 48) and (weights.reshape(50, 16, 3).std(2) == 0).all()  # a patient's units move together
    assert (weights.sum(1) == 48).all()
    delta = paired_auc_difference(y, p, -p, patients=patients, n_boot=400)
    assert delta[0] == pytest.approx(2 * by_patient[0] - 1) and delta[1] <= delta[0] <= delta[2]


def test_metrics_are_per_unit_not_per_sample():
    samples = pd.DataFrame({"unit": ["a", "a", "a", "b", "c", "c"], "label": [1, 1, 1, 0, 0, 0],
                            "probability": [0.9, 0.7, 0.8, 0.4, 0.2, 0.6]})
    units = unit_probabilities(samples)
    assert units["unit"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(units["probability"], [0.8, 0.4, 0.4])
    metrics = binary_metrics(units["label"], units["probability"], n_boot=20)
    assert metrics["n_units"] == 3 and metrics["accuracy"] == 1.0
    assert metrics["brier"] == pytest.approx((0.2 ** 2 + 0.4 ** 2 + 0.4 ** 2) / 3)


def test_most_variable_looks_at_the_given_rows_only():
    features = np.array([[0.0, 0, 5], [0, 1, 5], [9, 0, -5], [np.nan, 2, np.nan]])
    assert most_variable(features, np.array([0, 1, 3]), 1).tolist() == [1]
    assert most_variable(features, np.array([0, 1, 2]), 1).tolist() == [2]
