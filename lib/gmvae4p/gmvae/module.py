"""The Gaussian-mixture VAE as a fast pure torch module (it never sees AnnData): the model of :mod:`.reference`,
whose loss and gradients it reproduces (``tests/test_reference.py``), computed for speed. K enters only through
K × latent_dim arithmetic: the decoder runs once per cell.

Counts come as :class:`SparseCounts` (coordinates of the non-zero entries). The encoder's input is densified once, in
the autocast dtype, and is also the ``mse`` target. The nb/zinb likelihood is the per-cell sum of what every gene
contributes at a zero count (from decoder outputs alone) plus what each non-zero entry adds (see
:mod:`.distributions`); on CUDA both run as the Triton kernels of :mod:`.kernels`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .config import LIKELIHOODS
from .distributions import (at_least_float32, log_gaussian_unit, log_nb_gain_and_grads, log_nb_zero_and_grads,
                            log_zinb_gain_and_grads, log_zinb_zero_and_grads)
from .prior import MixturePrior

UNLABELED = -1


class SparseCounts(NamedTuple):
    """A batch of count rows by its non-zero entries, in row order: ``counts[row[i], col[i]] = value[i]`` in a
    ``shape`` matrix, row r's entries at positions ``offsets[r]:offsets[r + 1]``."""

    row: torch.Tensor
    col: torch.Tensor
    value: torch.Tensor
    offsets: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def from_dense(cls, counts: torch.Tensor) -> SparseCounts:
        row, col = counts.nonzero(as_tuple=True)
        offsets = F.pad((counts != 0).sum(1).cumsum(0), (1, 0))
        return cls(row, col, counts[row, col], offsets, tuple(counts.shape))

    def flat_index(self, n_columns: int | None = None) -> torch.Tensor:
        """Positions of the entries in the flattened matrix, rows ``n_columns`` wide (default: ``shape[1]``)."""
        return self.row * (n_columns or self.shape[1]) + self.col

    def to_dense(self, dtype: torch.dtype = torch.float32, values: torch.Tensor | None = None, *,
                 n_columns: int | None = None) -> torch.Tensor:
        """The dense matrix, with ``values`` (default: the counts) at the non-zero entries; ``n_columns`` pads it."""
        n_columns = n_columns or self.shape[1]
        dense = torch.zeros(self.shape[0] * n_columns, dtype=dtype, device=self.value.device)
        dense[self.flat_index(n_columns)] = (self.value if values is None else values).to(dtype)
        return dense.view(self.shape[0], n_columns)

    def row_sums(self, values: torch.Tensor) -> torch.Tensor:
        """Per row, the sum of its entries' ``values`` (differentiable; see :func:`_segment_sums`)."""
        return _segment_sums(values, self.offsets)


def _segment_sums(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sums of ``values[offsets[r]:offsets[r + 1]]`` as differences of a float64 prefix sum, not a scatter-add: a
    scatter-add of a batch's millions of entries into its few thousand rows is millions of atomic additions
    contending for few addresses, which made it one of the slowest kernels of a compiled step
    (``torch.segment_reduce`` was slower than this on a GPU)."""
    prefix = F.pad(values.double().cumsum(0), (1, 0))
    return (prefix[offsets[1:]] - prefix[offsets[:-1]]).to(values.dtype)


def count_log_likelihood(out: torch.Tensor, zero_logits: torch.Tensor | None, bias: torch.Tensor,
                         zero_bias: torch.Tensor | None, log_library: torch.Tensor, log_theta: torch.Tensor,
                         counts: SparseCounts) -> torch.Tensor:
    """Per cell, log NB (``zero_logits`` None) or log ZINB of ``counts``, summed over genes, with mean
    ℓ·softmax(out + bias) over the first ``len(log_theta)`` columns (the rest are padding) and zero logits
    ``zero_logits + zero_bias``; ``log_library``: (cells, 1). Its terms: what every gene contributes at a zero count,
    plus what each non-zero entry adds (:mod:`.distributions`). The biases come separately from the matrix products,
    so that nothing writes a bias-added copy of the cells × genes outputs."""
    return _CountLogLikelihood.apply(out, zero_logits, bias, zero_bias, log_library, log_theta, counts.row,
                                     counts.col, counts.value, counts.offsets)


class _CountLogLikelihood(torch.autograd.Function):
    """:func:`count_log_likelihood` with a hand-written backward.

    With log μ = out + b − N + log ℓ (N the per-cell log-sum-exp over genes) and T the cell's total,
    ∂T/∂out_j = t'_j − softmax_j · Σ_g t'_g, t'_j the derivative by log μ_j of gene j's zero-count term plus (at a
    non-zero entry) its gain. The forward keeps the sum Σ_g t'_g and each entry's derivatives, so the backward reads
    only the decoder outputs in their own (autocast) dtype, a few numbers per cell and a few per entry; left to
    autograd, every float32 intermediate of the cells × genes arithmetic is kept or recomputed, which made these few
    lines the largest part of a compiled step's GPU time. On CUDA the arithmetic runs as the Triton kernels of
    :mod:`.kernels`; elsewhere as the torch code below.
    """

    @staticmethod
    def _dense(out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm=None):
        """log μ over the genes (float32 or wider), the normaliser N per cell, and the zero-count terms with their
        derivatives by log μ, log θ and (zinb) the zero logit."""
        genes = slice(0, len(log_theta))
        (wide,) = at_least_float32(out[:, genes])
        wide = wide + bias[genes]
        if log_norm is None:
            log_norm = torch.logsumexp(wide, -1)
        log_mu = wide - log_norm[:, None] + log_library
        if zero_logits is None:
            return log_mu, log_norm, None, (*log_nb_zero_and_grads(log_mu, log_theta), None)
        (zero_wide,) = at_least_float32(zero_logits[:, genes])
        zero_wide = zero_wide + zero_bias[genes]
        return log_mu, log_norm, zero_wide, log_zinb_zero_and_grads(log_mu, log_theta, zero_wide)

    @staticmethod
    def forward(ctx, out, zero_logits, bias, zero_bias, log_library, log_theta, row, col, value, offsets):
        ctx.fused = _fused(out)
        if ctx.fused:
            sums, log_norm, slope_sums, entry_grads = kernels.count_forward(
                out, zero_logits, bias, zero_bias, log_library, log_theta, row, col, value)
        else:
            log_mu, log_norm, zero_wide, (terms, by_log_mu, _, _) = _CountLogLikelihood._dense(
                out, zero_logits, bias, zero_bias, log_library, log_theta)
            at = row * len(log_theta) + col
            arguments = (value, log_mu.reshape(-1)[at], log_theta[col])
            gain, *entry_grads = log_nb_gain_and_grads(*arguments) if zero_logits is None \
                else log_zinb_gain_and_grads(*arguments, zero_wide.reshape(-1)[at])
            sums = terms.sum(-1) + _segment_sums(gain, offsets)
            slope_sums = by_log_mu.sum(-1) + _segment_sums(entry_grads[0], offsets)
            entry_grads = torch.stack(entry_grads)
        ctx.save_for_backward(out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm, slope_sums,
                              entry_grads, row, col)
        return sums

    @staticmethod
    def backward(ctx, grad_sums):
        out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm, slope_sums, entry_grads, row, col = \
            ctx.saved_tensors
        if ctx.fused:
            grad_out, grad_zero_logits, grad_bias, grad_zero_bias, grad_log_theta = kernels.count_backward(
                out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm, slope_sums, entry_grads, row,
                col, grad_sums)
        else:
            log_mu, _, _, (_, by_log_mu, by_log_theta, by_zero_logit) = _CountLogLikelihood._dense(
                out, zero_logits, bias, zero_bias, log_library, log_theta, log_norm)
            grad = grad_sums[:, None]
            at, grad_at = row * len(log_theta) + col, grad_sums[row]
            softmax = (log_mu - log_library).exp()
            grad_wide = grad * (by_log_mu - softmax * slope_sums[:, None])
            grad_wide.view(-1).index_add_(0, at, grad_at * entry_grads[0])
            grad_log_theta = (grad * by_log_theta).sum(0).index_add_(0, col, grad_at * entry_grads[1])
            padding = (0, out.shape[1] - len(log_theta))
            grad_out, grad_bias = F.pad(grad_wide, padding).to(out.dtype), F.pad(grad_wide.sum(0), padding)
            grad_zero_logits = grad_zero_bias = None
            if zero_logits is not None:
                grad_zero_wide = grad * by_zero_logit
                grad_zero_wide.view(-1).index_add_(0, at, grad_at * entry_grads[2])
                grad_zero_logits = F.pad(grad_zero_wide, padding).to(zero_logits.dtype)
                grad_zero_bias = F.pad(grad_zero_wide.sum(0), padding)
        return (grad_out, grad_zero_logits, grad_bias.to(bias.dtype),
                None if grad_zero_bias is None else grad_zero_bias.to(zero_bias.dtype),
                grad_sums[:, None] * slope_sums[:, None], grad_log_theta.to(log_theta.dtype), None, None, None, None)


def _fused(out: torch.Tensor) -> bool:
    """Whether the Triton kernels take the likelihood (they compute in float32: float64 stays on torch)."""
    return kernels.AVAILABLE and out.is_cuda and out.dtype != torch.float64


def check_arguments(likelihood: str, n_components: int) -> None:
    """What both GMVAE modules (this one and :class:`~.reference.ReferenceGMVAE`) refuse."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, not {likelihood!r}.")
    if n_components < 2:
        raise ValueError(f"n_components must be at least 2, not {n_components}.")


def mlp(sizes: list[int], dropout: float, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear → LayerNorm → activation → Dropout for each consecutive pair of ``sizes``."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.LayerNorm(n_out), activation(), nn.Dropout(dropout)]
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
        check_arguments(likelihood, n_components)
        self.likelihood, self.target_sum, self.n_genes = likelihood, target_sum, n_genes
        # Gene-wide layers are padded to a multiple of 64 columns, rows of 128 bytes in bf16: cuBLAS needs 16 for its
        # tensor-core kernels (an odd gene count falls back to far slower kernels), and torch.compile pads other rows
        # to 128 bytes, then copies each cells × genes output to unpadded rows for every Triton kernel that reads
        # it (four copies per zinb step). Padded inputs are zero and padded outputs are never read.
        self.width = -(-n_genes // 64) * 64
        self.encoder = mlp([self.width, *hidden_dims], dropout)
        self.head_y = nn.Linear(hidden_dims[-1], n_components)
        self.head_z = nn.Linear(hidden_dims[-1], 2 * latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims)], dropout)
        self.head_x = nn.Linear(hidden_dims[0], self.width)
        self.head_zero = nn.Linear(hidden_dims[0], self.width) if likelihood == "zinb" else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes)) if likelihood != "mse" else None
        self.prior = MixturePrior(n_components, latent_dim)

    def load_weights(self, state_dict: dict, source: str) -> None:
        """``load_state_dict``, with one clear error for a file written when gene-wide layers had another padding."""
        width = state_dict["head_x.weight"].shape[0]
        if width != self.width:
            raise ValueError(f"{source} holds gene-wide layers {width} columns wide, written by an earlier gmvae4p; "
                             f"this one pads {self.n_genes} genes to {self.width} columns: train the GMVAE again.")
        self.load_state_dict(state_dict)

    def encode(self, counts: SparseCounts | torch.Tensor):
        """``(logits of q(y|x), mean of q(z|x), log variance of q(z|x))``; ``counts`` sparse or a dense tensor."""
        counts = _as_sparse(counts)
        return self._encode(self._input(counts, self._normalized_log1p(counts, _library(counts))))

    def _normalized_log1p(self, counts: SparseCounts, library: torch.Tensor) -> torch.Tensor:
        """log1p of the non-zero counts scaled to ``target_sum`` per cell."""
        return torch.log1p(counts.value * (self.target_sum / library.index_select(0, counts.row)))

    def _input(self, counts: SparseCounts, log1p_values: torch.Tensor) -> torch.Tensor:
        """The dense encoder input, made directly in the autocast dtype (no float32 copy to cast)."""
        device = counts.value.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.prior.mean.dtype
        return counts.to_dense(dtype, log1p_values, n_columns=self.width)

    def _encode(self, x_log1p: torch.Tensor):
        hidden = self.encoder(x_log1p)
        z_mean, z_log_var = self.head_z(hidden).chunk(2, dim=-1)
        return self.head_y(hidden), z_mean, z_log_var.clamp(-12.0, 8.0)

    def _log_likelihood(self, counts: SparseCounts, x_log1p: torch.Tensor, library: torch.Tensor,
                        z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per cell, summed over genes. nb/zinb: zero-count sums over all genes plus the non-zero
        entries' gain, with the gene-wide heads' biases added by the likelihood's kernels (a bias in the matrix
        product made a compiled step copy it into each cells × genes output first). mse: against the encoder's dense
        input ``x_log1p``, in its dtype (bf16 under autocast: rounding the target by at most 2⁻⁹ of its value, as
        the predictions themselves are rounded), one fused pass over the cells × genes matrix each way."""
        hidden = self.decoder(z)
        if self.likelihood == "mse":
            genes = slice(0, self.n_genes)
            return log_gaussian_unit(x_log1p[:, genes], self.head_x(hidden)[:, genes]).sum(-1)
        out = F.linear(hidden, self.head_x.weight)
        zero_logits = F.linear(hidden, self.head_zero.weight) if self.head_zero is not None else None
        return count_log_likelihood(out, zero_logits, self.head_x.bias,
                                    None if zero_logits is None else self.head_zero.bias, library.log()[:, None],
                                    self.log_theta, counts)

    def forward(self, counts: SparseCounts | torch.Tensor, labels: torch.Tensor | None = None, *, kl_weight: float = 1.0,
                ce_weight: float = 1.0, class_weights: torch.Tensor | None = None,
                cell_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms averaged over cells, plus the q(y|x) logits.

        ``labels``: component index per cell, −1 where unknown; None means no cell is labelled.
        ``class_weights``: per-component factor on the cross-entropy (rare types weigh more), default 1.
        ``cell_mask``: False for the padding rows of a fixed-shape batch (:mod:`.batches`), which the averages leave
        out; None: every row is a cell.
        """
        counts = _as_sparse(counts)
        library = _library(counts)
        x_log1p = self._input(counts, self._normalized_log1p(counts, library))
        logits_y, z_mean, z_log_var = self._encode(x_log1p)
        z = z_mean + torch.randn_like(z_mean) * (0.5 * z_log_var).exp() if self.training else z_mean
        recon = -self._log_likelihood(counts, x_log1p, library, z)
        kl_all = self.prior.kl(z_mean, z_log_var)
        log_q_y = F.log_softmax(at_least_float32(logits_y)[0], dim=-1)
        if labels is None:
            labels = torch.full(counts.shape[:1], UNLABELED, dtype=torch.long, device=counts.value.device)
        labeled = labels >= 0
        safe = labels.clamp_min(0)
        kl_labeled = kl_all.gather(1, safe[:, None]).squeeze(1)
        q_y = log_q_y.exp()
        kl_unlabeled = (q_y * kl_all).sum(-1) + (q_y * (log_q_y - self.prior.log_weights())).sum(-1)
        kl = torch.where(labeled, kl_labeled, kl_unlabeled)
        ce = F.nll_loss(log_q_y, safe, reduction="none")
        if class_weights is not None:
            ce = ce * class_weights[safe]
        ce = torch.where(labeled, ce, torch.zeros_like(kl))
        terms = {"loss": recon + kl_weight * kl + ce_weight * ce, "recon": recon, "kl": kl, "ce": ce}
        if cell_mask is None:
            means = {name: term.mean() for name, term in terms.items()}
        else:  # padding rows' terms are finite (an empty row is a valid cell), so a zero weight removes them
            weights = cell_mask.to(recon.dtype) / cell_mask.sum().clamp_min(1)
            means = {name: term @ weights for name, term in terms.items()}
        return {**means, "logits_y": logits_y}

    def zscore(self, z_mean: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """(E[z|x] − μ_k) / σ_k for each cell's component k (:meth:`MixturePrior.zscore`)."""
        return self.prior.zscore(z_mean, component)



def _as_sparse(counts: SparseCounts | torch.Tensor) -> SparseCounts:
    return counts if isinstance(counts, SparseCounts) else SparseCounts.from_dense(counts)


def _library(counts: SparseCounts) -> torch.Tensor:
    """Total counts per cell (at least 1, so that an empty cell does not divide by zero)."""
    return counts.row_sums(counts.value).clamp_min(1.0)
