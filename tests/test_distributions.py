import numpy as np
import pytest
import torch
from scipy import stats

from gmvae4p.gmvae.distributions import (log_gaussian_unit, log_nb, log_nb_count_gain, log_nb_gain_and_grads,
                                        log_nb_zero, log_nb_zero_and_grads, log_zinb, log_zinb_gain_and_grads,
                                        log_zinb_nonzero, log_zinb_zero, log_zinb_zero_and_grads)

X = np.array([0, 1, 2, 3, 7, 20, 100, 500], dtype=np.float64)
MU = np.array([1e-3, 0.05, 0.7, 4.0, 30.0, 900.0])
THETA = np.array([0.02, 0.5, 3.0, 80.0])


def _grid():
    x, mu, theta = np.meshgrid(X, MU, THETA, indexing="ij")
    return x.ravel(), mu.ravel(), theta.ravel()


def _t(a):
    return torch.tensor(a, dtype=torch.float64)


def test_nb_matches_scipy_in_float64():
    x, mu, theta = _grid()
    ours = log_nb(_t(x), _t(np.log(mu)), _t(np.log(theta))).numpy()
    reference = stats.nbinom.logpmf(x, theta, theta / (theta + mu))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("pi", [1e-4, 0.1, 0.5, 0.97])
def test_zinb_matches_a_zinb_built_from_scipy(pi):
    x, mu, theta = _grid()
    logits = np.full_like(x, np.log(pi / (1 - pi)))
    ours = log_zinb(_t(x), _t(np.log(mu)), _t(np.log(theta)), _t(logits)).numpy()
    nb = stats.nbinom.pmf(x, theta, theta / (theta + mu))
    reference = np.where(x == 0, np.log(pi + (1 - pi) * nb), np.log(1 - pi) + stats.nbinom.logpmf(x, theta,
                                                                                                  theta / (theta + mu)))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-9)


def test_zinb_pmf_sums_to_one():
    x = torch.arange(0, 4000, dtype=torch.float64)
    total = log_zinb(x, torch.tensor(np.log(40.0)), torch.tensor(np.log(0.7)), torch.tensor(0.3)).exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-6)


def test_bf16_inputs_are_computed_in_float32_and_stay_finite():
    x, mu, theta = _grid()
    args = [torch.tensor(a, dtype=torch.bfloat16) for a in (x, np.log(mu), np.log(theta), np.zeros_like(x))]
    out = log_zinb(*args)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    exact = log_zinb(*(a.double() for a in args))  # the same bf16-rounded inputs, evaluated in float64
    np.testing.assert_allclose(out.double().numpy(), exact.numpy(), rtol=1e-4, atol=1e-3)


def test_mse_likelihood_is_half_squared_error():
    assert log_gaussian_unit(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])).tolist() == [-0.5, -2.0]


@pytest.mark.parametrize("pi", [1e-4, 0.5, 0.97])
def test_zero_count_terms_and_their_derivatives_match_autograd(pi):
    _, mu, theta = _grid()
    log_mu, log_theta = _t(np.log(mu)).requires_grad_(), _t(np.log(theta)).requires_grad_()
    logits = _t(np.full_like(mu, np.log(pi / (1 - pi)))).requires_grad_()
    for ours, reference, inputs in [(log_nb_zero_and_grads(log_mu, log_theta), log_nb_zero(log_mu, log_theta),
                                     (log_mu, log_theta)),
                                    (log_zinb_zero_and_grads(log_mu, log_theta, logits),
                                     log_zinb_zero(log_mu, log_theta, logits), (log_mu, log_theta, logits))]:
        torch.testing.assert_close(ours[0], reference)
        for derivative, expected in zip(ours[1:], torch.autograd.grad(reference.sum(), inputs)):
            torch.testing.assert_close(derivative, expected)


@pytest.mark.parametrize("pi", [1e-4, 0.5, 0.97])
def test_non_zero_count_gains_and_their_derivatives_match_autograd(pi):
    x, mu, theta = _grid()
    non_zero = x > 0
    x, mu, theta = _t(x[non_zero]), mu[non_zero], theta[non_zero]
    log_mu, log_theta = _t(np.log(mu)).requires_grad_(), _t(np.log(theta)).requires_grad_()
    logits = _t(np.full_like(mu, np.log(pi / (1 - pi)))).requires_grad_()
    zinb_gain = log_zinb_nonzero(x, log_mu, log_theta, logits) - log_zinb_zero(log_mu, log_theta, logits)
    nb_gain = log_nb_count_gain(x, log_mu, log_theta)
    for ours, reference, inputs in [(log_nb_gain_and_grads(x, log_mu, log_theta), nb_gain, (log_mu, log_theta)),
                                    (log_zinb_gain_and_grads(x, log_mu, log_theta, logits), zinb_gain,
                                     (log_mu, log_theta, logits))]:
        torch.testing.assert_close(ours[0], reference)
        for derivative, expected in zip(ours[1:], torch.autograd.grad(reference.sum(), inputs)):
            torch.testing.assert_close(derivative, expected)
