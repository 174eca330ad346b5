"""Per-entry log-likelihoods of counts: negative binomial and zero-inflated NB (scVI's parameterization), and the
Gaussian one behind the ``mse`` loss on log1p-normalized counts.

Means enter as ``log_mu`` (the decoder's log-softmax plus log library size), so no ``log(mu + eps)`` is needed, and
everything is computed in float32 or wider whatever the autocast dtype: lgamma and log-sum-exp in bf16 lose the
digits that separate neighbouring counts.

The reference module (:mod:`.reference`) reads the textbook forms through the distribution objects at the end
(:class:`NegativeBinomial`, :class:`ZeroInflatedNegativeBinomial`, :class:`LogNormalizedGaussian`). The fast module
(:mod:`.module`) splits each likelihood into what a zero count contributes (a function of the decoder's outputs
alone) and what a non-zero count adds on top, with their derivatives: summed over a cell's genes, the first needs no
counts and the second runs over non-zero entries only, so it never builds a dense count matrix (at 4 % non-zero that
is most of the memory traffic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The tensors in float32, or in the wider dtype of the first (float64 stays float64)."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    return [t.to(dtype) for t in tensors]


def log_nb_zero(log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(0; μ, θ) = θ·(log θ − log(θ + μ)), in its textbook form: the likelihood's sums use
    :func:`log_nb_zero_and_grads`, which the tests check against this and its autograd derivatives."""
    log_mu, log_theta = at_least_float32(log_mu, log_theta)
    return log_theta.exp() * (log_theta - torch.logaddexp(log_theta, log_mu))


def softplus_and_sigmoid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softplus(x) and its derivative σ(x) from one exp(−|x|): these sums are bound by transcendental arithmetic
    (each of the cells × genes entries takes several), not by memory."""
    e = torch.exp(-x.abs())
    return x.clamp_min(0) + torch.log1p(e), torch.where(x >= 0, 1.0, e) / (1 + e)


def log_nb_zero_and_grads(log_mu: torch.Tensor, log_theta: torch.Tensor):
    """log NB(0; μ, θ) = −θ·softplus(log μ − log θ) and its derivatives by log μ (−θ·σ(log μ − log θ)) and by
    log θ (the value minus that)."""
    log_mu, log_theta = at_least_float32(log_mu, log_theta)
    softplus, sigmoid = softplus_and_sigmoid(log_mu - log_theta)
    theta = log_theta.exp()
    value, by_log_mu = -theta * softplus, -theta * sigmoid
    return value, by_log_mu, value - by_log_mu


def log_nb_count_gain(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(x) − log NB(0); zero where x = 0."""
    x, log_mu, log_theta = at_least_float32(x, log_mu, log_theta)
    theta = log_theta.exp()
    return (x * (log_mu - torch.logaddexp(log_theta, log_mu))
            + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))


def log_nb_gain_and_grads(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor):
    """:func:`log_nb_count_gain` as −x·softplus(log θ − log μ) + lgamma terms, and its derivatives by log μ
    (x·σ(log θ − log μ)) and by log θ (θ·(ψ(x + θ) − ψ(θ)) minus that)."""
    x, log_mu, log_theta = at_least_float32(x, log_mu, log_theta)
    theta = log_theta.exp()
    softplus, sigmoid = softplus_and_sigmoid(log_theta - log_mu)
    by_log_mu = x * sigmoid
    return (-x * softplus + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1), by_log_mu,
            theta * (torch.digamma(x + theta) - torch.digamma(theta)) - by_log_mu)


def log_nb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """log NB(x; mean μ, inverse dispersion θ), elementwise (θ broadcasts over cells)."""
    return log_nb_zero(log_mu, log_theta) + log_nb_count_gain(x, log_mu, log_theta)


def log_zinb_zero(log_mu: torch.Tensor, log_theta: torch.Tensor, zero_logits: torch.Tensor) -> torch.Tensor:
    """log ZINB(0) = log(π + (1 − π)·NB(0)) = softplus(log NB(0) − l) − softplus(−l), with π = sigmoid(l):
    written so that neither π near 0 or 1 nor NB(0) near 0 overflows."""
    (zero_logits,) = at_least_float32(zero_logits)
    return F.softplus(log_nb_zero(log_mu, log_theta) - zero_logits) - F.softplus(-zero_logits)


def log_zinb_zero_and_grads(log_mu: torch.Tensor, log_theta: torch.Tensor, zero_logits: torch.Tensor):
    """log ZINB(0) and its derivatives by log μ, log θ and the zero logit l. With f = log NB(0), the value is
    softplus(f − l) − softplus(−l), so d/df = σ(f − l) and d/dl = σ(−l) − σ(f − l)."""
    (zero_logits,) = at_least_float32(zero_logits)
    nb_zero, nb_by_log_mu, nb_by_log_theta = log_nb_zero_and_grads(log_mu, log_theta)
    softplus, by_nb_zero = softplus_and_sigmoid(nb_zero - zero_logits)
    softplus_inflation, inflation_sigmoid = softplus_and_sigmoid(-zero_logits)
    return (softplus - softplus_inflation, by_nb_zero * nb_by_log_mu, by_nb_zero * nb_by_log_theta,
            inflation_sigmoid - by_nb_zero)


def log_zinb_nonzero(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor,
                     zero_logits: torch.Tensor) -> torch.Tensor:
    """log ZINB(x) for x > 0: log(1 − π) + log NB(x) = −softplus(l) + log NB(x)."""
    (zero_logits,) = at_least_float32(zero_logits)
    return log_nb(x, log_mu, log_theta) - F.softplus(zero_logits)


def log_zinb_gain_and_grads(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor,
                            zero_logits: torch.Tensor):
    """log ZINB(x) − log ZINB(0) for x > 0 and its derivatives by log μ, log θ and the zero logit l. With f = log NB(0),
    the difference is the NB gain + f − l − softplus(f − l) = the NB gain − softplus(l − f); so the derivatives are
    the NB gain's plus σ(l − f) times f's, and −σ(l − f) by l."""
    (zero_logits,) = at_least_float32(zero_logits)
    gain, gain_by_log_mu, gain_by_log_theta = log_nb_gain_and_grads(x, log_mu, log_theta)
    nb_zero, nb_zero_by_log_mu, nb_zero_by_log_theta = log_nb_zero_and_grads(log_mu, log_theta)
    softplus, kept = softplus_and_sigmoid(zero_logits - nb_zero)
    return (gain - softplus, gain_by_log_mu + kept * nb_zero_by_log_mu,
            gain_by_log_theta + kept * nb_zero_by_log_theta, -kept)


def log_zinb(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor,
             zero_logits: torch.Tensor) -> torch.Tensor:
    """log ZINB(x; μ, θ, π = sigmoid(zero_logits)), elementwise."""
    return torch.where(x == 0, log_zinb_zero(log_mu, log_theta, zero_logits),
                       log_zinb_nonzero(x, log_mu, log_theta, zero_logits))


def log_gaussian_unit(x_log1p: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """−½(x − x̂)², the ``mse`` likelihood on log1p-normalized counts (a unit-variance Gaussian up to a constant)."""
    x_log1p, predicted = at_least_float32(x_log1p, predicted)
    return -0.5 * (x_log1p - predicted) ** 2


class NegativeBinomial:
    """NB(mean μ, inverse dispersion θ) of counts, parameterized by ``log_mu`` and ``log_theta`` (scVI's)."""

    def __init__(self, log_mu: torch.Tensor, log_theta: torch.Tensor):
        self.log_mu, self.log_theta = log_mu, log_theta

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return log_nb(x, self.log_mu, self.log_theta)


class ZeroInflatedNegativeBinomial(NegativeBinomial):
    """A zero with probability π = sigmoid(``zero_logits``), else NB(μ, θ)."""

    def __init__(self, log_mu: torch.Tensor, log_theta: torch.Tensor, zero_logits: torch.Tensor):
        super().__init__(log_mu, log_theta)
        self.zero_logits = zero_logits

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return log_zinb(x, self.log_mu, self.log_theta, self.zero_logits)


class LogNormalizedGaussian:
    """The ``mse`` likelihood: a unit-variance Gaussian on log1p-normalized counts, up to a constant."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def log_prob(self, x_log1p: torch.Tensor) -> torch.Tensor:
        return log_gaussian_unit(x_log1p, self.mean)
