"""The GMVAE's prior: a mixture of K Gaussians over the latent space, one component per cell type.

p(y) = Cat(softmax(logits)), p(z | y = k) = N(mean_k, diag(exp(log_var_k))). Both GMVAE modules (the reference one,
:mod:`.reference`, and the fast one, :mod:`.module`) hold one, so the prior and the z-score it defines are written
once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import at_least_float32


class MixturePrior(nn.Module):
    """Learned means, log variances and mixture logits of ``n_components`` Gaussians in ``latent_dim`` dimensions."""

    def __init__(self, n_components: int, latent_dim: int):
        super().__init__()
        self.mean = nn.Parameter(torch.randn(n_components, latent_dim))
        self.log_var = nn.Parameter(torch.zeros(n_components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(n_components))

    @property
    def n_components(self) -> int:
        return self.mean.shape[0]

    def log_weights(self) -> torch.Tensor:
        """log p(y = k) for every component."""
        return F.log_softmax(self.logits, -1)

    def kl(self, z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ p(z | y = k)) for every cell and component, summed over latent dimensions: (cells, K).

        Written as matrix products over the latent dimensions, (σ_q² + z²)·(1/σ_k²) − 2z·(μ_k/σ_k²) + Σ μ_k²/σ_k²:
        broadcast to cells × K × latent, its backward summed over cells in a reduction kernel that took longer than
        the rest of the encoder's backward. The reference module checks it against ``torch.distributions``."""
        z_mean, z_log_var = at_least_float32(z_mean, z_log_var)
        precision = torch.exp(-self.log_var)
        with torch.autocast(z_mean.device.type, enabled=False):  # bf16 products would lose the KL's digits
            quadratic = ((z_log_var.exp() + z_mean ** 2) @ precision.T - 2 * z_mean @ (self.mean * precision).T
                         + (self.mean ** 2 * precision).sum(-1))
        return 0.5 * (self.log_var.sum(-1) - z_log_var.sum(-1, keepdim=True) + quadratic - z_mean.shape[-1])

    @torch.no_grad()
    def zscore(self, z_mean: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """(E[z|x] − μ_k) / σ_k for each cell's component k: what is left after removing cell identity."""
        return (z_mean.float() - self.mean[component]) * torch.exp(-0.5 * self.log_var[component])
