"""Table 4: every ablation really changes the model, and its Δ AUC is paired with its reference's."""

import numpy as np
import pytest
import torch

from gmvae4p import keys
from gmvae4p.classify.ablation import (ABLATIONS, FULL, NETWORK_ONLY, ablate, available, configuration, learner_alone,
                                       reference, stage04_rows)
from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
from gmvae4p.classify.evaluate import cross_validate
from gmvae4p.classify.metrics import paired_auc_difference
from gmvae4p.classify.model import GMVAE4P
from gmvae4p.classify.module import GMVAE4PModule

from test_classify import FAST, _mixture_rows, _samples


def _signature(model: GMVAE4P, samples, rows):
    """What a configuration's model is and reads: its parameters, inputs, fusion and loss weights, and the fusion
    weights it gives."""
    predicted = model.predict(samples, rows)
    network = model.network
    shapes = tuple((n, tuple(p.shape)) for n, p in network.module.named_parameters()) if network else ()
    return (tuple(model.config.learners), shapes, model.modalities, tuple(model.sources.items()),
            model.config.fusion, model.config.contrastive_weight, predicted.fusion_weights.to_numpy().round(6).tobytes(),
            predicted.probability.round(6).tobytes())


def test_each_configuration_changes_the_model_or_its_inputs():
    samples = _samples()
    units = unit_table(samples, "SLE")
    fold = patient_folds(units, n_folds=4, seed=0)[0]
    train = _mixture_rows(samples, fold.train)
    short = FAST.__class__(**{**FAST.__dict__, "max_epochs": 2})
    signatures = {}
    for name in ABLATIONS:
        config, modalities, sources = configuration(name, short)
        model = GMVAE4P(config, n_top_genes=20, n_top_interactions=10, modalities=modalities, sources=sources,
                        device="cpu")
        model.fit(samples, sample_labels(samples, units), train=train)
        signatures[name] = _signature(model, samples, train[:8])
    assert len(set(signatures.values())) == len(ABLATIONS), "two configurations are the same model"
    full = signatures[FULL]
    for name, signature in signatures.items():
        if name != FULL:
            assert signature != full, name
    assert signatures["no auxiliary modalities"][2] == () and signatures["proportions only"][2] == (keys.PROPORTIONS,)
    assert signatures["linear learner only"][0] == ("linear",) and signatures[NETWORK_ONLY][0] == ("network",)
    inside = [name for name in ABLATIONS if reference(name) == NETWORK_ONLY]  # changes made to the network alone
    assert "states only" in inside and all(signatures[name][0] == ("network",) for name in inside)


def test_mean_fusion_weighs_modalities_equally_and_bulk_only_has_no_heads():
    torch.manual_seed(0)
    dims = {"proportions": 3, "states": 5}
    out = GMVAE4PModule(10, dims, fusion="mean", hidden_dim=8, embed_dim=4)(torch.randn(6, 10))
    torch.testing.assert_close(out["fusion_weights"], torch.full((6, 2), 0.5))
    bulk_only = GMVAE4PModule(10, {}, hidden_dim=8, embed_dim=4)
    out = bulk_only(torch.randn(6, 10))
    assert out["logits"].shape == (6, 2) and out["fusion_weights"].shape == (6, 0)
    assert not any(name.startswith(("heads", "encoders")) for name, _ in bulk_only.named_parameters())
    with pytest.raises(ValueError, match="use_true=True needs the true modalities"):
        bulk_only(torch.randn(6, 10), {}, use_true=True)
    with pytest.raises(ValueError, match="fusion must be one of"):
        GMVAE4PModule(10, dims, fusion="max")


def _stage4_predictions(units, folds):
    """Stage 04's out-of-fold GMVAE4P probabilities, as the ablation reads them (here a noisy score of the label)."""
    fold_of = {unit: fold.index for fold in folds for unit in fold.test}
    probability = np.clip(units["y"] * 0.4 + 0.3 + np.random.default_rng(0).normal(0, 0.2, len(units)), 0, 1)
    return units.assign(method="gmvae4p", fold=units["unit"].map(fold_of), label=units["y"],
                        probability=probability)[["method", "fold", "unit", "label", "probability"]]


def test_table4_adds_the_reference_rows_and_pairs_each_delta_with_its_reference():
    samples = _samples()
    units = unit_table(samples, "SLE")
    folds = patient_folds(units, n_folds=4, seed=3)
    short = FAST.__class__(**{**FAST.__dict__, "max_epochs": 3})
    predictions, table = ablate(samples, units, folds, names=["proportions only"], config=short, n_top_genes=20,
                                n_top_interactions=10, device="cpu", n_boot=100,
                                known={FULL: _stage4_predictions(units, folds)}, progress=False)
    assert list(table["configuration"]) == [FULL, NETWORK_ONLY, "proportions only"]
    assert list(table["reference"]) == [FULL, FULL, NETWORK_ONLY]
    assert table.loc[0, "delta_auc"] == 0.0
    auc = table.set_index("configuration")["auc"]
    for _, row in table.iloc[1:].iterrows():
        assert row["delta_auc"] == pytest.approx(row["auc"] - auc.loc[row["reference"]])
        assert row["delta_auc_low"] <= row["delta_auc"] <= row["delta_auc_high"]
    assert predictions.groupby("method")["unit"].nunique().eq(len(units)).all()
    assert list(table["changes"]) == ["nothing", "config", "modalities"]
    assert list(table["n_modalities"]) == [3, 3, 1]
    # the scRNA mode: the network given the cells' modalities; the known full row here has none
    scrna = table.set_index("configuration")
    assert np.isnan(scrna.loc[FULL, "auc_scrna"]) and np.isnan(scrna.loc[NETWORK_ONLY, "delta_auc_scrna"])
    assert scrna.loc["proportions only", "delta_auc_scrna"] == pytest.approx(
        scrna.loc["proportions only", "auc_scrna"] - scrna.loc[NETWORK_ONLY, "auc_scrna"])
    assert scrna.loc["proportions only", "delta_auc_scrna_low"] <= scrna.loc["proportions only", "delta_auc_scrna"] \
        <= scrna.loc["proportions only", "delta_auc_scrna_high"]
    given = predictions.set_index("method").loc[NETWORK_ONLY]
    assert given["probability_scrna"].notna().all() and (given["probability_scrna"] != given["probability"]).any()
    import matplotlib

    matplotlib.use("Agg")
    from gmvae4p import plots

    _, points = plots.auc_by_modality_count(table)  # the network alone: one modality, then all three
    assert list(points["configuration"]) == ["proportions only", NETWORK_ONLY]
    assert list(points["auc"]) == [auc.loc["proportions only"], auc.loc[NETWORK_ONLY]]
    _, deltas = plots.ablation_deltas(table)
    assert list(deltas["configuration"]) == [NETWORK_ONLY, "proportions only"]


def test_known_rows_are_read_when_given_and_the_mse_row_needs_its_states():
    samples = _samples()
    units = unit_table(samples, "SLE")
    folds = patient_folds(units, n_folds=4, seed=3)
    perfect = _stage4_predictions(units, folds).assign(probability=units["y"] * 0.8 + 0.1)
    predictions, table = ablate(samples, units, folds, names=["linear learner only"], config=FAST, n_top_genes=20,
                                n_top_interactions=10, device="cpu", n_boot=100, known={FULL: perfect}, progress=False)
    assert table.set_index("configuration").loc[FULL, "auc"] == 1.0  # read, not refitted
    np.testing.assert_array_equal(predictions.query("method == @FULL")["probability"], perfect["probability"])
    with pytest.raises(ValueError, match="'full' must be a configuration's, one per unit"):
        ablate(samples, units, folds, names=[FULL], known={FULL: perfect.iloc[1:]}, progress=False)
    assert "GMVAE trained with mse" in available(samples)  # _samples() carries states_gmvae_mse
    del samples.obsm[keys.STATES_GMVAE_MSE]
    assert available(samples) == [name for name in ABLATIONS if name != "GMVAE trained with mse"]


def test_each_learner_alone_is_read_from_stage_04_and_equals_its_refit():
    """The rows "linear learner only", "program learner only" and "modality network only" are the full model's own
    outer-fold learners: read from stage 04's learner table, they equal the configurations refitted."""
    samples = _samples()
    units = unit_table(samples, "SLE")
    folds = patient_folds(units, n_folds=3, seed=1)
    settings = dict(config=FAST, n_top_genes=20, n_top_interactions=10, device="cpu", seed=0)
    stage04 = cross_validate(samples, units, folds, methods=["gmvae4p"], progress=False, **settings)
    known = stage04_rows(stage04.predictions, stage04.learners, FAST)
    alone = [name for name in ABLATIONS if learner_alone(name)]
    assert sorted(known) == sorted([FULL, *alone]) and [learner_alone(n) for n in alone] == ["linear", "program",
                                                                                             "network"]
    refitted, _ = ablate(samples, units, folds, names=alone, n_boot=10, progress=False, **settings)
    for name in alone:
        for column in ("probability", "probability_scrna"):  # the scRNA mode: the network alone's, else none
            expected = refitted.query("method == @name").set_index("unit")[column]
            read = known[name].set_index("unit")[column].loc[expected.index]
            np.testing.assert_allclose(read, expected, rtol=0, atol=1e-12, err_msg=f"{name} {column}")
            assert read.notna().all()
        if name != NETWORK_ONLY:  # reading no modalities, a learner predicts in the scRNA mode as from bulk
            np.testing.assert_array_equal(known[name]["probability_scrna"], known[name]["probability"])
        assert (known[name].set_index("unit")["fold"].loc[expected.index]
                == refitted.query("method == @name").set_index("unit")["fold"]).all()
    scrna = stage04.predictions.query("method == 'gmvae4p_scrna'").set_index("unit")["probability"]
    np.testing.assert_array_equal(known[FULL].set_index("unit")["probability_scrna"], scrna.loc[known[FULL]["unit"]])
    assert learner_alone("no program learner (linear + network)") is None and learner_alone(FULL) is None
    assert stage04_rows(stage04.predictions.iloc[:0], stage04.learners, FAST) == {}


def test_paired_auc_difference_on_a_toy_example():
    y = np.array([0, 0, 1, 1, 0, 1])
    perfect = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    reversed_ = 1 - perfect
    assert paired_auc_difference(y, perfect, perfect, n_boot=50) == (0.0, 0.0, 0.0)
    delta, low, high = paired_auc_difference(y, perfect, reversed_, n_boot=50)
    assert delta == 1.0 and low == high == 1.0  # AUC 1 against AUC 0 on every resample
