"""The disease program GMVAE4P reads from bulk: found by co-expression from a label-chosen seed, on training rows."""

import numpy as np
import pytest

from gmvae4p.classify.program import LearnedProgram

N_PROGRAM, N_OTHER_MODULE, N_NOISE = 12, 12, 300
PROGRAM = np.arange(N_PROGRAM)
OTHER_MODULE = np.arange(N_PROGRAM, N_PROGRAM + N_OTHER_MODULE)


def _cohort(n_units=60, n_samples=6, seed=0):
    """Samples of units whose label is a noisy readout of a latent activity (AUC well below 1); the activity moves
    the program's genes together, an unrelated factor moves another module, and the rest is noise."""
    rng = np.random.default_rng(seed)
    y_unit = np.arange(n_units) % 2
    activity = y_unit + rng.normal(0, 0.7, n_units)
    other = rng.normal(0, 1, n_units)
    n_genes = N_PROGRAM + N_OTHER_MODULE + N_NOISE
    unit_means = rng.normal(0, 0.3, (n_units, n_genes))  # donor effects: independent per gene
    unit_means[:, PROGRAM] += np.outer(activity, rng.uniform(0.5, 1.5, N_PROGRAM))
    unit_means[:, OTHER_MODULE] += np.outer(other, rng.uniform(0.5, 1.5, N_OTHER_MODULE))
    units = np.repeat(np.arange(n_units), n_samples)
    expression = unit_means[units] + rng.normal(0, 0.5, (len(units), n_genes))
    return expression.astype(np.float32), units.astype(str), y_unit[units], activity


def test_co_expression_drops_the_seeds_noise_genes_and_grows_a_partial_seed_to_the_whole_program():
    expression, units, y, _ = _cohort()
    rows = np.arange(len(units))
    program = LearnedProgram.fit(expression, rows, units, y)  # 20 seed genes: the program and 8 others
    assert set(program.genes) == set(PROGRAM)  # all of it, and nothing of the other module or the noise
    assert len(set(program.seed_genes) - set(PROGRAM)) == 20 - N_PROGRAM
    assert 0 < program.correlation_threshold < 1
    partial = LearnedProgram.fit(expression, rows, units, y, n_seed_genes=4)  # a third of the program at most
    assert set(partial.genes) == set(PROGRAM)


def test_the_score_rises_with_the_positive_label_tracks_activity_and_is_standardized_on_training_rows():
    expression, units, y, activity = _cohort(seed=1)
    unit = units.astype(int)
    train = np.flatnonzero(unit < 40)
    test = np.flatnonzero(unit >= 40)
    program = LearnedProgram.fit(expression, train, units, y)
    training_score = program.score(expression, train)
    assert training_score.dtype == np.float32
    np.testing.assert_allclose([training_score.mean(), training_score.std()], [0, 1], atol=1e-5)
    assert np.corrcoef(training_score, y[train])[0, 1] > 0
    held_out = program.score(expression, test)
    per_unit = np.bincount(unit[test] - 40, weights=held_out) / np.bincount(unit[test] - 40)
    assert np.corrcoef(per_unit, activity[40:])[0, 1] > 0.9


def test_rows_outside_training_never_change_the_program():
    expression, units, y, _ = _cohort(seed=2)
    train = np.flatnonzero(units.astype(int) < 40)
    test = np.setdiff1d(np.arange(len(units)), train)
    before = LearnedProgram.fit(expression, train, units, y)
    planted = int(np.setdiff1d(np.arange(expression.shape[1]), before.genes)[-1])
    # a gene that separates the labels perfectly and co-varies with the score, but only in the test rows
    expression[test, planted] = 100.0 * y[test] + 10.0 * before.score(expression, test)
    after = LearnedProgram.fit(expression, train, units, y)
    assert planted not in after.genes
    for field in ("genes", "mean", "scale", "loading", "seed_genes"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))


@pytest.mark.parametrize("n_units", [2, 3])
def test_with_too_few_units_to_test_correlation_the_seed_is_the_program(n_units):
    expression, units, y, _ = _cohort(n_units=n_units)
    program = LearnedProgram.fit(expression, np.arange(len(units)), units, y, n_seed_genes=5)
    assert np.isnan(program.correlation_threshold)
    np.testing.assert_array_equal(program.genes, program.seed_genes)
    assert len(program.genes) == 5 and np.isfinite(program.score(expression, np.arange(len(units)))).all()


def test_one_label_only_still_gives_a_finite_score():
    expression, units, y, _ = _cohort()
    rows = np.flatnonzero(y == 1)
    program = LearnedProgram.fit(expression, rows, units, y)
    assert np.isfinite(program.score(expression, rows)).all()


def test_one_unit_only_still_gives_a_program_and_a_finite_score():
    rng = np.random.default_rng(0)
    expression = rng.normal(size=(6, 30))
    units, y = np.array(["u1"] * 6), np.ones(6, dtype=int)
    program = LearnedProgram.fit(expression, np.arange(6), units, y, n_seed_genes=5)
    assert len(program.genes) == 5 and np.isfinite(program.score(expression, np.arange(6))).all()
