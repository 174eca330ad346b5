"""GMVAE4P's stack: learned from inner folds of the training units, non-negative, class-balanced."""

import dataclasses

import numpy as np
import pytest

from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
from gmvae4p.classify.stack import LOGIT_LIMIT, equal_stack, fit_stack
from gmvae4p.classify.model import GMVAE4P

from test_classify import FAST, _mixture_rows, _samples


def test_the_stack_weighs_the_informative_learner_and_drops_an_anti_learner():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    informative = 3 * (y - 0.5) + rng.normal(0, 1, 400)
    noise = rng.normal(0, 1, 400)
    reversed_ = -informative  # anti-learns: the stack may not turn it around
    stack = fit_stack(np.column_stack([noise, informative, reversed_]), y, ("noise", "informative", "reversed"))
    assert stack.weights[1] > 5 * stack.weights[0] and stack.weights[2] == 0 and (stack.weights >= 0).all()
    p = stack.probability(np.column_stack([noise, informative, reversed_]))
    assert ((p > 0.5) == y).mean() > 0.85
    huge = stack.probability(np.array([[0.0, 1e6, 0.0]]))  # logits are clipped: no overflow
    assert huge == pytest.approx(stack.probability(np.array([[0.0, LOGIT_LIMIT, 0.0]])))


def test_the_stack_is_class_balanced_so_its_threshold_sits_between_unequal_classes():
    rng = np.random.default_rng(1)
    y = (rng.random(600) < 0.25).astype(int)  # one positive in four, like 13 against 30 donors reversed
    score = 1.5 * y + rng.normal(0, 1, 600)
    called = fit_stack(score[:, None], y, ("one",)).probability(score[:, None]) > 0.5
    recall = lambda cls: (called[y == cls] == cls).mean()
    assert abs(recall(1) - recall(0)) < 0.1  # balanced errors; a plain fit would call nearly everything negative


def test_one_class_or_too_few_patients_give_equal_weights():
    assert fit_stack(np.ones((5, 2)), np.zeros(5), ("a", "b")).inner == "equal"
    stack = equal_stack(("a", "b"))
    assert stack.probability(np.array([[2.0, -2.0]])) == pytest.approx(0.5)
    samples = _samples(n_patients=4, n_samples=3)
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    rows = _mixture_rows(samples, units["unit"][:3])  # three patients cannot hold three inner folds of both labels
    model = GMVAE4P(dataclasses.replace(FAST, max_epochs=3), n_top_genes=10, n_top_interactions=5, device="cpu")
    model.fit(samples, y, train=rows)
    assert model.stack[False].inner == "equal"


def test_gmvae4p_stacks_on_inner_folds_and_leans_on_the_learner_that_carries_the_signal():
    samples = _samples(n_patients=24, n_samples=4, signal=0.8)
    x = np.asarray(samples.X)
    rng = np.random.default_rng(3)
    positive = samples.obs["label"].eq("SLE").to_numpy()
    x[:, :5] -= 0.8 * positive[:, None]  # no program: the labels show as a small shift in many genes at once
    x[:, 5:] += 0.5 * positive[:, None] * rng.choice([-1, 1], x.shape[1] - 5)
    samples.X = x
    units = unit_table(samples, "SLE")
    y = sample_labels(samples, units)
    fold = patient_folds(units, n_folds=4, seed=0)[0]
    config = dataclasses.replace(FAST, learners=["linear", "program"])
    model = GMVAE4P(config, n_top_genes=40, device="cpu").fit(samples, y, train=_mixture_rows(samples, fold.train),
                                                              validation=_mixture_rows(samples, fold.validation))
    table = model.stack_table().set_index("learner")
    assert model.stack[False].inner == "inner folds" and table.loc["linear", "inner_auc"] > 0.9
    assert table.loc["linear", "weight"] > table.loc["program", "weight"]
    test = _mixture_rows(samples, fold.test)
    predicted = model.predict(samples, test)
    assert list(predicted.learners.columns) == ["linear", "program"] and predicted.fused.shape == (len(test), 0)
    assert ((predicted.probability > 0.5) == y[test]).mean() > 0.8


def test_one_learner_is_taken_as_it_is_and_the_network_is_class_balanced_like_the_others():
    samples = _samples(n_patients=24, n_samples=4)
    units = unit_table(samples, "SLE")
    units = units[~units["unit"].isin(units.loc[units["y"] == 1, "unit"][:8])]  # 4 positive patients against 12
    y = sample_labels(samples, unit_table(samples, "SLE"))
    rows = _mixture_rows(samples, units["unit"])
    for learner in ("linear", "network"):
        model = GMVAE4P(dataclasses.replace(FAST, learners=[learner]), n_top_genes=20, n_top_interactions=5,
                        device="cpu").fit(samples, y, train=rows)
        assert model.stack[False].inner == "single learner" and model.inner_auc == {}  # no inner folds
        predicted = model.predict(samples, rows)
        np.testing.assert_allclose(predicted.probability, predicted.learners[learner], rtol=1e-6, atol=1e-6)
        called = predicted.probability > 0.5  # the training rows: balanced errors with one positive in four
        assert called[y[rows] == 1].mean() > 0.75 and (~called[y[rows] == 0]).mean() > 0.75
