"""Per-entry log-likelihoods of counts: negative binomial and zero-inflated NB (scVI's parameterization), and the
Gaussian one behind the ``mse`` loss on log1p-normalized counts.

Means enter as ``log_mu`` (the decoder's log-softmax plus log library size), so no ``log(mu + eps)`` is needed, and
everything is computed in float32 or wider whatever the autocast dtype: lgamma and log-sum-exp in bf16 lose the
digits that separate neighbouring counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(*tensors):
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def log_nb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(x; mean μ, inverse dispersion θ), elementwise (θ broadcasts over cells)."""
    x, log_mu, log_theta = _wide(x, log_mu, log_theta)
    theta = log_theta.exp()
    log_theta_plus_mu = torch.logaddexp(log_theta, log_mu)
    return (theta * (log_theta - log_theta_plus_mu) + x * (log_mu - log_theta_plus_mu)
            + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))


def log_zinb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor,
             zero_logits: torch.Tensor) -> torch.Tensor:
    """log ZINB(x; μ, θ, π = sigmoid(zero_logits)), elementwise.

    P(0) = π + (1 − π)·NB(0) = (1 + e^(−l)·NB(0)) / (1 + e^(−l)), P(x > 0) = (1 − π)·NB(x) with l = zero_logits;
    both are written with softplus so that neither π near 0 or 1 nor NB(0) near 0 overflows.
    """
    x, log_mu, log_theta, zero_logits = _wide(x, log_mu, log_theta, zero_logits)
    theta = log_theta.exp()
    log_theta_plus_mu = torch.logaddexp(log_theta, log_mu)
    log_nb_zero = theta * (log_theta - log_theta_plus_mu)
    softplus_minus = F.softplus(-zero_logits)
    zero_case = F.softplus(log_nb_zero - zero_logits) - softplus_minus
    nonzero_case = (-zero_logits - softplus_minus + log_nb_zero + x * (log_mu - log_theta_plus_mu)
                    + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
    return torch.where(x == 0, zero_case, nonzero_case)


def log_gaussian_unit(x_log1p: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """−½(x − x̂)², the ``mse`` likelihood on log1p-normalized counts (a unit-variance Gaussian up to a constant)."""
    x_log1p, predicted = _wide(x_log1p, predicted)
    return -0.5 * (x_log1p - predicted) ** 2
