"""GMVAE settings as plain dataclasses (no torch import, so the parameters file can be checked anywhere).

The ``gmvae`` section of a parameters file is :class:`ModuleConfig` and :class:`TrainConfig` together, plus the
settings of how a run is launched (:class:`gmvae4p.params.GMVAESection`).
"""

from __future__ import annotations

import dataclasses

LIKELIHOODS = ("mse", "nb", "zinb")
PLACEMENTS = ("auto", "resident", "streamed")
BACKENDS = ("fast", "reference")


@dataclasses.dataclass
class ModuleConfig:
    """Architecture and likelihood (:class:`gmvae4p.gmvae.module.GMVAEModule`)."""

    likelihood: str = "zinb"
    """``mse`` (on log1p of normalized counts), ``nb`` or ``zinb``."""
    latent_dim: int = 32
    hidden_dims: list[int] = dataclasses.field(default_factory=lambda: [512, 256])
    dropout: float = 0.1
    target_sum: float = 1e4
    """Counts per cell before log1p, for the encoder input and the ``mse`` target."""

    def __post_init__(self):
        _require(self.likelihood in LIKELIHOODS, "likelihood", f"one of {list(LIKELIHOODS)}", self.likelihood)
        _require(self.latent_dim >= 1, "latent_dim", "at least 1", self.latent_dim)
        _require(len(self.hidden_dims) >= 1 and min(self.hidden_dims) >= 1, "hidden_dims",
                 "a non-empty list of positive widths", self.hidden_dims)
        _require(0 <= self.dropout < 1, "dropout", "in [0, 1)", self.dropout)


@dataclasses.dataclass
class TrainConfig:
    """The optimization (:func:`gmvae4p.gmvae.train.train`)."""

    epochs: int = 10
    batch_size: int = 512
    """Cells per step on each process; the effective batch is this times the number of processes."""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    kl_warmup_epochs: float = 2.0
    # The reconstruction is a per-cell sum over genes, cross-entropy is O(1) per cell: α must be of this order for
    # q(y|x) to learn at all (with α = 1 its held-out balanced accuracy stays at chance; scANVI uses 50 for this).
    ce_weight: float = 50.0
    grad_clip: float = 5.0
    class_weighted: bool = True
    """Weight each cell's cross-entropy by the inverse frequency of its type, so rare types are not ignored."""
    supervised: bool = True
    """False trains without cell-type labels (K components still fixed): the unsupervised GMVAE."""
    prior_fit_epoch: int = 5
    """Unsupervised only: after this many epochs the prior's components are fitted by EM to the training cells'
    latent means (:mod:`gmvae4p.gmvae.mixture`), and the q(y|x) head starts afresh; both go on learning."""
    compile: bool = False
    """``torch.compile`` the forward pass and its backward (fewer, fused kernels: on GPU a step is otherwise bound
    by kernel launches and per-gene element-wise passes). The first epoch pays the compilation."""
    cuda_graphs: bool = True
    """Pad every batch to one shape (rows and non-zero entries) so that, on CUDA, the step is recorded once and
    replayed as a CUDA graph instead of launching its few hundred kernels one by one: with resident counts the whole
    step (batch gathering, forward, backward, the ranks' gradient all-reduce, clipping, AdamW), compiled or not, on
    every rank (the ranks agree on the shape); with streamed ones, in one process, the forward and backward, with
    ``compile`` only (``torch.compile``'s ``mode="reduce-overhead"``). With ``compile`` the fixed shape also means one
    compilation. Several ranks with streamed counts run their steps eagerly or compiled for varying shapes."""
    placement: str = "auto"
    """Where counts live: ``resident`` on the device, ``streamed`` from pinned host memory, or ``auto``."""
    backend: str = "fast"
    """Which module computes the loss: ``fast`` (:class:`~gmvae4p.gmvae.module.GMVAEModule`: sparse counts, a
    hand-written backward, Triton kernels and CUDA graphs on GPU) or ``reference``
    (:class:`~gmvae4p.gmvae.reference.ReferenceGMVAE`: dense counts and autograd, to read, debug or change the model;
    no ``compile``). The two give the same loss and gradients (``tests/test_reference.py``)."""

    def __post_init__(self):
        _require(self.epochs >= 1, "epochs", "at least 1", self.epochs)
        _require(self.batch_size >= 1, "batch_size", "at least 1", self.batch_size)
        _require(self.lr > 0, "lr", "positive", self.lr)
        _require(self.placement in PLACEMENTS, "placement", f"one of {list(PLACEMENTS)}", self.placement)
        _require(self.backend in BACKENDS, "backend", f"one of {list(BACKENDS)}", self.backend)
        _require(self.backend == "fast" or not self.compile, "compile", "false with backend reference", self.compile)
        _require(self.supervised or 1 <= self.prior_fit_epoch < self.epochs, "prior_fit_epoch",
                 f"at least 1 and less than epochs ({self.epochs}) when training unsupervised", self.prior_fit_epoch)


def _require(ok: bool, name: str, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{name} must be {what}, not {value!r}.")
