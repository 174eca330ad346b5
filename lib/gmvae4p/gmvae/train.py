"""GMVAE training: the loop, and ``python -m gmvae4p.gmvae.train``, the entry that torchrun starts on every rank.

The loop: AdamW, linear KL warm-up, bf16 autocast on CUDA, optional ``torch.compile``, on CUDA (on every rank) the
whole step replayed as one CUDA graph (:class:`_GraphedStep`), gradient clipping. Metrics accumulate as device
tensors and are read once per epoch, so a step never waits for the host. Under torchrun each rank trains on its shard
(data parallel): the ranks start from rank 0's weights, their gradients are averaged by one all-reduce per step
(:class:`_AveragedGradients`), metrics are all-reduced as sums and every rank takes the same number of steps. Rank 0
alone logs, checkpoints and writes. One log line per epoch:
``Epoch  3/10: loss=…, recon=…, kl=…, ce=…, acc=…, val_acc=…, cells/s=…``.

Entry: ``python -m gmvae4p.gmvae.train TRAINSET OUTPUT_DIR [--resume]`` reads ``OUTPUT_DIR/settings.json``
(:func:`write_settings`) and the training-set file (:mod:`.trainset`), and writes into ``OUTPUT_DIR``:

- ``checkpoint.pt`` after the first epoch, then once :data:`CHECKPOINT_SECONDS` have passed since the last, and after
  the last epoch (atomic; ``complete: False``; ``--resume`` continues from it);
- ``embedding.h5``: per cell, in the training set's cell order, ``z_mean`` (E[z|x]), ``zscore`` and ``proba``
  (q(y|x)), plus ``component_names``;
- ``model.pt`` last, only when everything before succeeded (``complete: True``).

Every ``.pt`` file loads with ``torch.load(..., weights_only=True)``. Needs torch, numpy, scipy and h5py only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.elastic.multiprocessing.errors import record

from ..data.atomic import atomic_path
from . import kernels
from .batches import CSRBatches
from .config import ModuleConfig, TrainConfig
from .mixture import fit_gaussian_mixture
from .module import UNLABELED, GMVAEModule, SparseCounts
from .reference import ReferenceGMVAE
from .trainset import read_shard

TERMS = ("loss", "recon", "kl", "ce")
SETTINGS, CHECKPOINT, EMBEDDING, MODEL = "settings.json", "checkpoint.pt", "embedding.h5", "model.pt"
CHECKPOINT_SECONDS = 60.0
"""Training time between checkpoints: a checkpoint of a whole-transcriptome model (weights and AdamW's two moments)
takes about as long to write as a GPU epoch, so one per epoch would add a large share to the training; a stopped run
loses at most this much."""


def train(module: GMVAEModule, batches: CSRBatches, labels: torch.Tensor, *, config: TrainConfig = TrainConfig(),
          validation: tuple[CSRBatches, torch.Tensor] | None = None, log: Callable[[str], None] | None = print,
          optimizer: torch.optim.Optimizer | None = None, history: list[dict] | None = None,
          on_epoch: Callable[[list[dict]], None] | None = None, seed: int = 0) -> list[dict]:
    """Train ``module`` on the rows of ``batches`` with component ``labels`` (−1: unknown); return per-epoch metrics.

    ``validation``: held-out cells (other patients) and their labels, for ``val_acc`` (under DDP every rank passes
    it, possibly with no rows). ``seed`` fixes shuffling and dropout per epoch. ``optimizer`` and ``history``
    continue a run (their epochs are skipped); ``on_epoch(history)`` runs after each epoch (checkpointing).
    Under an initialized process group the ranks' gradients are averaged every step (:class:`_AveragedGradients`)
    and metrics are summed over ranks.
    """
    device = batches.device
    module.to(device).train()
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    averaged = _AveragedGradients(module) if distributed else None
    stepper = module
    # On CUDA steps are replayed as CUDA graphs of fixed-shape batches: with resident counts the whole step
    # (_GraphedStep, compiled or not); streamed counts change address with every chunk, so there only a compiled
    # forward and backward are recorded (torch.compile's "reduce-overhead"). Under several ranks the recorded step
    # holds the all-reduce of the gradients: every rank must record at the same step, so the ranks agree on the
    # batches' shape (and with it the entry bound, the recording's key) each epoch.
    if device.type == "cuda" and kernels.AVAILABLE:
        kernels.ops()  # registered now, not while torch.compile traces or a CUDA graph records the likelihood
    graphs = config.cuda_graphs and device.type == "cuda"
    whole_step_graph = graphs and batches.placement == "resident"
    compiler_graphs = graphs and config.compile and not whole_step_graph and not distributed
    fixed_shape = whole_step_graph or _fixed_shape_steps(config, distributed)
    if config.compile:  # unpadded, shapes vary with each batch's non-zero count: compile for dynamic shapes at once
        stepper = torch.compile(stepper, dynamic=not fixed_shape, mode="reduce-overhead" if compiler_graphs else None)
    optimizer = optimizer or make_optimizer(module, config)
    # (autocast's cache of cast weights must be off while a CUDA graph records: PyTorch's CUDA graph notes)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda",
                              cache_enabled=not whole_step_graph)
    history = list(history or [])
    # Every rank must take the same number of steps: the largest shard sets it.
    n_batches = math.ceil(_reduce(torch.tensor([batches.n_rows], device=device), dist.ReduceOp.MAX)[0].item()
                          / config.batch_size) if distributed else math.ceil(batches.n_rows / config.batch_size)
    n_cells = _reduce(torch.tensor([float(batches.n_rows)], device=device))[0].item() if distributed \
        else batches.n_rows
    class_weights = _class_weights(labels, module.prior.n_components, distributed) \
        if config.class_weighted and config.supervised else None
    sums = torch.zeros(len(TERMS) + 2, device=device)  # terms × cells, correct calls, labelled cells
    agree = (lambda rows, entries: _largest_over_ranks((rows, entries), device)) if distributed else None

    def step(positions: torch.Tensor, x: SparseCounts, kl_weight: torch.Tensor) -> None:
        cells = positions >= 0  # False: a fixed-shape batch's padding rows
        y = torch.where(cells, labels[positions.clamp_min(0)], UNLABELED) if config.supervised \
            else torch.full_like(positions, UNLABELED)
        if compiler_graphs:  # the previous step's graph outputs have been read: the next replay may overwrite them
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            out = stepper(x, y, kl_weight=kl_weight, ce_weight=config.ce_weight, class_weights=class_weights,
                          cell_mask=cells if fixed_shape else None)
        if averaged is None:
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
        else:
            averaged.zero()
            out["loss"].backward()
            averaged.average()
        torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        labelled = y >= 0
        sums.add_(torch.stack([*(out[t].detach().float() * cells.sum() for t in TERMS),
                               ((out["logits_y"].argmax(-1) == y) & labelled).sum().float(),
                               labelled.sum().float()]))

    if whole_step_graph:
        graphed = _GraphedStep(lambda positions, rows, kl_weight: step(positions, batches.gather(rows), kl_weight))

        def run_step(positions, rows, kl_weight):  # a new entry bound is a new shape of every gathered batch
            graphed(batches.entry_bound, positions, rows, kl_weight)
    else:
        run_step = step
    for epoch in range(len(history), config.epochs):
        start = time.perf_counter()
        torch.manual_seed(_epoch_seed(seed, epoch, rank))
        sums.zero_()
        kl_weights = _kl_weights(epoch, n_batches, config.kl_warmup_epochs, device)
        for i, (positions, x) in enumerate(batches.batches(n_batches, seed=_epoch_seed(seed, epoch, rank),
                                                           fixed_shape=fixed_shape, counts=not whole_step_graph,
                                                           agree=agree)):
            run_step(positions, x, kl_weights[i])
        if validation is not None:
            val_batches, val_labels = validation
            predicted = predict(module, val_batches, config.batch_size)[0].argmax(-1)
            known = val_labels >= 0
            totals = torch.cat([sums, torch.stack([((predicted == val_labels) & known).sum().float(),
                                                   known.sum().float()])])
            module.train()
        else:
            totals = sums
        totals = _reduce(totals).tolist() if distributed else totals.tolist()  # the one host sync of the epoch
        seconds = time.perf_counter() - start
        metrics = {t: totals[i] / n_cells for i, t in enumerate(TERMS)}
        n_terms = len(TERMS)
        metrics.update(epoch=epoch + 1, acc=_ratio(totals[n_terms], totals[n_terms + 1]),
                       cells_per_s=n_cells / seconds, seconds=seconds)
        if validation is not None:
            metrics["val_acc"] = _ratio(totals[n_terms + 2], totals[n_terms + 3])
        history.append(metrics)
        if log is not None and rank == 0:
            log(epoch_line(metrics, config.epochs))
        if not config.supervised and epoch + 1 == config.prior_fit_epoch:
            fit_prior(module, batches, optimizer, batch_size=config.batch_size, seed=seed, log=log)
        if on_epoch is not None:
            on_epoch(history)
    module.eval()
    return history


def _fixed_shape_steps(config: TrainConfig, distributed: bool) -> bool:
    """Whether compiled steps take fixed-shape batches, so that they compile once: in one process (under DDP they
    compile for varying shapes)."""
    return config.compile and config.cuda_graphs and not distributed


class _AveragedGradients:
    """Data parallelism without DDP's per-bucket hooks: every gradient is a view into one flat buffer, which one
    all-reduce per step averages over the ranks after the backward pass (a step's only collective, so that a recorded
    step can hold it). Made once per training, after which the module's parameters must not be replaced; rank 0's
    weights are broadcast on construction, so every rank starts from the same model."""

    def __init__(self, module: torch.nn.Module):
        parameters = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            for tensor in (*module.parameters(), *module.buffers()):
                dist.broadcast(tensor, 0)
        self.flat = torch.zeros(sum(p.numel() for p in parameters), dtype=parameters[0].dtype,
                                device=parameters[0].device)
        offset = 0
        for p in parameters:  # backward adds into an existing .grad in place: into the buffer
            p.grad = self.flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.world_size = dist.get_world_size()

    def zero(self) -> None:
        self.flat.zero_()

    def average(self) -> None:
        dist.all_reduce(self.flat)
        self.flat.div_(self.world_size)


class _GraphedStep:
    """``step(*inputs)`` recorded once as a CUDA graph and replayed: one launch per training step, where launching
    the step's few hundred kernels (batch gathering, forward, backward, clipping, AdamW, metric sums) one by one
    left the GPU waiting for the host.

    Inputs are copied into static tensors that the graph reads. For each new ``key`` and input shapes, the first
    ``WARMUP`` calls run eagerly on a side stream (compilation, AdamW's lazily made state and cuBLAS's workspaces are
    made there, outside any recording); the next records the graph, then replays it. The step must leave every
    output in tensors it updates in place, and AdamW must be ``capturable``.
    """

    WARMUP = 3

    def __init__(self, step: Callable[..., None]):
        self.step, self.graph, self.signature, self.inputs, self.warm = step, None, None, [], 0

    def __call__(self, key, *inputs: torch.Tensor) -> None:
        signature = (key, *(t.shape for t in inputs))
        if signature != self.signature:
            self.signature, self.graph, self.warm = signature, None, 0
            self.inputs = [torch.empty_like(t) for t in inputs]
        for static, value in zip(self.inputs, inputs):
            static.copy_(value, non_blocking=True)
        if self.graph is None and self.warm == self.WARMUP:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step(*self.inputs)
        if self.graph is not None:
            self.graph.replay()
            return
        current, side = torch.cuda.current_stream(), torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            self.step(*self.inputs)
        current.wait_stream(side)
        self.warm += 1


def _kl_weights(epoch: int, n_batches: int, warmup_epochs: float, device) -> torch.Tensor:
    """The KL weight of each step of an epoch (linear warm-up to 1), as one device tensor: a compiled step takes
    it as data, where a Python float would be a new constant every step."""
    progress = epoch + torch.arange(n_batches, device=device, dtype=torch.float32) / n_batches
    return (progress / warmup_epochs).clamp(max=1.0) if warmup_epochs > 0 else torch.ones_like(progress)


def _class_weights(labels: torch.Tensor, n_components: int, distributed: bool) -> torch.Tensor:
    """n / (types present × n_k) for each component k seen in training (1 for unseen ones): the mean weight per
    labelled cell is 1, so ``ce_weight`` keeps its scale."""
    counts = torch.bincount(labels[labels >= 0], minlength=n_components).float()
    if distributed:
        counts = _reduce(counts)
    present = counts > 0
    weights = torch.ones(n_components, device=labels.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def make_optimizer(module: GMVAEModule, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; on CUDA the fused kernel (one launch for all parameters instead of a few per tensor), capturable (its
    step count on the device) so that a CUDA graph can record it."""
    cuda = module.prior.mean.is_cuda
    return torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=cuda,
                             capturable=cuda)


@torch.no_grad()
def fit_prior(module: GMVAEModule, batches: CSRBatches, optimizer: torch.optim.Optimizer, *, batch_size: int,
              seed: int = 0, log: Callable[[str], None] | None = None) -> None:
    """Unsupervised mode: place the K components where the cells are; training then goes on from there.

    A Gaussian mixture is fitted by EM to the latent means of every training cell (all ranks' cells under DDP);
    each component's variance is its spread of means plus the mean posterior variance, so that it covers the
    cells' q(z|x) and not their means alone. The q(y|x) head restarts, with fresh Adam moments (its old calls all
    pointed at one component). The prior keeps learning: held fixed after the fit, it recovered the embedded
    cohort's cell types less well.
    """
    distributed = dist.is_available() and dist.is_initialized()
    _, points, log_variances = predict(module, batches, batch_size)
    module.train()
    posterior_variance = log_variances.exp().sum(0)
    if distributed:
        points = _gather_rows(points, dist.get_world_size())
        posterior_variance = _reduce(posterior_variance)
    if not distributed or dist.get_rank() == 0:  # one rank fits; the others receive its prior and head
        mixture = fit_gaussian_mixture(points, module.prior.n_components, seed=seed)
        module.prior.mean.copy_(mixture.means)
        module.prior.log_var.copy_((mixture.variances + posterior_variance / len(points)).log())
        module.prior.logits.copy_(mixture.weights.log())
        module.head_y.reset_parameters()
        if log is not None:
            log(f"Prior fitted to the latent means of {len(points):,} cells (EM, {len(mixture.weights)} components, "
                f"weights {', '.join(f'{w:.3f}' for w in mixture.weights.tolist())}); q(y|x) head restarted.")
    if distributed:
        for parameter in (*module.prior.parameters(), *module.head_y.parameters()):
            dist.broadcast(parameter, 0)
    for parameter in module.head_y.parameters():  # fresh moments, in place: a recorded step keeps its tensors
        for value in optimizer.state.get(parameter, {}).values():
            value.zero_()


@torch.no_grad()
def predict(module: GMVAEModule, batches: CSRBatches,
            batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q(y|x) logits, E[z|x], log Var[z|x])`` for every row of ``batches``, in row order (module left in eval
    mode)."""
    module.eval()
    n_components, latent_dim = module.prior.mean.shape
    outputs = [[torch.empty(0, n, device=batches.device)] for n in (n_components, latent_dim, latent_dim)]
    with torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=batches.device.type == "cuda"):
        for _, x in batches.batches(math.ceil(batches.n_rows / batch_size)):
            for parts, values in zip(outputs, module.encode(x)):
                parts.append(values.float())
    return tuple(torch.cat(parts) for parts in outputs)


def embed(module: GMVAEModule, batches: CSRBatches, components: torch.Tensor, batch_size: int) -> dict:
    """Per row: ``z_mean``, ``proba`` (q(y|x)) and ``zscore``, the latter for the annotated component where known
    (``components`` ≥ 0) and for the called one elsewhere."""
    logits, z_mean, _ = predict(module, batches, batch_size)
    called = logits.argmax(-1)
    component = torch.where(components.to(called.device) >= 0, components.to(called.device), called)
    return {"z_mean": z_mean, "proba": F.softmax(logits, -1), "zscore": module.zscore(z_mean, component)}


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    labelled = labels >= 0
    return float((predicted[labelled] == labels[labelled]).float().mean()) if labelled.any() else float("nan")


def epoch_line(metrics: dict, n_epochs: int) -> str:
    width = len(str(n_epochs))
    parts = [f"{t}={metrics[t]:.4g}" for t in TERMS] + [f"acc={metrics['acc']:.4f}"]
    if "val_acc" in metrics:
        parts.append(f"val_acc={metrics['val_acc']:.4f}")
    parts.append(f"cells/s={metrics['cells_per_s']:,.0f}")
    return f"Epoch {metrics['epoch']:>{width}}/{n_epochs}: " + ", ".join(parts)


def write_settings(output_dir: str | os.PathLike, module_config: ModuleConfig, train_config: TrainConfig, *,
                   seed: int = 0) -> Path:
    """``OUTPUT_DIR/settings.json``, what the entry reads."""
    path = Path(output_dir) / SETTINGS
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"module": dataclasses.asdict(module_config),
                                   "train": dataclasses.asdict(train_config), "seed": seed}, indent=2) + "\n")
    return path


def read_settings(output_dir: str | os.PathLike) -> tuple[ModuleConfig, TrainConfig, int]:
    path = Path(output_dir) / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: write it with gmvae4p.gmvae.train.write_settings "
                                "(GMVAE.fit does) before starting the entry.")
    raw = json.loads(path.read_text())
    return ModuleConfig(**raw["module"]), TrainConfig(**raw["train"]), raw["seed"]


def run(trainset: str | os.PathLike, output_dir: str | os.PathLike, *, resume: bool = False,
        device: str | None = None, log: Callable[[str], None] | None = print) -> list[dict]:
    """Train from a training-set file into ``output_dir`` (see the module docstring); return the history.

    Runs as one process, or as one rank of a torchrun job (``WORLD_SIZE`` set): then the process group is set up
    here (nccl on CUDA, gloo on CPU) and torn down after a successful run.
    """
    output_dir = Path(output_dir)
    log = log or (lambda line: None)
    module_config, config, seed = read_settings(output_dir)
    rank, world_size, device = _init_distributed(device)
    if rank == 0:  # results of an earlier run must not pass for this one's if it fails
        for stale in (MODEL, EMBEDDING):
            (output_dir / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    shard = read_shard(trainset, rank, world_size, counts=False)
    torch.manual_seed(seed)  # same initial weights on every rank
    module = build_module(len(shard.genes), len(shard.component_names), module_config, config.backend)
    module.to(device)
    optimizer = make_optimizer(module, config)
    history = []
    if resume:
        history = _load_checkpoint(output_dir / CHECKPOINT, module, optimizer, module_config, config, device)
    components = torch.from_numpy(shard.components).to(device)
    held_out = shard.validation
    train_rows, val_rows = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    # read straight into the device (or pinned) arrays: no host copy of the shard beside them
    counts = CSRBatches.from_trainset(trainset, shard.start, shard.stop, device=device,
                                      placement=config.placement)
    train_batches = counts.select(train_rows)
    validation = None
    # every rank must agree, or the ranks' all-reduces would differ in size
    if _any_rank(len(val_rows) > 0, device) and config.supervised:
        validation = (counts.select(val_rows), components[torch.from_numpy(val_rows).to(device)])
    if rank == 0:
        log(f"GMVAE ({module_config.likelihood}, {'supervised' if config.supervised else 'unsupervised'}): "
            f"{shard.n_cells:,} cells × {len(shard.genes):,} genes, {len(shard.component_names)} components; "
            f"{world_size} process(es) × batch {config.batch_size} = effective batch "
            f"{world_size * config.batch_size}; device {device}, counts {train_batches.placement} "
            f"(read in {time.perf_counter() - start:.1f} s)"
            + (f"; resuming after epoch {len(history)}" if history else ""))

    written = time.perf_counter()

    def save_checkpoint(history):
        nonlocal written
        due = len(history) in (1, config.epochs) or time.perf_counter() - written >= CHECKPOINT_SECONDS
        if rank == 0 and due:
            save_state(output_dir / CHECKPOINT, module, module_config, config, genes=shard.genes,
                       component_names=shard.component_names, history=history, complete=False,
                       optimizer=optimizer)
            written = time.perf_counter()

    history = train(module, train_batches, components[torch.from_numpy(train_rows).to(device)], config=config,
                    validation=validation, log=log, optimizer=optimizer, history=history, on_epoch=save_checkpoint,
                    seed=seed)
    start = time.perf_counter()
    result = embed(module, counts, components, config.batch_size)
    gathered = _gather_rows(torch.cat([result[k] for k in ("z_mean", "proba", "zscore")], 1), world_size)
    ranks = _rank_resources(shard.stop - shard.start, device, world_size)
    if rank == 0:
        log(f"Embedded every cell ({time.perf_counter() - start:.1f} s). Peak memory per rank: " + "; ".join(
            f"rank {r['rank']}: {r['cells']:,} cells, GPU {r['peak_gpu_gb']:.2f} GB, "
            f"host {r['peak_host_gb']:.2f} GB" for r in ranks))
        _write_embedding(output_dir / EMBEDDING, gathered, trainset, module_config.latent_dim, shard)
        save_state(output_dir / MODEL, module, module_config, config, genes=shard.genes,
                   component_names=shard.component_names, history=history, complete=True, ranks=ranks)
        log(f"Wrote {output_dir / MODEL} and {output_dir / EMBEDDING}.")
    if world_size > 1:
        # Only after success (teardown is collective: after a failure it could hang; torchrun stops the other ranks),
        # and together: a rank leaving while rank 0 still writes can be aborted in gloo's threads.
        dist.barrier()
        dist.destroy_process_group()
    return history


def module_kwargs(config: ModuleConfig) -> dict:
    kwargs = dataclasses.asdict(config)
    kwargs["hidden_dims"] = tuple(kwargs["hidden_dims"])
    return kwargs


def build_module(n_genes: int, n_components: int, config: ModuleConfig, backend: str = "fast") -> torch.nn.Module:
    """The GMVAE module of ``backend`` (:data:`~gmvae4p.gmvae.config.BACKENDS`) for ``config``."""
    return (ReferenceGMVAE if backend == "reference" else GMVAEModule)(n_genes, n_components, **module_kwargs(config))


CALLER = "cell_type_caller"
"""Key of the cell-type call (:meth:`gmvae4p.gmvae.caller.CellTypeCaller.state`) in a saved GMVAE's ``.pt`` file:
fitted after training (``GMVAE.fit`` adds it to ``model.pt``)."""


def save_state(path: str | os.PathLike, module: GMVAEModule, module_config: ModuleConfig, config: TrainConfig, *,
               genes: list[str], component_names: list[str], history: list[dict], complete: bool,
               optimizer: torch.optim.Optimizer | None = None, ranks: list[dict] | None = None,
               caller: dict | None = None) -> None:
    """The one layout of every ``.pt`` file (checkpoint, ``model.pt``, ``GMVAE.save``), written atomically.
    ``ranks``: the entry's record of each rank (shard size, peak GPU and host memory); ``caller``: the cell-type
    call's state."""
    state = {"module": module.state_dict(), "module_config": dataclasses.asdict(module_config),
             "train_config": dataclasses.asdict(config), "history": history, "genes": genes,
             "component_names": component_names, "complete": complete}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if ranks is not None:
        state["ranks"] = ranks
    if caller is not None:
        state[CALLER] = caller
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, module, optimizer, module_config, config, device) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"--resume: there is no checkpoint at {path}; start without --resume.")
    state = torch.load(path, map_location=device, weights_only=True)
    if state["module_config"] != dataclasses.asdict(module_config):
        raise ValueError(f"--resume: {path} was trained with module settings {state['module_config']}, "
                         f"not {dataclasses.asdict(module_config)}; start without --resume.")
    module.load_weights(state["module"], f"--resume: {path}")
    optimizer.load_state_dict(state["optimizer"])
    return state["history"]


def _write_embedding(path: Path, rows: torch.Tensor, trainset, latent_dim: int, shard) -> None:
    """Rows come in stored order; ``cell_index`` puts them back in the cohort's cell order."""
    with h5py.File(trainset, "r") as f:
        cell_index = f["cell_index"][:]
    values = np.empty((len(cell_index), rows.shape[1]), dtype=np.float32)
    values[cell_index] = rows.cpu().numpy()
    n_components = len(shard.component_names)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["z_mean"] = values[:, :latent_dim]
        f["proba"] = values[:, latent_dim:latent_dim + n_components]
        f["zscore"] = values[:, latent_dim + n_components:]
        f["component_names"] = np.asarray(shard.component_names, dtype=object).astype("S")


def _init_distributed(device: str | None) -> tuple[int, int, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if world_size == 1:
        return 0, 1, torch.device(device or ("cuda" if use_cuda else "cpu"))
    # RANK and WORLD_SIZE shard the data; LOCAL_RANK only picks the GPU, so multi-node rendezvous works unchanged.
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(target)
    dist.init_process_group("nccl" if use_cuda else "gloo", device_id=target if use_cuda else None)
    return dist.get_rank(), world_size, target


def _largest_over_ranks(values: tuple[int, ...], device) -> tuple[int, ...]:
    return tuple(int(v) for v in _reduce(torch.tensor(values, device=device), dist.ReduceOp.MAX).tolist())


def _reduce(values: torch.Tensor, op=None) -> torch.Tensor:
    dist.all_reduce(values, op=op or dist.ReduceOp.SUM)
    return values


def _any_rank(flag: bool, device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    return bool(_reduce(torch.tensor([float(flag)], device=device), dist.ReduceOp.MAX)[0].item())


def _gather_rows(rows: torch.Tensor, world_size: int) -> torch.Tensor:
    """All ranks' rows in rank order (shards differ in size by at most one: pad, gather, trim)."""
    if world_size == 1:
        return rows
    sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([len(rows)], device=rows.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, rows.shape[1], dtype=rows.dtype, device=rows.device)
    padded[:len(rows)] = rows
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(size.item())] for part, size in zip(parts, sizes)])


def _rank_resources(n_cells: int, device: torch.device, world_size: int) -> list[dict]:
    """Every rank's shard size, peak GPU memory (allocated by torch; 0 on the CPU) and peak host RSS, in rank
    order: under DDP each rank should hold only its shard."""
    peak_gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    peak_host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    rows = _gather_rows(torch.tensor([[n_cells, peak_gpu, peak_host]], dtype=torch.float64, device=device),
                        world_size).tolist()
    return [{"rank": r, "cells": int(cells), "peak_gpu_gb": gpu / 2**30, "peak_host_gb": host / 2**30}
            for r, (cells, gpu, host) in enumerate(rows)]


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Shuffling and dropout of an epoch depend on (seed, epoch, rank) only, so a resumed run repeats them."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


@record  # torchrun's failure summary then carries this rank's traceback
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gmvae4p.gmvae.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("trainset", help="training-set file (gmvae4p.gmvae.trainset.write_trainset)")
    parser.add_argument("output_dir", help="folder holding settings.json; checkpoints and results go here")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    run(args.trainset, args.output_dir, resume=args.resume, device=args.device,
        log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
