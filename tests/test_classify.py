"""GMVAE4P on pseudobulk samples, the cell-level baselines, the shared training loop and the stage's tables."""

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from gmvae4p import keys
from gmvae4p.data import io, read_h5ad, write_h5ad, x_on_disk
from gmvae4p.classify import cell_baselines, deploy, evaluate, model as model_module
from gmvae4p.classify.cell_baselines import CELL_BASELINES, CellData, fit_predict_cell_baselines
from gmvae4p.classify.config import METHODS, ClassifierConfig
from gmvae4p.classify.cv import FoldError, patient_folds, permute_labels, sample_labels, subsample_fold, unit_table
from gmvae4p.classify.model import BULK, GMVAE4P, FoldFeatures
from gmvae4p.classify.module import PerTypeModule, PrototypeModule
from gmvae4p.classify.training import fit
from gmvae4p.classify import workers as workers_module
from gmvae4p.classify.workers import FoldWorkers, task_threads

FAST = ClassifierConfig(hidden_dim=32, embed_dim=16, batch_size=32, max_epochs=60, patience=8, lr=3e-3, stack_folds=2)
PATIENT = ClassifierConfig(hidden_dim=32, embed_dim=16, max_epochs=100, patience=40, lr=3e-3)
"""For the cell-level networks: three validation units make a noisy loss, so they get more patience."""


def _samples(n_patients=24, n_samples=5, n_genes=40, signal=2.0, seed=0):
    """Mixture samples plus one whole row per patient; genes 0–4 (a program), state column 0 and communication
    column 0 carry the label; states have NaN where a 'type' was not drawn."""
    rng = np.random.default_rng(seed)
    label = np.where(np.arange(n_patients) % 2 == 0, "SLE", "healthy")
    rows = [(f"P{i:02d}_{k}", f"P{i:02d}", f"P{i:02d}", label[i], kind)
            for i in range(n_patients) for k, kind in enumerate(["mixture"] * n_samples + ["whole"])]
    obs = pd.DataFrame(rows, columns=["sample_id", "unit", "patient", "label", keys.KIND]).set_index("sample_id",
                                                                                                       drop=False)
    positive = (obs["label"] == "SLE").to_numpy()
    x = rng.normal(size=(len(obs), n_genes)).astype(np.float32)
    x[positive, :5] += signal
    samples = ad.AnnData(X=x, obs=obs)
    proportions = rng.dirichlet(np.ones(3), len(obs))
    samples.obsm[keys.PROPORTIONS] = pd.DataFrame(proportions, index=obs.index, columns=["A", "B", "C"])
    samples.obsm[keys.COMPOSITION] = samples.obsm[keys.PROPORTIONS].copy()
    states = rng.normal(size=(len(obs), 6)).astype(np.float32)
    states[positive, 0] += signal
    states[rng.random(len(obs)) < 0.2, 3:] = np.nan
    samples.obsm[keys.STATES] = states
    samples.obsm[keys.STATES_EXPRESSION] = rng.normal(size=(len(obs), 12)).astype(np.float32)
    samples.obsm[keys.STATES_GMVAE_MSE] = states + rng.normal(size=states.shape).astype(np.float32)
    communication = rng.normal(size=(len(obs), 30)).astype(np.float32)
    communication[positive, 0] += signal
    samples.obsm[keys.COMMUNICATION] = communication
    return samples


def _mixture_rows(samples, units):
    unit = samples.obs["unit"].to_numpy()
    return np.flatnonzero((samples.obs[keys.KIND] == "mixture").to_numpy() & np.isin(unit, units))


def test_fold_features_select_and_scale_on_training_rows_only():
    samples = _samples()
    units = unit_table(samples, "SLE")
    fold = patient_folds(units, n_folds=4, seed=0)[0]
    train = _mixture_rows(samples, fold.train)
    test = _mixture_rows(samples, fold.test)
    blocks = dict(blocks=(BULK, keys.STATES, keys.COMMUNICATION), n_top_genes=10, n_top_interactions=5)
    before = FoldFeatures.fit(samples, train, **blocks)
    # informative (and hugely variable) only among the test units' samples, in a column not chosen so far
    gene = np.setdiff1d(np.arange(samples.n_vars), before.columns[BULK])[0]
    interaction = np.setdiff1d(np.arange(30), before.columns[keys.COMMUNICATION])[0]
    samples.X[test, gene] = 1000.0 * (sample_labels(samples, units)[test] + 1)
    samples.obsm[keys.COMMUNICATION][test, interaction] *= 1000.0
    features = FoldFeatures.fit(samples, train, **blocks)
    assert gene not in features.columns[BULK] and interaction not in features.columns[keys.COMMUNICATION]
    for name in features.columns:  # nothing fitted moved
        np.testing.assert_array_equal(features.columns[name], before.columns[name])
        np.testing.assert_array_equal(features.scale[name], before.scale[name])
    scaled = features.transform(samples, train)
    np.testing.assert_allclose(scaled[BULK].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.nanstd(scaled[keys.STATES], 0), 1, atol=1e-4)
    assert np.isnan(scaled[keys.STATES]).any(), "a type not drawn stays missing"


def test_gmvae4p_learns_a_planted_signal_and_both_deployments_predict():
    samples = _samples()
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    fold = patient_folds(units, n_folds=4, seed=1)[0]
    model = GMVAE4P(FAST, n_top_genes=20, n_top_interactions=10, device="cpu", seed=0)
    model.fit(samples, y, train=_mixture_rows(samples, fold.train), validation=_mixture_rows(samples, fold.validation))
    assert 1 <= len(model.history) <= FAST.max_epochs and "validation_loss" in model.history[0]
    test = np.flatnonzero(samples.obs["unit"].isin(fold.test).to_numpy())
    bulk, scrna = model.predict(samples, test), model.predict(samples, test, use_true=True)
    for predicted in (bulk, scrna):
        assert ((predicted.probability > 0.5) == y[test].astype(bool)).mean() > 0.8
        np.testing.assert_allclose(predicted.fusion_weights.sum(1), 1, rtol=1e-5)
    assert list(bulk.fusion_weights.columns) == list(model_module.MODALITIES)
    assert bulk.fused.shape == (len(test), FAST.embed_dim)


def test_cross_validate_tests_every_unit_once_per_method_and_selects_genes_on_training_units(monkeypatch):
    samples = _samples()
    units = unit_table(samples, "SLE")
    folds = patient_folds(units, n_folds=4, seed=2)
    unit = samples.obs["unit"].to_numpy()
    seen = []
    original, program_fit = model_module.most_variable, model_module.LearnedProgram.fit
    monkeypatch.setattr(model_module, "most_variable",
                        lambda features, rows, n: seen.append(set(unit[rows])) or original(features, rows, n))
    monkeypatch.setattr(model_module.LearnedProgram, "fit", lambda expression, rows, *args, **kwargs:
                        seen.append(set(unit[rows])) or program_fit(expression, rows, *args, **kwargs))
    methods = ["gmvae4p", "logistic_regression", "composition_logistic_regression"]
    result = evaluate.cross_validate(samples, units, folds, methods=methods, config=FAST, n_top_genes=20,
                                     n_top_interactions=10, device="cpu", progress=False)
    for method, part in result.predictions.groupby("method"):
        assert sorted(part["unit"]) == sorted(units["unit"]), method
    # each learner's genes, program and interactions, in each fold and its inner folds (the folds run in turn, each
    # making as many selections): never from the fold's test units
    per_fold, left = divmod(len(seen), len(folds))
    assert left == 0 and per_fold >= 4
    for fold, index in zip(folds, range(0, len(seen), per_fold)):
        for chosen_from in seen[index:index + per_fold]:
            assert chosen_from and not chosen_from & set(fold.test)
    # no patient's units on both sides of a fold, for any method
    patient = units.set_index("unit")["patient"]
    for row in result.predictions.itertuples():
        fold = folds[row.fold]
        assert row.unit in set(fold.test)
        assert patient[row.unit] not in set(patient.loc[np.concatenate([fold.train, fold.validation])])
    assert sorted(result.deployment["unit"]) == sorted(units["unit"])
    assert set(result.seconds) == set(methods) and set(result.histories) == {f.index for f in folds}
    # each learner's probability per test sample: through the fold's stack weights and scales they give GMVAE4P's,
    # and with the network given the true modalities in its place, the scRNA mode's
    learners = result.learners
    assert sorted(learners["unit"].unique()) == sorted(units["unit"])
    assert list(learners.columns) == ["fold", "sample", "unit", "label", *FAST.learners, "network_scrna"]
    scrna_learners = [name if name != "network" else "network_scrna" for name in FAST.learners]
    for (method, columns, suffix) in [("gmvae4p", FAST.learners, ""), (evaluate.SCRNA_NAME, scrna_learners, "_scrna")]:
        for fold, part in learners.groupby("fold"):
            stack = result.stack[result.stack["fold"] == fold]
            p = part[columns].to_numpy()
            z = np.clip(np.log(p) - np.log1p(-p), -10, 10) / stack[f"scale{suffix}"].to_numpy() \
                @ stack[f"weight{suffix}"].to_numpy()
            combined = pd.DataFrame({"unit": part["unit"], "p": 1 / (1 + np.exp(-z))}).groupby("unit")["p"].mean()
            reported = result.predictions.query("method == @method and fold == @fold").set_index("unit")["probability"]
            np.testing.assert_allclose(combined.loc[reported.index], reported, atol=1e-5)
    table1 = evaluate.main_table(result.predictions, references={evaluate.ORACLE_ACTIVITY: (0.9, 0.8, 1.0)},
                                 n_boot=50)
    assert list(table1["method"]) == [methods[0], evaluate.SCRNA_NAME, *methods[1:], evaluate.ORACLE_ACTIVITY]
    assert table1.loc[0, "auc"] > 0.8
    table3 = evaluate.deployment_table(result.deployment, n_boot=50)
    assert table3.loc[1, "retention"] == 1.0
    assert table3.loc[0, "retention"] == pytest.approx(table3.loc[0, "auc"] / table3.loc[1, "auc"])


def test_program_table_counts_each_genes_folds_and_marks_the_simulated_disease_genes():
    program = pd.DataFrame({"fold": [0, 0, 1, 1, 2], "gene": ["IFI6", "G1", "IFI6", "ISG15", "IFI6"],
                            "loading": [0.5, 0.1, 0.7, 0.4, 0.6], "seed": [True, True, False, True, True]})
    table = evaluate.program_table(program, n_folds=4, disease_genes=np.array(["IFI6", "ISG15", "MX1"]))
    assert list(table["gene"]) == ["IFI6", "ISG15", "G1"]  # most folds first, then by loading
    assert table["folds"].tolist() == [3, 1, 1] and table["share_of_folds"].tolist() == [0.75, 0.25, 0.25]
    assert table["seed_folds"].tolist() == [2, 1, 1] and table["mean_loading"].iloc[0] == pytest.approx(0.6)
    assert table["disease_gene"].tolist() == [True, True, False]
    assert evaluate.program_table(pd.DataFrame(), n_folds=4).empty  # bulk_input: genes learns no program


def test_gmvae4p_reads_the_learned_programs_score_or_the_most_variable_genes():
    samples = _samples()
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    fold = patient_folds(units, n_folds=4, seed=1)[0]
    rows = dict(train=_mixture_rows(samples, fold.train), validation=_mixture_rows(samples, fold.validation))
    program = GMVAE4P(FAST, n_top_genes=20, n_top_interactions=10, device="cpu").fit(samples, y, **rows)
    genes = GMVAE4P(dataclasses.replace(FAST, bulk_input="genes"), n_top_genes=20, n_top_interactions=10,
                    device="cpu").fit(samples, y, **rows)
    found = set(program.network.features.program.genes)  # the planted program, found on training rows (14 units)
    assert set(range(5)) <= found and len(found) <= 6
    assert program.network.module.bulk_encoder[0].in_features == 1 and genes.network.features.program is None
    assert genes.network.module.bulk_encoder[0].in_features == 20
    with pytest.raises(ValueError, match="bulk_input must be program or genes, not 'pca'"):
        ClassifierConfig(bulk_input="pca")


def test_reference_aucs_read_the_simulators_activity_and_its_program_in_the_pseudobulk():
    samples = _samples(n_patients=8, n_samples=2, n_genes=3)
    samples.var_names = ["IFI27", "MX1", "G1"]
    x = np.zeros((samples.n_obs, 3), dtype=np.float32)
    mixture = (samples.obs[keys.KIND] == "mixture").to_numpy()
    patient = samples.obs["patient"].str[1:].astype(int).to_numpy()
    x[:, 0] = patient  # program score 2·patient: ranks the patients in order ...
    x[~mixture, 0] = -patient[~mixture]  # ... on mixture samples only (whole rows are not read)
    x[:, 2] = -10 * patient  # not a disease gene
    samples.X = x
    units = unit_table(samples, "SLE")  # positives are the even patients
    truth = {"patients": np.array([f"P{i:02d}" for i in range(8)]), "patient_activity": -np.arange(8.0),
             "disease_genes": np.array(["IFI27", "MX1", "IFI44L"]), "disease_gene_weights": np.array([2.0, 1.0, 1.0])}
    cells = ad.AnnData(np.zeros((1, 1), dtype=np.float32), uns={keys.UNS_SIMULATION: truth})
    references = evaluate.reference_aucs(cells, samples, units, n_boot=50)
    # positives 0, 2, 4, 6 against negatives 1, 3, 5, 7: a score rising with the patient number wins 6 of 16 pairs
    assert references[evaluate.ORACLE_PROGRAM][0] == pytest.approx(6 / 16)
    assert references[evaluate.ORACLE_ACTIVITY][0] == pytest.approx(10 / 16)  # activity falls with the number
    assert evaluate.reference_aucs(ad.AnnData(np.zeros((1, 1), dtype=np.float32)), samples, units) == {}
    composition_only = {**truth, "effect_size": 0.0, "parameters": {"composition_shift": 0.8}}
    cells.uns[keys.UNS_SIMULATION] = composition_only  # the activity moves composition, no program: one ceiling
    assert list(evaluate.reference_aucs(cells, samples, units, n_boot=50)) == [evaluate.ORACLE_ACTIVITY]
    cells.uns[keys.UNS_SIMULATION] = {**composition_only, "parameters": {"composition_shift": 0.0}}
    assert evaluate.reference_aucs(cells, samples, units, n_boot=50) == {}
    table1 = evaluate.main_table(pd.DataFrame({"method": "m", "fold": 0, "unit": units["unit"], "label": units["y"],
                                               "probability": 0.5}), references=references, n_boot=50)
    assert list(table1["method"]) == ["m", evaluate.ORACLE_ACTIVITY, evaluate.ORACLE_PROGRAM]


def test_worker_processes_give_the_results_of_one_process(monkeypatch):
    """Table 1's folds, a null and the final model, all started before any is collected (as stage 04 does), give
    in two worker processes what they give run one after another in this one."""
    samples = _samples()
    units = unit_table(samples, "SLE")
    cells, _ = _cells(n_units=24)  # unit i is positive when i is even, as in _samples
    cells.units = [f"P{i:02d}" for i in range(24)]
    folds = patient_folds(units, n_folds=3, seed=1)
    methods = ["gmvae4p", "logistic_regression", "prototype_cells"]  # a fold task of each kind
    config = dataclasses.replace(FAST, max_epochs=15)
    settings = dict(cells=cells, config=config, n_top_genes=20, n_top_interactions=10, device="cpu")
    null_settings = dict(methods=["logistic_regression"], n_permutations=2, n_permutations_costly=0, n_folds=3)
    final_settings = dict(n_top_genes=20, n_top_interactions=10, device="cpu")
    alone = evaluate.cross_validate(samples, units, folds, methods=methods, progress=False, **settings)
    null_alone = evaluate.permutation_null(samples, units, progress=False, **null_settings, **settings)
    final_alone = deploy.fit_final(samples, units, config, **final_settings)
    monkeypatch.setattr(workers_module, "MAPPED_BYTES", 1_000)  # these small cells' arrays reach the workers mapped
    with FoldWorkers(samples, cells, n_jobs=2) as workers:
        folder = Path(workers._folder.name)
        # the data the workers read once (pickled, the large arrays as references to their files)
        assert {p.name for p in folder.iterdir()} == {"shared.pickle", "embedding.npy", "zscore.npy",
                                                      "unit_of_cell.npy", "type_of_cell.npy", "type_means.npy"}
        final_fit = deploy.start_final(workers, units, config, **final_settings)
        table1_fits = evaluate.start_cross_validation(samples, units, folds, methods=methods, workers=workers,
                                                      **settings)
        null_fits = evaluate.start_permutation_null(samples, units, workers=workers, **null_settings, **settings)
        shared, null, final = table1_fits.result(progress=False), null_fits.result(progress=False), final_fit.result()
        with pytest.raises(ValueError, match="workers hold other samples"):
            evaluate.cross_validate(samples.copy(), units, folds, workers=workers, methods=methods, **settings)
    assert not folder.exists()
    assert list(shared.predictions["method"].unique()) == [methods[0], evaluate.SCRNA_NAME, *methods[1:]]
    pd.testing.assert_frame_equal(shared.predictions, alone.predictions, atol=1e-5)
    pd.testing.assert_frame_equal(shared.deployment, alone.deployment, atol=1e-5)
    assert set(shared.seconds) == set(methods) and all(v > 0 for v in shared.seconds.values())
    pd.testing.assert_frame_equal(null, null_alone)
    whole = np.flatnonzero(samples.obs[keys.KIND] == keys.WHOLE)
    np.testing.assert_allclose(final.predict(samples, whole).probability,
                               final_alone.predict(samples, whole).probability, atol=1e-5)
    assert null_fits.seconds > 0 and final_fit.seconds > 0


def test_null_labels_keep_each_patients_label_count_and_find_no_signal():
    samples = _samples(signal=3.0)
    units = unit_table(samples, "SLE")
    null_units = permute_labels(units, seed=0)
    assert sorted(null_units["y"]) == sorted(units["y"]) and (null_units["y"] != units["y"]).any()
    folds = patient_folds(null_units, n_folds=4, seed=0)
    result = evaluate.cross_validate(samples, null_units, folds, methods=["gmvae4p", "logistic_regression"],
                                     config=FAST, n_top_genes=20, n_top_interactions=10, device="cpu",
                                     progress=False)
    # no interval above chance: nothing leaks from the test units (below chance is cross-validation's small-sample
    # pessimism on labels without signal, bench/results/null_cohorts_balanced_batches_cpu_2026-12-07)
    for row in evaluate.main_table(result.predictions, n_boot=200).itertuples():
        assert row.auc_low <= 0.5, row


def test_the_permutation_null_refits_each_method_on_its_count_of_permutations_and_gives_p_values():
    samples = _samples(signal=3.0)
    units = unit_table(samples, "SLE")
    null = evaluate.permutation_null(samples, units, methods=["gmvae4p", "logistic_regression"], n_permutations=3,
                                     n_permutations_costly=1, n_folds=3, config=dataclasses.replace(FAST, max_epochs=5),
                                     n_top_genes=20, n_top_interactions=10, device="cpu", progress=False)
    assert null.groupby("method")["permutation"].nunique().to_dict() == {"gmvae4p": 1, evaluate.SCRNA_NAME: 1,
                                                                         "logistic_regression": 3}
    assert null["auc"].between(0, 1).all()
    later = evaluate.permutation_null(samples, units, methods=["logistic_regression"], n_permutations=2,
                                      n_permutations_costly=0, n_folds=3, n_top_genes=20, first=1, progress=False)
    lr = null[null["method"] == "logistic_regression"].set_index("permutation")["auc"]
    assert list(later["permutation"]) == [1, 2] and np.allclose(later["auc"], lr.loc[[1, 2]])  # the same permutations
    table1 = pd.DataFrame({"method": ["logistic_regression", "gmvae4p", "absent"], "auc": [0.9, 0.6, 0.7]})
    hand = pd.DataFrame({"method": ["logistic_regression"] * 3 + ["gmvae4p"], "permutation": [0, 1, 2, 0],
                         "auc": [0.5, 0.95, 0.4, 0.6]})
    table = evaluate.with_null(table1, hand).set_index("method")
    assert table.loc["logistic_regression", "p_value"] == 2 / 4  # one of three permutations reached 0.9
    assert table.loc["gmvae4p", "p_value"] == 1.0 and table.loc["gmvae4p", "n_permutations"] == 1  # a tie counts
    assert table.loc["logistic_regression", "null_mean"] == pytest.approx(1.85 / 3)
    assert np.isnan(table.loc["absent", "p_value"]) and table.loc["absent", "n_permutations"] == 0


def test_paired_design_null_shuffles_within_each_patient():
    units = pd.DataFrame({"unit": ["ctrl1", "stim1", "ctrl2", "stim2"], "patient": ["1", "1", "2", "2"],
                          "label": ["ctrl", "stim"] * 2, "y": [0, 1] * 2})
    for seed in range(5):
        null = permute_labels(units, seed)
        assert (null.groupby("patient")["y"].sum() == 1).all()


def test_small_cohort_folds_draw_whole_patients_of_both_labels_and_keep_the_test_units():
    samples = _samples()
    units = unit_table(samples, "SLE")
    fold = patient_folds(units, n_folds=4, seed=0)[1]
    small = subsample_fold(fold, units, n_units=6, validation_fraction=0.3, seed=4)
    chosen = np.concatenate([small.train, small.validation])
    assert len(chosen) == 6 and set(chosen) <= set(fold.train) | set(fold.validation)
    assert set(units.set_index("unit").loc[chosen, "y"]) == {0, 1}
    assert list(small.test) == list(fold.test) and len(small.validation) > 0
    with pytest.raises(FoldError, match=r"small_cohort_sizes \[40\] must lie between 2 and"):
        evaluate.check_small_cohort_sizes(units, [fold], [6, 40])
    table2 = evaluate.small_cohort_table(samples, units, [fold], sizes=[6], repeats=2,
                                         methods=["logistic_regression"], progress=False)
    assert list(table2["repeat"]) == [0, 1] and table2["auc"].between(0, 1).all()


def test_positive_label_comes_from_the_simulator_or_must_be_named():
    samples = _samples()
    cells = ad.AnnData(np.zeros((2, 1)))
    with pytest.raises(FoldError, match=r"classify.positive_label is null: name the positive label, one of "
                                        r"\['SLE', 'healthy'\]"):
        evaluate.positive_label(cells, samples, None)
    cells.uns[keys.UNS_SIMULATION] = {"positive_label": "SLE"}
    assert evaluate.positive_label(cells, samples, None) == "SLE"
    assert evaluate.positive_label(cells, samples, "healthy") == "healthy"
    with pytest.raises(FoldError, match="positive_label 'lupus' must be one of exactly two labels"):
        unit_table(samples, "lupus")


def _cells(n_units=20, per_unit=60, n_types=3, latent=4, n_genes=12, seed=0):
    """Cells (as :class:`CellData` and as the AnnData stage 02 writes) of units with alternating labels; type 0's z-score dim 0 and every type's gene 0 carry the label (the
    per-type vote needs most types informative)."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(n_units), per_unit)
    cell_type = rng.integers(0, n_types, len(unit))
    cell_type[::per_unit] = 0  # every unit has type 0
    positive = (unit % 2 == 0)
    zscore = rng.normal(size=(len(unit), latent)).astype(np.float32)
    zscore[positive & (cell_type == 0), 0] += 2.0
    expression = rng.poisson(1.0, size=(len(unit), n_genes)).astype(np.float32)
    expression[positive, 0] += 3.0
    names, types = [f"U{u:02d}" for u in range(n_units)], [f"T{t}" for t in range(n_types)]
    embedding = zscore + rng.normal(size=zscore.shape).astype(np.float32)
    data = CellData(names, unit, types, cell_type, embedding, zscore, sp.csr_matrix(np.log1p(expression)))
    units = pd.DataFrame({"unit": names, "patient": names, "label": np.where(positive[::per_unit], "SLE", "healthy")})
    return data, units.assign(y=(units["label"] == "SLE").astype(int))


def _cells_anndata(data: CellData, expression: np.ndarray) -> ad.AnnData:
    cells = ad.AnnData(expression, obs=pd.DataFrame({"donor": np.asarray(data.units)[data.unit_of_cell],
                                                     "type": np.asarray(data.cell_types)[data.type_of_cell]},
                                                    index=[f"c{i}" for i in range(len(data.unit_of_cell))]))
    cells.obsm[keys.X_GMVAE], cells.obsm[keys.X_GMVAE_ZSCORE] = data.embedding, data.zscore
    cells.uns[keys.UNS] = {"columns": {"patient": "donor", "cell_type": "type"}}
    return cells


def test_cell_data_group_means_are_exact_and_missing_types_are_nan():
    data, _ = _cells(n_units=20, n_types=8)  # 20 × 8 groups: more than small integer codes hold
    data.type_of_cell[data.unit_of_cell == 3] = 0  # unit 3 has only type 0
    dense = np.random.default_rng(1).poisson(1.0, (len(data.unit_of_cell), 12)).astype(np.float32)
    data = CellData.from_anndata(_cells_anndata(data, dense))
    means = data.type_means
    mine = (data.unit_of_cell == 5) & (data.type_of_cell == 1)
    np.testing.assert_allclose(means[5, 1], dense[mine].mean(0), rtol=1e-5)
    assert np.isnan(means[3, 1]).all() and not np.isnan(means[3, 0]).any()
    np.testing.assert_allclose(data.unit_means(data.embedding)[2], data.embedding[data.unit_of_cell == 2].mean(0),
                               rtol=1e-5)


def test_cell_data_reads_the_expression_on_disk_in_blocks(tmp_path, monkeypatch):
    data, _ = _cells(n_units=20, n_types=4)
    counts = np.random.default_rng(2).poisson(1.0, (len(data.unit_of_cell), 12)).astype(np.float32)
    cells = _cells_anndata(data, sp.csr_matrix(counts))
    in_memory = CellData.from_anndata(cells)
    dense = CellData.from_anndata(_cells_anndata(data, counts))  # a CSR's entries summed as its dense rows are
    np.testing.assert_allclose(in_memory.type_means, dense.type_means, rtol=1e-6)
    write_h5ad(cells, tmp_path / "cells.h5ad")
    monkeypatch.setattr(io, "BLOCK_ROWS", 70)  # several blocks, the last one short
    with x_on_disk(tmp_path / "cells.h5ad") as expression:
        on_disk = CellData.from_anndata(read_h5ad(tmp_path / "cells.h5ad", x=False), expression=expression)
    np.testing.assert_allclose(on_disk.type_means, in_memory.type_means, rtol=1e-6)
    assert np.isnan(on_disk.type_means).sum() == np.isnan(in_memory.type_means).sum()


@pytest.mark.parametrize("method", CELL_BASELINES)
def test_each_cell_level_baseline_learns_a_planted_signal(method):
    data, units = _cells()
    folds = patient_folds(units, n_folds=4, seed=0)
    predictions = fit_predict_cell_baselines(data, units.set_index("unit")["y"], folds, methods=[method],
                                             config=PATIENT, n_top_genes=8, device="cpu")
    assert sorted(predictions["unit"]) == sorted(units["unit"])
    metrics = evaluate.main_table(predictions, n_boot=50).iloc[0]
    assert metrics["auc"] > 0.8, metrics


def test_cell_level_modules_pool_over_cells_and_vote_over_present_types():
    torch.manual_seed(0)
    prototypes = PrototypeModule(5, n_prototypes=4, hidden_dim=8)
    logits, importance = prototypes(torch.randn(3, 10, 5))
    assert logits.shape == (3, 2)
    torch.testing.assert_close(importance.sum(1), torch.ones(3))
    per_type = PerTypeModule(3, 6, hidden_dim=4)
    logits = per_type(torch.randn(2, 3, 6))
    present = torch.tensor([[True, False, False], [True, True, True]])
    vote = PerTypeModule.vote(logits, present)
    torch.testing.assert_close(vote[0], torch.softmax(logits[0, 0], -1))
    torch.testing.assert_close(vote[1], torch.softmax(logits[1], -1).mean(0))


def test_training_stops_early_and_restores_the_best_epoch():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    x, target = torch.randn(32, 3), torch.randn(32, 1)
    losses = iter([3.0, 1.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9])
    snapshots = []

    def validation_loss():
        snapshots.append({k: v.clone() for k, v in module.state_dict().items()})
        return torch.tensor(next(losses))

    config = ClassifierConfig(max_epochs=50, patience=3, batch_size=8)
    history = fit(module, lambda rows: ((module(x[rows]) - target[rows]) ** 2).mean(), 32,
                  validation_loss=validation_loss, config=config)
    assert len(history) == 5  # best at epoch 2, then 3 epochs without improvement
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name])
    assert len(fit(module, lambda rows: module(x[rows]).pow(2).mean(), 32, validation_loss=None,
                   config=ClassifierConfig(max_epochs=4))) == 4


def test_compute_table_reads_completed_stages_and_adds_this_stages_steps():
    record = {"stages": [{"stage": "01_preprocess", "status": "complete", "wall_s": 3.0, "peak_rss_gb": 0.5,
                          "peak_gpu_gb": 2.5},
                         {"stage": "04_classify", "status": "running"}]}
    table = evaluate.compute_table(record, {"gmvae4p": 1.23456})
    assert list(table["step"]) == ["whole stage", "gmvae4p", "peak of this process so far"]
    assert table.loc[1, "wall_s"] == 1.235 and table.loc[2, "peak_rss_gb"] > 0 and table.loc[0, "peak_gpu_gb"] == 2.5


def test_every_method_name_has_its_code():
    assert set(METHODS) == {evaluate.GMVAE4P_NAME, *evaluate.BASELINES, *CELL_BASELINES}
    assert len(METHODS) == len(set(METHODS))
    with pytest.raises(ValueError, match="unknown method"):
        evaluate.cross_validate(_samples(), unit_table(_samples(), "SLE"), [], methods=["svm"])
    with pytest.raises(ValueError, match="need the cells"):
        evaluate.cross_validate(_samples(), unit_table(_samples(), "SLE"), [], methods=["prototype_cells"])


def _sleep_and_report(shared, seconds):
    time.sleep(seconds)
    return os.getpid()


def _report_threads(shared):
    from threadpoolctl import threadpool_info

    return task_threads(), max(pool["num_threads"] for pool in threadpool_info())


def test_a_worker_s_tasks_and_their_libraries_take_the_worker_s_share_of_the_cores():
    share = max(1, (os.cpu_count() or 1) // 2)
    with FoldWorkers(ad.AnnData(np.zeros((2, 2))), n_jobs=2) as workers:
        assert workers.submit(_report_threads).result()[0] == (share, share)
    assert task_threads() == os.cpu_count()  # in this process a task may take every core


def test_worker_processes_end_when_their_parent_is_killed_mid_task(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import time
        import anndata as ad, numpy as np
        from gmvae4p.classify.workers import FoldWorkers
        from test_classify import _sleep_and_report

        if __name__ == "__main__":  # spawned workers import this file again
            workers = FoldWorkers(ad.AnnData(np.zeros((2, 2))), n_jobs=2)
            pids = {task.result()[0] for task in [workers.submit(_sleep_and_report, 0.5) for _ in range(4)]}
            for _ in range(2):
                workers.submit(_sleep_and_report, 600)
            print(" ".join(map(str, pids)), flush=True)
            time.sleep(600)
    """))
    # TMPDIR: a killed parent cannot remove its workers' folder, so it is made where pytest cleans up
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).parent, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                                                              "TMPDIR": str(tmp_path)})
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert pids and all(_alive(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)  # not left training (here: sleeping) for ten minutes


def _alive(pid):
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return status != "Z"
