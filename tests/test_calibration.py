"""Temperature scaling finds the factor the labels were drawn with, and never changes the call."""

import numpy as np
import pytest

from gmvae4p.calibration import fit_temperature, scaled_probabilities


def _draw(factor, n=6000, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (n, classes))
    p = scaled_probabilities(logits, factor)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_the_fitted_factor_is_the_one_the_labels_were_drawn_with(factor):
    logits, labels = _draw(factor)
    assert fit_temperature(logits, labels) == pytest.approx(factor, rel=0.1)
    balanced = fit_temperature(logits, labels, class_balanced=True)
    assert balanced == pytest.approx(factor, rel=0.15)


def test_a_binary_logit_is_the_two_class_case_and_the_call_never_changes():
    logits, labels = _draw(3.0, classes=2)
    z = logits[:, 1] - logits[:, 0]
    assert fit_temperature(z, labels) == pytest.approx(fit_temperature(logits, labels), rel=1e-4)
    p = scaled_probabilities(logits, 0.3)
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_array_equal(p.argmax(1), logits.argmax(1))
