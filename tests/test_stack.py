"""GMVAE4P's stack: equal weights on logits standardized on held-out training units."""

import dataclasses

import numpy as np
import pytest

from gmvae4p.calibration import fit_temperature
from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
from gmvae4p.classify.stack import HELD_OUT, LOGIT_LIMIT, equal_stack, fit_stack
from gmvae4p.classify.model import GMVAE4P, ModalityNetwork

from test_classify import FAST, _mixture_rows, _samples


def _inner_logits(seed=0, n_units=400, per_unit=4):
    """Out-of-fold logits of four mixture samples per unit: one learner that guesses, one informative, one weakly
    informative on a larger scale."""
    rng = np.random.default_rng(seed)
    y_unit = rng.integers(0, 2, n_units)
    unit, y = np.repeat(np.arange(n_units), per_unit), np.repeat(y_unit, per_unit)
    informative = 3 * (y - 0.5) + rng.normal(0, 1, len(y))
    weak = 4 * ((y - 0.5) + rng.normal(0, 1.5, len(y)))
    return np.column_stack([rng.normal(0, 1, len(y)), informative, weak]), y, unit


def test_the_stack_weighs_every_learner_equally_on_its_standardized_logit_and_reports_its_inner_auc():
    logits, y, unit = _inner_logits()
    stack = fit_stack(logits, y, unit, ("noise", "informative", "weak"))
    assert stack.scaled_on == "held-out units"
    auc = stack.held_out_auc
    assert auc["informative"] > 0.9 > auc["weak"] > 0.6 > auc["noise"] > 0.4
    np.testing.assert_allclose(stack.weights, 1 / 3)
    np.testing.assert_allclose(stack.scale, np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT).std(0))
    assert ((stack.probability(logits) > 0.5) == y).mean() > 0.7  # the guessing learner dilutes, never drowns it
    huge = stack.probability(np.array([[0.0, 1e6, 0.0]]))  # logits are clipped: no overflow
    assert huge == pytest.approx(stack.probability(np.array([[0.0, LOGIT_LIMIT, 0.0]])))


def test_the_temperature_calibrates_the_units_without_moving_their_ranking_or_calls():
    logits, y, unit = _inner_logits(seed=2)
    stack = fit_stack(logits, y, unit, ("noise", "informative", "weak"))
    plain, calibrated = stack.probability(logits), stack.probability(logits, calibrated=True)
    assert stack.temperature > 1  # the weighted mean of standardized logits is squeezed towards 0.5
    assert ((plain > 0.5) == (calibrated > 0.5)).all()
    assert (np.diff(calibrated[np.argsort(plain)]) >= 0).all()  # the same order
    per_unit = lambda p: np.bincount(unit, p) / np.bincount(unit)  # noqa: E731
    truth = np.bincount(unit, y) / np.bincount(unit)
    log_loss = lambda p: -np.mean(truth * np.log(p) + (1 - truth) * np.log(1 - p))  # noqa: E731
    assert log_loss(per_unit(calibrated)) < log_loss(per_unit(plain))


def test_a_learner_does_not_weigh_more_for_having_larger_logits():
    logits, y, unit = _inner_logits(seed=1)
    stack = fit_stack(logits[:, :2], y, unit, ("noise", "informative"))
    louder = logits[:, :2] * np.array([2.0, 1.0])  # the guessing learner speaks twice as loud (within the clip)
    louder_stack = fit_stack(louder, y, unit, ("noise", "informative"))
    np.testing.assert_allclose(louder_stack.weights, stack.weights)
    np.testing.assert_allclose(louder_stack.probability(louder), stack.probability(logits[:, :2]), rtol=1e-9)


def test_each_learner_is_scaled_on_its_own_held_out_rows_and_the_temperature_on_the_rows_all_hold_out():
    logits, y, unit = _inner_logits(seed=3)
    partial = logits.copy()
    partial[unit >= 100, 1] = np.nan  # the second learner held out only the first 100 units
    stack = fit_stack(partial, y, unit, ("noise", "informative", "weak"))
    assert stack.scaled_on == HELD_OUT
    np.testing.assert_allclose(stack.scale[1], np.clip(logits[unit < 100, 1], -LOGIT_LIMIT, LOGIT_LIMIT).std())
    np.testing.assert_allclose(stack.scale[[0, 2]], np.clip(logits[:, [0, 2]], -LOGIT_LIMIT, LOGIT_LIMIT).std(0))
    first = unit < 100  # the temperature: on the units every learner held out, with each learner's own scale
    clipped = np.clip(logits[first], -LOGIT_LIMIT, LOGIT_LIMIT)
    per_unit = np.stack([np.bincount(unit[first], column) / np.bincount(unit[first]) for column in clipped.T], 1)
    truth = np.bincount(unit[first], y[first]) / np.bincount(unit[first])
    assert stack.temperature == pytest.approx(fit_temperature(per_unit / stack.scale @ stack.weights, truth,
                                                              class_balanced=True))
    alone = fit_stack(logits[first], y[first], unit[first], ("noise", "informative", "weak"))
    assert stack.held_out_auc["informative"] == pytest.approx(alone.held_out_auc["informative"])
    partial[:, 1] = np.nan
    partial[0, 1] = 1.0  # one held-out row gives no spread: unscaled equal weights
    assert fit_stack(partial, y, unit, ("noise", "informative", "weak")).scaled_on == "equal"


def test_the_network_is_fitted_once_and_scaled_on_its_validation_units(monkeypatch):
    samples = _samples(n_patients=24, n_samples=4)
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    fold = patient_folds(units, n_folds=4, seed=0)[0]
    fits = []
    original = ModalityNetwork.fit
    monkeypatch.setattr(ModalityNetwork, "fit", lambda self, *a, **k: fits.append(1) or original(self, *a, **k))
    train, validation = _mixture_rows(samples, fold.train), _mixture_rows(samples, fold.validation)
    model = GMVAE4P(dataclasses.replace(FAST, max_epochs=5), n_top_genes=20, n_top_interactions=5, device="cpu")
    model.fit(samples, y, train=train, validation=validation)
    assert len(fits) == 1  # the inner folds refit only the linear and program learners
    network = list(model.config.learners).index("network")
    for use_true in (False, True):
        held = np.clip(model.learners.network_logits(samples, validation, use_true=use_true), -LOGIT_LIMIT,
                       LOGIT_LIMIT)
        assert model.stack[use_true].scale[network] == pytest.approx(held.std())
    assert model.stack[False].scale[network] != model.stack[True].scale[network]
    # from bulk it reads the program's score, as the program learner does: out of the mean; given the cells' in
    np.testing.assert_allclose(model.stack[False].weights, np.where(np.arange(3) == network, 0.0, 0.5))
    np.testing.assert_allclose(model.stack[True].weights, 1 / 3)
    genes = GMVAE4P(dataclasses.replace(FAST, max_epochs=5, bulk_input="genes"), n_top_genes=20, n_top_interactions=5,
                    device="cpu").fit(samples, y, train=train, validation=validation)
    np.testing.assert_allclose(genes.stack[False].weights, 1 / 3)  # reading the genes, it is a learner of its own


def test_a_learner_left_out_of_the_mean_is_still_scaled_and_scored():
    logits, y, unit = _inner_logits(seed=4)
    stack = fit_stack(logits, y, unit, ("noise", "informative", "weak"), left_out=("noise",))
    full = fit_stack(logits, y, unit, ("noise", "informative", "weak"))
    np.testing.assert_allclose(stack.weights, [0.0, 0.5, 0.5])
    np.testing.assert_allclose(stack.scale, full.scale)
    assert stack.held_out_auc == full.held_out_auc
    shuffled = logits.copy()
    shuffled[:, 0] = np.random.default_rng(0).permutation(shuffled[:, 0])  # the left-out learner moves nothing
    np.testing.assert_allclose(stack.probability(shuffled), stack.probability(logits))
    np.testing.assert_allclose(equal_stack(("a", "b"), left_out=("b",)).weights, [1.0, 0.0])
    with pytest.raises(ValueError, match="every learner"):
        equal_stack(("a",), left_out=("a",))


def test_one_class_or_too_few_patients_give_equal_weights():
    assert fit_stack(np.ones((5, 2)), np.zeros(5), np.arange(5), ("a", "b")).scaled_on == "equal"
    stack = equal_stack(("a", "b"))
    assert stack.probability(np.array([[2.0, -2.0]])) == pytest.approx(0.5)
    samples = _samples(n_patients=4, n_samples=3)
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    rows = _mixture_rows(samples, units["unit"][:3])  # three patients cannot hold three inner folds of both labels
    model = GMVAE4P(dataclasses.replace(FAST, max_epochs=3), n_top_genes=10, n_top_interactions=5, device="cpu")
    model.fit(samples, y, train=rows)
    assert model.stack[False].scaled_on == "equal"


def test_gmvae4p_stacks_on_held_out_units_and_reports_which_learner_carries_the_signal():
    samples = _samples(n_patients=24, n_samples=4, signal=0.8)
    x = np.asarray(samples.X)
    rng = np.random.default_rng(3)
    positive = samples.obs["label"].eq("SLE").to_numpy()
    x[:, :5] -= 0.8 * positive[:, None]  # no program: the labels show as a small shift in many genes at once
    x[:, 5:] += 0.2 * positive[:, None] * rng.choice([-1, 1], x.shape[1] - 5)
    samples.X = x
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    fold = patient_folds(units, n_folds=4, seed=0)[0]
    config = dataclasses.replace(FAST, learners=["linear", "program"])
    model = GMVAE4P(config, n_top_genes=40, device="cpu").fit(samples, y, train=_mixture_rows(samples, fold.train),
                                                              validation=_mixture_rows(samples, fold.validation))
    table = model.stack_table().set_index("learner")
    assert model.stack[False].scaled_on == "held-out units" and table.loc["linear", "held_out_auc"] > 0.8
    assert table.loc["linear", "held_out_auc"] > table.loc["program", "held_out_auc"]
    assert (table["weight"] == 0.5).all() and (table["weight_scrna"] == 0.5).all()
    assert (table["temperature"] == model.stack[False].temperature).all()
    test = _mixture_rows(samples, fold.test)
    predicted = model.predict(samples, test)
    assert list(predicted.learners.columns) == ["linear", "program"] and predicted.fused.shape == (len(test), 0)
    assert ((predicted.probability > 0.5) == y[test]).mean() >= 0.7


def test_one_learner_is_taken_as_it_is_and_the_network_is_class_balanced_like_the_others():
    samples = _samples(n_patients=24, n_samples=4)
    units = unit_table(samples, "SLE")
    units = units[~units["unit"].isin(units.loc[units["y"] == 1, "unit"][:8])]  # 4 positive patients against 12
    y = sample_labels(samples, unit_table(samples, "SLE"))
    rows = _mixture_rows(samples, units["unit"])
    for learner in ("linear", "network"):
        model = GMVAE4P(dataclasses.replace(FAST, learners=[learner]), n_top_genes=20, n_top_interactions=5,
                        device="cpu").fit(samples, y, train=rows)
        assert model.stack[False].scaled_on == "single learner" and not model.stack[False].held_out_auc
        predicted = model.predict(samples, rows)
        np.testing.assert_allclose(predicted.probability, predicted.learners[learner], rtol=1e-6, atol=1e-6)
        called = predicted.probability > 0.5  # the training rows: balanced errors with one positive in four
        assert called[y[rows] == 1].mean() > 0.75 and (~called[y[rows] == 0]).mean() > 0.75


def test_inner_folds_are_stratified_by_batch_where_the_samples_carry_one():
    samples = _samples(n_patients=24, n_samples=2)
    patient_index = samples.obs["patient"].astype(str).str.extract(r"(\d+)")[0].astype(int).to_numpy()
    samples.obs["batch"] = np.where(patient_index % 4 < 2, "B1", "B2")  # each batch holds both labels
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    rows = np.arange(samples.n_obs)
    model = GMVAE4P(dataclasses.replace(FAST, stack_folds=3), device="cpu")
    batch = samples.obs["batch"].to_numpy()
    for _, _, test in model._inner_folds(samples, y, rows):
        strata = [(label, b) for label in (0, 1) for b in ("B1", "B2")]
        counts = [len(set(samples.obs["unit"].to_numpy()[test][(y[test] == label) & (batch[test] == b)]))
                  for label, b in strata]
        assert max(counts) - min(counts) <= 1, counts  # 24 patients, 6 per stratum: 2 of each in each fold
