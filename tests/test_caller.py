"""The cell-type call: a regression on the latent means, never naming a type it had no cells of, calibrated on
held-out cells."""

import numpy as np

from gmvae4p.gmvae.caller import CellTypeCaller, fit_caller


def _latent(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    components = rng.integers(0, 3, n)
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    return centres[components] + rng.normal(0, 0.9, (n, 2)), components


def test_the_call_learns_the_types_skips_an_absent_one_and_survives_its_state():
    z, components = _latent()
    validation = np.arange(len(z)) % 5 == 0
    caller, held_out = fit_caller(z, components, validation, n_components=4)  # component 3 has no cells
    p = caller.probabilities(z)
    assert p.shape == (len(z), 4) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == components).mean() > 0.8 and p[:, 3].max() < 1e-6
    # the held-out cells, called by the regression that did not see them, calibrate the factor: their mean
    # confidence matches how often that call is right
    assert held_out.shape == (validation.sum(), 4) and not np.allclose(held_out, p[validation])
    confidence, right = held_out.max(1).mean(), (held_out.argmax(1) == components[validation]).mean()
    assert abs(confidence - right) < 0.03
    again = CellTypeCaller.from_state(caller.state())
    np.testing.assert_allclose(again.probabilities(z), p)


def test_two_types_and_no_held_out_cells_give_an_uncalibrated_two_class_call():
    z, components = _latent()
    keep = components < 2
    caller, _ = fit_caller(z[keep], components[keep], np.zeros(keep.sum(), bool), n_components=2)
    assert caller.calibration == 1.0
    assert (caller.probabilities(z[keep]).argmax(1) == components[keep]).mean() > 0.8
