"""The Gaussian-mixture VAE as a pure torch module (it never sees AnnData).

Generative: y ~ Cat(π) over K components (one per cell type), z | y ~ N(μ_y, σ_y²) with learned μ, σ, π;
x | z from the decoder with library size ℓ: ``nb``/``zinb`` with mean ℓ·softmax(decoder(z)) and gene-wise inverse
dispersion, or ``mse`` on log1p of normalized counts. Inference: a shared trunk with a q(y|x) head (its argmax is the
cell-type call) and a Gaussian q(z|x) head. A cell with a label (≥ 0) takes KL(q(z|x) ‖ p(z|y)) for its true y plus
``ce_weight`` × cross-entropy of q(y|x); a cell without one (label −1) takes the q(y|x)-weighted KL over components
plus KL(q(y|x) ‖ π). K enters only through K × latent_dim arithmetic: the decoder runs once per cell.
Every term is summed over genes or latent dimensions per cell and averaged over cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LIKELIHOODS
from .distributions import log_gaussian_unit, log_nb, log_zinb

UNLABELED = -1


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.LayerNorm(n_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class GMVAEModule(nn.Module):
    """Gaussian-mixture VAE over counts.

    Parameters
    ----------
    n_genes, n_components
        Input width and number of mixture components K (cell types).
    latent_dim, hidden_dims, dropout
        Architecture: encoder ``n_genes → hidden_dims → latent``, decoder mirrored.
    likelihood
        ``"mse"``, ``"nb"`` or ``"zinb"``.
    target_sum
        Counts per cell before ``log1p`` for the encoder input and the ``mse`` target.
    """

    def __init__(self, n_genes: int, n_components: int, *, latent_dim: int = 32,
                 hidden_dims: tuple[int, ...] = (512, 256), dropout: float = 0.1, likelihood: str = "zinb",
                 target_sum: float = 1e4):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, not {likelihood!r}.")
        if n_components < 2:
            raise ValueError(f"n_components must be at least 2, not {n_components}.")
        self.likelihood, self.target_sum = likelihood, target_sum
        self.encoder = _mlp([n_genes, *hidden_dims], dropout)
        self.head_y = nn.Linear(hidden_dims[-1], n_components)
        self.head_z = nn.Linear(hidden_dims[-1], 2 * latent_dim)
        self.decoder = _mlp([latent_dim, *reversed(hidden_dims)], dropout)
        self.head_x = nn.Linear(hidden_dims[0], n_genes)
        self.head_zero = nn.Linear(hidden_dims[0], n_genes) if likelihood == "zinb" else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes)) if likelihood != "mse" else None
        self.prior_mean = nn.Parameter(torch.randn(n_components, latent_dim))
        self.prior_log_var = nn.Parameter(torch.zeros(n_components, latent_dim))
        self.prior_logits = nn.Parameter(torch.zeros(n_components))

    def normalized_log1p(self, counts: torch.Tensor) -> torch.Tensor:
        return self._normalized_log1p(counts, counts.sum(-1, keepdim=True).clamp_min(1.0))

    def encode(self, counts: torch.Tensor):
        """``(logits of q(y|x), mean of q(z|x), log variance of q(z|x))``."""
        return self._encode(self.normalized_log1p(counts))

    def _normalized_log1p(self, counts: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        return torch.log1p(counts * (self.target_sum / library))

    def _encode(self, x_log1p: torch.Tensor):
        hidden = self.encoder(x_log1p)
        z_mean, z_log_var = self.head_z(hidden).chunk(2, dim=-1)
        return self.head_y(hidden), z_mean, z_log_var.clamp(-12.0, 8.0)

    def _log_likelihood(self, counts: torch.Tensor, x_log1p: torch.Tensor, library: torch.Tensor,
                        z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per cell, summed over genes (library and log1p input computed once per batch by forward)."""
        hidden = self.decoder(z)
        out = self.head_x(hidden)
        if self.likelihood == "mse":
            return log_gaussian_unit(x_log1p, out).sum(-1)
        log_mu = F.log_softmax(out.float(), dim=-1) + library.log()
        if self.likelihood == "nb":
            return log_nb(counts, log_mu, self.log_theta).sum(-1)
        return log_zinb(counts, log_mu, self.log_theta, self.head_zero(hidden)).sum(-1)

    def kl_to_components(self, z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ N(μ_k, σ_k²)) for every cell and component, summed over latent dimensions: (cells, K)."""
        z_mean, z_log_var = z_mean.float()[:, None, :], z_log_var.float()[:, None, :]
        prior_log_var = self.prior_log_var[None]
        return 0.5 * (prior_log_var - z_log_var
                      + (z_log_var.exp() + (z_mean - self.prior_mean[None]) ** 2) / prior_log_var.exp() - 1).sum(-1)

    def forward(self, counts: torch.Tensor, labels: torch.Tensor | None = None, *, kl_weight: float = 1.0,
                ce_weight: float = 1.0, class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms averaged over cells, plus the q(y|x) logits.

        ``labels``: component index per cell, −1 where unknown; None means no cell is labelled.
        ``class_weights``: per-component factor on the cross-entropy (rare types weigh more), default 1.
        """
        library = counts.sum(-1, keepdim=True).clamp_min(1.0)
        x_log1p = self._normalized_log1p(counts, library)
        logits_y, z_mean, z_log_var = self._encode(x_log1p)
        z = z_mean + torch.randn_like(z_mean) * (0.5 * z_log_var).exp() if self.training else z_mean
        recon = -self._log_likelihood(counts, x_log1p, library, z)
        kl_all = self.kl_to_components(z_mean, z_log_var)
        log_q_y = F.log_softmax(logits_y.float(), dim=-1)
        if labels is None:
            labels = torch.full(counts.shape[:1], UNLABELED, dtype=torch.long, device=counts.device)
        labeled = labels >= 0
        safe = labels.clamp_min(0)
        kl_labeled = kl_all.gather(1, safe[:, None]).squeeze(1)
        q_y = log_q_y.exp()
        kl_unlabeled = (q_y * kl_all).sum(-1) + (q_y * (log_q_y - F.log_softmax(self.prior_logits, -1))).sum(-1)
        kl = torch.where(labeled, kl_labeled, kl_unlabeled)
        ce = F.nll_loss(log_q_y, safe, reduction="none")
        if class_weights is not None:
            ce = ce * class_weights[safe]
        ce = torch.where(labeled, ce, torch.zeros_like(kl))
        loss = recon + kl_weight * kl + ce_weight * ce
        return {"loss": loss.mean(), "recon": recon.mean(), "kl": kl.mean(), "ce": ce.mean(), "logits_y": logits_y}

    @torch.no_grad()
    def zscore(self, z_mean: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """(E[z|x] − μ_k) / σ_k for each cell's component k: what is left after removing cell identity."""
        return (z_mean.float() - self.prior_mean[component]) * torch.exp(-0.5 * self.prior_log_var[component])

