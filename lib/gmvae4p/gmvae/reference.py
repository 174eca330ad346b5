"""The GMVAE in its plain form: what the model is, with autograd for every gradient.

Generative: y ~ Cat(π) over K components (one per cell type), z | y ~ N(μ_y, σ_y²) (:class:`~.prior.MixturePrior`),
x | z ~ the likelihood: ``nb`` or ``zinb`` with mean ℓ·softmax(decoder(z)) (ℓ the cell's total count) and gene-wise
inverse dispersion θ, or ``mse``: a unit Gaussian on log1p of counts normalized to ``target_sum`` (the seed's loss).
Inference: an encoder of log1p-normalized counts with a q(y|x) head (its argmax is the cell-type call) and a Gaussian
q(z|x) head. A cell with a known type y takes KL(q(z|x) ‖ p(z|y)) plus ``ce_weight`` × the cross-entropy of q(y|x);
a cell without one the q(y|x)-weighted KL over components plus KL(q(y|x) ‖ π). Terms are summed over genes or latent
dimensions per cell and averaged over cells.

:class:`~.module.GMVAEModule` computes the same loss fast (sparse counts, a hand-written backward, Triton kernels on
CUDA, padded gene-wide layers, a whole-step CUDA graph in :mod:`.train`); ``tests/test_reference.py`` holds its loss
and gradients to this module's. Train with this one (``gmvae.backend: reference``) to read, debug or change the model;
a change made here and not there fails that test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from .distributions import LogNormalizedGaussian, NegativeBinomial, ZeroInflatedNegativeBinomial, at_least_float32
from .module import UNLABELED, SparseCounts, check_arguments, mlp
from .prior import MixturePrior


class ReferenceGMVAE(nn.Module):
    """Gaussian-mixture VAE over dense counts; the arguments are :class:`~.module.GMVAEModule`'s, all named (their
    defaults are :class:`~.config.ModuleConfig`'s: build it with :func:`~.train.build_module`)."""

    def __init__(self, n_genes: int, n_components: int, *, latent_dim: int, hidden_dims: tuple[int, ...],
                 dropout: float, likelihood: str, target_sum: float):
        super().__init__()
        check_arguments(likelihood, n_components)
        self.likelihood, self.target_sum, self.n_genes = likelihood, target_sum, n_genes
        self.encoder = mlp([n_genes, *hidden_dims], dropout)
        self.head_y = nn.Linear(hidden_dims[-1], n_components)
        self.head_z = nn.Linear(hidden_dims[-1], 2 * latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims)], dropout)
        self.head_x = nn.Linear(hidden_dims[0], n_genes)
        self.head_zero = nn.Linear(hidden_dims[0], n_genes) if likelihood == "zinb" else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes)) if likelihood != "mse" else None
        self.prior = MixturePrior(n_components, latent_dim)

    def load_weights(self, state_dict: dict, source: str) -> None:
        self.load_state_dict(state_dict)

    def encode(self, counts: SparseCounts | torch.Tensor):
        """``(logits of q(y|x), mean of q(z|x), log variance of q(z|x))``."""
        counts = _dense(counts, self.prior.mean.dtype)
        return self._encode(self._normalized_log1p(counts))

    def _normalized_log1p(self, counts: torch.Tensor) -> torch.Tensor:
        library = counts.sum(-1, keepdim=True).clamp_min(1.0)
        return torch.log1p(counts * (self.target_sum / library))

    def _encode(self, x_log1p: torch.Tensor):
        hidden = self.encoder(x_log1p)
        z_mean, z_log_var = self.head_z(hidden).chunk(2, dim=-1)
        return self.head_y(hidden), z_mean, z_log_var.clamp(-12.0, 8.0)

    def likelihood_of(self, z: torch.Tensor, library: torch.Tensor):
        """p(x | z) as a distribution over the cells' counts (or, for ``mse``, their log1p-normalized values)."""
        hidden = self.decoder(z)
        if self.likelihood == "mse":
            return LogNormalizedGaussian(self.head_x(hidden))
        (out,) = at_least_float32(self.head_x(hidden))
        log_mu = F.log_softmax(out, -1) + library.log()
        if self.likelihood == "nb":
            return NegativeBinomial(log_mu, self.log_theta)
        return ZeroInflatedNegativeBinomial(log_mu, self.log_theta, self.head_zero(hidden))

    def kl_to_components(self, z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z | y = k)) for every cell and component (cells, K), by ``torch.distributions``."""
        z_mean, z_log_var = at_least_float32(z_mean, z_log_var)
        q = Normal(z_mean[:, None], (0.5 * z_log_var).exp()[:, None])
        p = Normal(self.prior.mean[None], (0.5 * self.prior.log_var).exp()[None])
        return kl_divergence(q, p).sum(-1)

    def forward(self, counts: SparseCounts | torch.Tensor, labels: torch.Tensor | None = None, *,
                kl_weight: float = 1.0, ce_weight: float = 1.0, class_weights: torch.Tensor | None = None,
                cell_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loss record: ``loss`` and its terms ``recon``, ``kl``, ``ce``, each averaged over the cells (those of
        ``cell_mask``), and the q(y|x) logits ``logits_y``. ``labels``: component per cell, −1 where unknown."""
        counts = _dense(counts, self.prior.mean.dtype)
        library = counts.sum(-1, keepdim=True).clamp_min(1.0)
        x_log1p = self._normalized_log1p(counts)
        logits_y, z_mean, z_log_var = self._encode(x_log1p)
        z = z_mean + torch.randn_like(z_mean) * (0.5 * z_log_var).exp() if self.training else z_mean
        observed = x_log1p if self.likelihood == "mse" else counts
        recon = -self.likelihood_of(z, library).log_prob(observed).sum(-1)
        kl_all = self.kl_to_components(z_mean, z_log_var)
        log_q_y = F.log_softmax(at_least_float32(logits_y)[0], -1)
        if labels is None:
            labels = torch.full(counts.shape[:1], UNLABELED, dtype=torch.long, device=counts.device)
        labeled, known = labels >= 0, labels.clamp_min(0)
        q_y = log_q_y.exp()
        kl = torch.where(labeled, kl_all.gather(1, known[:, None]).squeeze(1),
                         (q_y * kl_all).sum(-1) + (q_y * (log_q_y - self.prior.log_weights())).sum(-1))
        ce = F.nll_loss(log_q_y, known, reduction="none")
        if class_weights is not None:
            ce = ce * class_weights[known]
        ce = torch.where(labeled, ce, torch.zeros_like(ce))
        terms = {"loss": recon + kl_weight * kl + ce_weight * ce, "recon": recon, "kl": kl, "ce": ce}
        weights = torch.ones_like(recon) if cell_mask is None else cell_mask.to(recon.dtype)
        weights = weights / weights.sum().clamp_min(1)
        return {**{name: term @ weights for name, term in terms.items()}, "logits_y": logits_y}

    def zscore(self, z_mean: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """(E[z|x] − μ_k) / σ_k for each cell's component k (:meth:`MixturePrior.zscore`)."""
        return self.prior.zscore(z_mean, component)


def _dense(counts: SparseCounts | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return counts.to_dense(dtype) if isinstance(counts, SparseCounts) else counts.to(dtype)
