"""The Gaussian-mixture VAE as a pure torch module (it never sees AnnData).

Generative: y ~ Cat(π) over K components (one per cell type), z | y ~ N(μ_y, σ_y²) with learned μ, σ, π;
x | z from the decoder with library size ℓ: ``nb``/``zinb`` with mean ℓ·softmax(decoder(z)) and gene-wise inverse
dispersion, or ``mse`` on log1p of normalized counts. Inference: a shared trunk with a q(y|x) head (its argmax is the
cell-type call) and a Gaussian q(z|x) head. A cell with a label (≥ 0) takes KL(q(z|x) ‖ p(z|y)) for its true y plus
``ce_weight`` × cross-entropy of q(y|x); a cell without one (label −1) takes the q(y|x)-weighted KL over components
plus KL(q(y|x) ‖ π). K enters only through K × latent_dim arithmetic: the decoder runs once per cell.
Every term is summed over genes or latent dimensions per cell and averaged over cells.

Counts come as :class:`SparseCounts` (coordinates of the non-zero entries). The encoder's input is densified once, in
the autocast dtype; the likelihood is the per-cell sum of what every gene contributes at a zero count (from decoder
outputs alone) plus what each non-zero entry adds (see :mod:`.distributions`). The first part is the only per-gene
element-wise arithmetic left (on CUDA two Triton kernels, :mod:`.kernels`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .config import LIKELIHOODS
from .distributions import (at_least_float32, log_gaussian_unit, log_nb_count_gain, log_nb_zero_and_grads,
                            log_zinb_nonzero, log_zinb_zero, log_zinb_zero_and_grads)

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

    def at_entries(self, per_row: torch.Tensor) -> torch.Tensor:
        """``per_row[row]``, whose gradient is summed by :meth:`row_sums` rather than scatter-added."""
        return _RowsToEntries.apply(per_row, self.row, self.offsets)


def _segment_sums(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sums of ``values[offsets[r]:offsets[r + 1]]`` as differences of a float64 prefix sum, not a scatter-add: a
    scatter-add of a batch's millions of entries into its few thousand rows is millions of atomic additions
    contending for few addresses, which made it one of the slowest kernels of a compiled step
    (``torch.segment_reduce`` was slower than this in a run on an H100)."""
    prefix = F.pad(values.double().cumsum(0), (1, 0))
    return (prefix[offsets[1:]] - prefix[offsets[:-1]]).to(values.dtype)


class _RowsToEntries(torch.autograd.Function):
    @staticmethod
    def forward(ctx, per_row, row, offsets):
        ctx.save_for_backward(offsets)
        return per_row.index_select(0, row)

    @staticmethod
    def backward(ctx, grad):
        (offsets,) = ctx.saved_tensors
        return _segment_sums(grad, offsets), None, None


class _GatherDistinct(torch.autograd.Function):
    """``source.reshape(-1)[index]`` for distinct ``index`` (a batch's non-zero entries; :class:`.batches.CSRBatches`
    sums repeated ones): the gradient is scattered by plain stores, where the default backward adds atomically."""

    @staticmethod
    def forward(ctx, source, index):
        ctx.save_for_backward(index)
        ctx.source_shape = source.shape
        return source.reshape(-1).index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        flat = grad.new_zeros(ctx.source_shape.numel()).index_put_((index,), grad)
        return flat.view(ctx.source_shape), None


def zero_count_sums(likelihood: str, out: torch.Tensor, zero_logits: torch.Tensor | None, log_library: torch.Tensor,
                    log_theta: torch.Tensor | None, entries: torch.Tensor, *, n_genes: int) -> tuple:
    """Per cell, the log-likelihood summed over the first ``n_genes`` columns as if every count were zero; (nb, zinb)
    the log-softmax normaliser of the decoder output over them (``None`` for mse); then the decoder outputs, and
    (zinb) the zero logits, at ``entries``: the flat indices of a batch's non-zero counts, distinct. Columns past
    ``n_genes`` are padding."""
    if likelihood == "mse":
        sums = log_gaussian_unit(torch.zeros_like(out[:, :n_genes]), out[:, :n_genes]).sum(-1)
        return sums, None, _GatherDistinct.apply(out, entries)
    return _CountZeroSums.apply(out, zero_logits, log_library, log_theta, entries)


class _CountZeroSums(torch.autograd.Function):
    """nb/zinb zero-count sums with a hand-written backward, and the decoder outputs at the non-zero entries.

    With log μ = out − N + log ℓ (N the per-cell log-sum-exp over genes) and h the per-gene zero-count term,
    ∂Σh/∂out_j = h'_j − softmax_j · Σ_g h'_g. The sum Σ_g h'_g is taken in the forward pass, so the backward keeps
    only the decoder outputs in their own (autocast) dtype and two numbers per cell; left to autograd, every float32
    intermediate of the cells × genes arithmetic is kept or recomputed, which made these few lines the largest part of
    a compiled step's GPU time. The gradients of the values at the entries are added into the dense ones in place
    (no second cells × genes buffer to sum). On CUDA the dense arithmetic runs as the Triton kernels of
    :mod:`.kernels`; elsewhere as the torch code below.
    """

    @staticmethod
    def _terms(out, zero_logits, log_norm, log_library, log_theta):
        """The genes' decoder outputs in float32 (or wider), then per cell: log μ, the zero-count term and its
        derivatives by log μ, log θ and (zinb) the zero logit. Without ``log_norm``, the log-sum-exp is taken here."""
        genes = slice(0, len(log_theta))
        (wide,) = at_least_float32(out[:, genes])
        if log_norm is None:
            log_norm = torch.logsumexp(wide, -1, keepdim=True)
        log_mu = wide - log_norm + log_library
        if zero_logits is None:
            return log_norm, log_mu, *log_nb_zero_and_grads(log_mu, log_theta), None
        return log_norm, log_mu, *log_zinb_zero_and_grads(log_mu, log_theta, zero_logits[:, genes])

    @staticmethod
    def forward(ctx, out, zero_logits, log_library, log_theta, entries):
        if _fused(out):
            sums, log_norm, slope_sums = kernels.zero_count_forward(out, zero_logits, log_library, log_theta)
            log_norm, slope_sums = log_norm[:, None], slope_sums[:, None]
        else:
            log_norm, _, value, by_log_mu, _, _ = _CountZeroSums._terms(out, zero_logits, None, log_library,
                                                                        log_theta)
            sums, slope_sums = value.sum(-1), by_log_mu.sum(-1, keepdim=True)
        ctx.save_for_backward(out, zero_logits, log_library, log_theta, log_norm, slope_sums, entries)
        at_entries = [t.reshape(-1).index_select(0, entries) for t in (out, zero_logits) if t is not None]
        return sums, log_norm, *at_entries

    @staticmethod
    def backward(ctx, grad_sums, grad_log_norm, *grad_at_entries):
        out, zero_logits, log_library, log_theta, log_norm, slope_sums, entries = ctx.saved_tensors
        grad = grad_sums[:, None]
        fused = _fused(out)
        if fused:
            grad_out, grad_zero_logits, grad_log_theta = kernels.zero_count_backward(
                out, zero_logits, log_library, log_theta, log_norm[:, 0], slope_sums[:, 0], grad_sums,
                grad_log_norm[:, 0])
        else:
            _, log_mu, _, by_log_mu, by_log_theta, by_zero_logits = _CountZeroSums._terms(
                out, zero_logits, log_norm, log_library, log_theta)
            softmax = (log_mu - log_library).exp()
            padding = (0, out.shape[1] - len(log_theta))
            grad_out = F.pad(grad * (by_log_mu - softmax * slope_sums) + grad_log_norm * softmax,
                             padding).to(out.dtype)
            grad_zero_logits = None if zero_logits is None else F.pad(grad * by_zero_logits,
                                                                      padding).to(zero_logits.dtype)
            grad_log_theta = (grad * by_log_theta).sum(0)
        for dense, at_entries in zip((grad_out, grad_zero_logits), grad_at_entries):
            if fused:
                kernels.add_at_entries(dense, entries, at_entries)
            else:
                dense.view(-1).index_add_(0, entries, at_entries.to(dense.dtype))
        return grad_out, grad_zero_logits, grad * slope_sums, grad_log_theta.to(log_theta.dtype), None


def _fused(out: torch.Tensor) -> bool:
    """Whether the Triton kernels take the zero-count sums (they compute in float32: float64 stays on torch)."""
    return kernels.AVAILABLE and out.is_cuda and out.dtype != torch.float64


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
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, not {likelihood!r}.")
        if n_components < 2:
            raise ValueError(f"n_components must be at least 2, not {n_components}.")
        self.likelihood, self.target_sum, self.n_genes = likelihood, target_sum, n_genes
        # Gene-wide layers are padded to a multiple of 8 columns: rows of 16 bytes in bf16 let cuBLAS use its
        # tensor-core kernels (at 24,205 genes it fell back to kernels 5× slower). Padded inputs are zero and
        # padded outputs are never read.
        self.width = -(-n_genes // 8) * 8
        self.encoder = mlp([self.width, *hidden_dims], dropout)
        self.head_y = nn.Linear(hidden_dims[-1], n_components)
        self.head_z = nn.Linear(hidden_dims[-1], 2 * latent_dim)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims)], dropout)
        self.head_x = nn.Linear(hidden_dims[0], self.width)
        self.head_zero = nn.Linear(hidden_dims[0], self.width) if likelihood == "zinb" else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes)) if likelihood != "mse" else None
        self.prior_mean = nn.Parameter(torch.randn(n_components, latent_dim))
        self.prior_log_var = nn.Parameter(torch.zeros(n_components, latent_dim))
        self.prior_logits = nn.Parameter(torch.zeros(n_components))

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
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.prior_mean.dtype
        return counts.to_dense(dtype, log1p_values, n_columns=self.width)

    def _encode(self, x_log1p: torch.Tensor):
        hidden = self.encoder(x_log1p)
        z_mean, z_log_var = self.head_z(hidden).chunk(2, dim=-1)
        return self.head_y(hidden), z_mean, z_log_var.clamp(-12.0, 8.0)

    def _log_likelihood(self, counts: SparseCounts, log1p_values: torch.Tensor, library: torch.Tensor,
                        z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per cell, summed over genes: zero-count sums over all genes plus the non-zero entries' gain."""
        hidden = self.decoder(z)
        out = self.head_x(hidden)
        zero_logits = self.head_zero(hidden) if self.head_zero is not None else None
        log_library = library.log()[:, None]
        zero_sums, log_norm, out_at, *zero_logits_at = zero_count_sums(
            self.likelihood, out, zero_logits, log_library, self.log_theta, counts.flat_index(self.width),
            n_genes=self.n_genes)
        if self.likelihood == "mse":
            gain = log_gaussian_unit(log1p_values, out_at) - log_gaussian_unit(torch.zeros_like(out_at), out_at)
        else:
            log_mu = out_at + counts.at_entries((log_library - log_norm)[:, 0])
            log_theta = self.log_theta.index_select(0, counts.col)
            if self.likelihood == "nb":
                gain = log_nb_count_gain(counts.value, log_mu, log_theta)
            else:
                gain = (log_zinb_nonzero(counts.value, log_mu, log_theta, zero_logits_at[0])
                        - log_zinb_zero(log_mu, log_theta, zero_logits_at[0]))
        return zero_sums + counts.row_sums(gain.to(zero_sums.dtype))

    def kl_to_components(self, z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) ‖ N(μ_k, σ_k²)) for every cell and component, summed over latent dimensions: (cells, K)."""
        z_mean, z_log_var = z_mean.float()[:, None, :], z_log_var.float()[:, None, :]
        prior_log_var = self.prior_log_var[None]
        return 0.5 * (prior_log_var - z_log_var
                      + (z_log_var.exp() + (z_mean - self.prior_mean[None]) ** 2) / prior_log_var.exp() - 1).sum(-1)

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
        log1p_values = self._normalized_log1p(counts, library)
        logits_y, z_mean, z_log_var = self._encode(self._input(counts, log1p_values))
        z = z_mean + torch.randn_like(z_mean) * (0.5 * z_log_var).exp() if self.training else z_mean
        recon = -self._log_likelihood(counts, log1p_values, library, z)
        kl_all = self.kl_to_components(z_mean, z_log_var)
        log_q_y = F.log_softmax(logits_y.float(), dim=-1)
        if labels is None:
            labels = torch.full(counts.shape[:1], UNLABELED, dtype=torch.long, device=counts.value.device)
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
        terms = {"loss": recon + kl_weight * kl + ce_weight * ce, "recon": recon, "kl": kl, "ce": ce}
        if cell_mask is None:
            means = {name: term.mean() for name, term in terms.items()}
        else:  # padding rows' terms are finite (an empty row is a valid cell), so a zero weight removes them
            weights = cell_mask.to(recon.dtype) / cell_mask.sum().clamp_min(1)
            means = {name: term @ weights for name, term in terms.items()}
        return {**means, "logits_y": logits_y}

    @torch.no_grad()
    def zscore(self, z_mean: torch.Tensor, component: torch.Tensor) -> torch.Tensor:
        """(E[z|x] − μ_k) / σ_k for each cell's component k: what is left after removing cell identity."""
        return (z_mean.float() - self.prior_mean[component]) * torch.exp(-0.5 * self.prior_log_var[component])



def _as_sparse(counts: SparseCounts | torch.Tensor) -> SparseCounts:
    return counts if isinstance(counts, SparseCounts) else SparseCounts.from_dense(counts)


def _library(counts: SparseCounts) -> torch.Tensor:
    """Total counts per cell (at least 1, so that an empty cell does not divide by zero)."""
    return counts.row_sums(counts.value).clamp_min(1.0)
