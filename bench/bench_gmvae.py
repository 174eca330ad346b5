"""GMVAE training speed and memory at lupus scale (torch + numpy + scipy + h5py only, for the device image).

Synthetic counts with the lupus cohort's shape (834,096 cells × 24,205 genes, ~3.8 % non-zero, 8 types with
type-specific gene means), so the measurement does not wait for the full simulator. Per likelihood and
``--compile`` setting (off: every kernel launched eagerly; graphs: the eager step replayed as a CUDA graph; dynamic:
compiled for varying shapes; on: compiled and replayed as a CUDA graph): seconds per epoch (median over the epochs
after the first), cells/s, peak GPU memory; peak host RSS of the process. Optionally, in the same process, the seed-style reference path (dense host matrix,
DataLoader, the seed's plain VAE) for a side-by-side ratio, and a kernel profile.

``--entry``: instead, write the counts as a training-set file and train through the production entry
(``python -m gmvae4p.gmvae.train``) in a fresh process per likelihood, so that its peak host RSS is the training's own
(reading the file included, making the data excluded); seconds per epoch come from the history in its ``model.pt``.

    python bench/bench_gmvae.py --out results.json [--epochs 4 --reference-steps 40 --profile zinb]
    python bench/bench_gmvae.py --out results.json --entry --likelihoods zinb --compile off
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from gmvae4p.gmvae import kernels  # noqa: E402
from gmvae4p.gmvae.batches import CSRBatches  # noqa: E402
from gmvae4p.gmvae.config import ModuleConfig, TrainConfig  # noqa: E402
from gmvae4p.gmvae.module import GMVAEModule  # noqa: E402
from gmvae4p.gmvae.train import MODEL, train, write_settings  # noqa: E402
from gmvae4p.gmvae.trainset import write_trainset  # noqa: E402

# Runs a command and prints the largest peak RSS (kB) among its waited-for descendants: a fresh process per
# measurement, so that earlier runs do not count.
N_TYPES = 8  # cell types of the synthetic cohort, as in the issue's benchmark
TRITON = kernels.AVAILABLE
COMPILE_SETTINGS = {"off": {"compile": False, "cuda_graphs": False}, "graphs": {"compile": False, "cuda_graphs": True},
                    "dynamic": {"compile": True, "cuda_graphs": False}, "on": {"compile": True, "cuda_graphs": True}}
"""``--compile`` values as TrainConfig fields: ``off`` runs every kernel eagerly, ``graphs`` replays the eager step
as a CUDA graph, ``dynamic`` compiles for varying shapes, ``on`` compiles and replays the graph."""

PEAK_RSS_OF = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
               "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True); "
               "sys.exit(code)")


def synthetic_counts(n_cells: int, n_genes: int, n_types: int, draws_per_cell: int, device: torch.device,
                     seed: int = 0, chunk_cells: int = 100_000):
    """Each cell draws ``draws_per_cell`` genes from its type's gene distribution, each draw adding 1 + Poisson(0.6)
    to that gene's count (a gene drawn twice is one entry: about 8 % of draws at 1,000 of 24,205 genes). Drawn with
    torch on ``device`` (the GPU makes the lupus shape in seconds), chunk by chunk of cells; returned as host CSR."""
    generator = torch.Generator(device).manual_seed(seed)
    types = torch.randint(0, n_types, (n_cells,), generator=generator, device=device)
    # numpy's generator: torch's Dirichlet draws from the global generator, which made each run's data differ
    gene_weights = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(n_genes, 0.3), n_types))
    gene_weights = gene_weights.float().to(device)
    lengths, indices, data = [], [], []
    for first in range(0, n_cells, chunk_cells):
        chunk_types = types[first:first + chunk_cells]
        genes = torch.empty(len(chunk_types), draws_per_cell, dtype=torch.int64, device=device)
        for k in range(n_types):
            cells = torch.nonzero(chunk_types == k).squeeze(1)
            genes[cells] = torch.multinomial(gene_weights[k], len(cells) * draws_per_cell, replacement=True,
                                             generator=generator).view(len(cells), draws_per_cell)
        keys = (torch.arange(len(chunk_types), device=device)[:, None] * n_genes + genes).view(-1)
        values = 1 + torch.poisson(torch.full(keys.shape, 0.6, device=device), generator=generator)
        keys, order = torch.sort(keys)
        entries, entry_of_draw = torch.unique_consecutive(keys, return_inverse=True)
        summed = torch.zeros(len(entries), device=device).index_add_(0, entry_of_draw, values[order])
        lengths.append(torch.bincount(entries // n_genes, minlength=len(chunk_types)).cpu().numpy())
        indices.append((entries % n_genes).int().cpu().numpy())
        data.append(summed.cpu().numpy())
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
    return (sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n_cells, n_genes)),
            types.cpu().numpy())


class SeedVAE(nn.Module):
    """The seed's "fast" model, for the reference path: encoder G→512→256→z with BatchNorm and Dropout, decoder
    mirrored, a separate G→512→256→K classifier; MSE on log1p + 0.1·KL to the true type's learned prior + CE."""

    def __init__(self, n_genes: int, n_types: int, latent_dim: int = 64):
        super().__init__()

        def mlp(sizes):
            layers = []
            for n_in, n_out in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU(), nn.Dropout(0.1)]
            return nn.Sequential(*layers)

        self.encoder, self.head_z = mlp([n_genes, 512, 256]), nn.Linear(256, 2 * latent_dim)
        self.decoder, self.head_x = mlp([latent_dim, 256, 512]), nn.Linear(512, n_genes)
        self.classifier = nn.Sequential(mlp([n_genes, 512, 256]), nn.Linear(256, n_types))
        self.prior_mean = nn.Parameter(torch.randn(n_types, latent_dim))
        self.prior_log_var = nn.Parameter(torch.zeros(n_types, latent_dim))

    def forward(self, x, y):
        mean, log_var = self.head_z(self.encoder(x)).chunk(2, -1)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        recon = ((self.head_x(self.decoder(z)) - x) ** 2).sum(-1)
        prior_mean, prior_log_var = self.prior_mean[y], self.prior_log_var[y]
        kl = 0.5 * (prior_log_var - log_var + (log_var.exp() + (mean - prior_mean) ** 2) / prior_log_var.exp()
                    - 1).sum(-1)
        ce = F.cross_entropy(self.classifier(x), y, reduction="none")
        return (recon + 0.1 * kl + ce).mean()


def reference_path(counts: sp.csr_matrix, types: np.ndarray, device: torch.device, *, batch_size: int,
                   steps: int, warmup: int = 10) -> dict:
    """The seed's data path and model, as it ran: a dense float32 host matrix of log1p-normalized counts,
    TensorDataset + DataLoader(4 workers, pinned), fp32. Times ``steps`` steps after ``warmup`` and scales the
    median step to an epoch. Uses as many rows as fit in 60 % of available host memory (a step's cost does not
    depend on how many rows the matrix has)."""
    available = _available_host_bytes()
    n_rows = min(counts.shape[0], int(0.6 * available / (counts.shape[1] * 4)))
    start = time.perf_counter()
    dense = np.empty((n_rows, counts.shape[1]), dtype=np.float32)
    for first in range(0, n_rows, 50_000):
        part = counts[first:min(n_rows, first + 50_000)]
        part = sp.diags(1e4 / np.maximum(part.sum(1).A1, 1)) @ part
        part.data = np.log1p(part.data)
        dense[first:first + part.shape[0]] = part.toarray()
    dense_seconds = time.perf_counter() - start
    loader = DataLoader(TensorDataset(torch.from_numpy(dense), torch.from_numpy(types[:n_rows]).long()),
                        batch_size=batch_size, shuffle=True, num_workers=4, pin_memory=device.type == "cuda",
                        drop_last=True)
    torch.manual_seed(0)
    model = SeedVAE(counts.shape[1], int(types.max()) + 1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times, last = [], None
    for step, (x, y) in enumerate(loader):
        loss = model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if step >= warmup:
            times.append(now - last)
        last = now
        if len(times) == steps:
            break
    step_seconds = statistics.median(times)
    n_batches = -(-counts.shape[0] // batch_size)
    return {"rows_in_dense_matrix": n_rows, "dense_gb": round(dense.nbytes / 2**30, 1),
            "dense_build_seconds": round(dense_seconds, 1), "steps_timed": len(times),
            "step_seconds_median": round(step_seconds, 4),
            "seconds_per_epoch_from_median_step": round(step_seconds * n_batches, 3)}


def _available_host_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def profile_steps(counts: sp.csr_matrix, labels: torch.Tensor, device: torch.device, likelihood: str, *,
                  batch_size: int, compile_setting: str, rows: int = 100_000, trace: str = "") -> str:
    """The CUDA kernels of one epoch over the first ``rows`` cells, by total device time; ``trace``: also write the
    profiler's timeline there (Chrome trace format, to see where the host and the device wait for each other)."""
    batches = CSRBatches(counts[:rows], device=device, placement="resident")
    module = GMVAEModule(counts.shape[1], N_TYPES, likelihood=likelihood)
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=2e-3, **COMPILE_SETTINGS[compile_setting])
    train(module, batches, labels[:rows], config=config, log=None)  # warm-up (and compilation)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as profiler:
        train(module, batches, labels[:rows], config=config, log=None)
    if trace:
        profiler.export_chrome_trace(trace)
    return profiler.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=160)


def entry_runs(counts: sp.csr_matrix, types: np.ndarray, args, results: dict, save) -> list[dict]:
    """Each placement × likelihood × compile setting × process count through ``python -m gmvae4p.gmvae.train`` in
    fresh processes; with its per-rank record (shard, peak GPU and host memory) from ``model.pt``."""
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        trainset = Path(folder) / "trainset.h5"
        write_trainset(trainset, counts, types, component_names=[f"type{k}" for k in range(N_TYPES)],
                       genes=[f"g{j}" for j in range(counts.shape[1])], validation=np.zeros(len(types), bool))
        lib = str(Path(__file__).resolve().parents[1] / "lib")
        for placement, likelihood, setting, nproc in itertools.product(
                args.placements.split(","), args.likelihoods.split(","), args.compile.split(","),
                [int(n) for n in args.nproc.split(",")]):
            output = Path(folder) / f"{placement}_{likelihood}_{setting}_{nproc}"
            output.mkdir()
            write_settings(output, ModuleConfig(likelihood=likelihood),
                           TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-3,
                                       placement=placement, **COMPILE_SETTINGS[setting]))
            start = time.perf_counter()
            # one process through the entry, or N ranks of DDP under torchrun (one GPU each)
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
                if nproc > 1 else []
            done = subprocess.run([sys.executable, "-c", PEAK_RSS_OF, sys.executable, *launcher, "-m",
                                   "gmvae4p.gmvae.train", str(trainset), str(output)],
                                  env={**os.environ, "PYTHONPATH": lib},
                                  capture_output=True, text=True)
            wall = time.perf_counter() - start
            print(done.stdout, done.stderr[-3000:], flush=True)
            # the entry's own per-epoch record, not its rounded log lines
            state = torch.load(output / MODEL, weights_only=True) if (output / MODEL).is_file() else {}
            history = state.get("history", [])
            seconds = [h["seconds"] for h in history[1:]]
            peak_kb = re.search(r"peak_rss_kb (\d+)", done.stdout)
            run = {"path": "entry (python -m gmvae4p.gmvae.train)", "processes": nproc,
                   "placement": placement, "likelihood": likelihood, "compile": setting,
                   "returncode": done.returncode,
                   "seconds_per_epoch_median": round(statistics.median(seconds), 3) if seconds else None,
                   "cells_per_s": round(args.cells / statistics.median(seconds)) if seconds else None,
                   "seconds_per_epoch": [round(x, 3) for x in seconds],
                   "first_epoch_seconds": round(history[0]["seconds"], 3) if history else None,
                   "process_wall_seconds": round(wall, 1),
                   "peak_host_rss_gb": round(int(peak_kb.group(1)) / 2**20, 2) if peak_kb else None,
                   "ranks": state.get("ranks")}
            print(json.dumps(run), flush=True)
            runs.append(run)
            save({**results, "runs": runs})  # a run cut short by a time limit keeps what it measured
    return runs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=834_096)
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--draws-per-cell", type=int, default=1000,
                        help="gene draws per cell (1,000 of 24,205 genes give ~919 distinct: 3.8 %% non-zero)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--likelihoods", default="mse,nb,zinb")
    parser.add_argument("--placements", default="resident")
    parser.add_argument("--compile", default="off,on", help=f"compile settings to run: {', '.join(COMPILE_SETTINGS)}")
    parser.add_argument("--kernels", default="on", help="on, off or both: the Triton kernels of the nb/zinb likelihood "
                        "(off: the torch code, as on the CPU)")
    parser.add_argument("--reference-steps", type=int, default=0, help="time the seed-style path (0: skip)")
    parser.add_argument("--profile", default="", help="likelihood to profile (each --compile setting), or empty")
    parser.add_argument("--trace", default="", help="with --profile: timeline file, '{compile}' filled with the "
                        "compile setting")
    parser.add_argument("--entry", action="store_true", help="train through the entry in fresh processes")
    parser.add_argument("--nproc", default="1", help="with --entry: process counts to run, e.g. 1,2 (more than one: "
                        "DDP ranks under torchrun, one GPU each, per-rank batch --batch-size)")
    args = parser.parse_args()
    for option, allowed in (("compile", COMPILE_SETTINGS), ("kernels", ("on", "off"))):
        unknown = set(getattr(args, option).split(",")) - set(allowed)
        if unknown:
            parser.error(f"--{option}: {', '.join(sorted(unknown))} is not one of {', '.join(allowed)}")

    def save(results):
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    counts, types = synthetic_counts(args.cells, args.genes, N_TYPES, args.draws_per_cell, device)
    if device.type == "cuda":  # the generator's cached blocks would stay on GPU 0 while the entry's processes run
        torch.cuda.empty_cache()
    results = {"cells": args.cells, "genes": args.genes, "nnz": int(counts.nnz), "batch_size": args.batch_size,
               "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "gpus": torch.cuda.device_count(),
               "torch": torch.__version__, "data_seconds": round(time.perf_counter() - start, 1), "runs": []}
    print(json.dumps(results), flush=True)
    if args.entry:
        results["runs"] = entry_runs(counts, types, args, results, save)
        save(results)
        return
    labels = torch.from_numpy(types).to(device)
    for placement in args.placements.split(","):
        batches = CSRBatches(counts, device=device, placement=placement)
        for likelihood, use_kernels, setting in itertools.product(
                args.likelihoods.split(","), args.kernels.split(","), args.compile.split(",")):
            kernels.AVAILABLE = TRITON and use_kernels == "on"  # read at every call of the likelihood
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            torch.manual_seed(0)
            module = GMVAEModule(args.genes, N_TYPES, likelihood=likelihood)
            config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-3,
                                 **COMPILE_SETTINGS[setting])
            history = train(module, batches, labels, config=config, log=lambda line: print(line, flush=True))
            seconds = [h["seconds"] for h in history[1:]]
            run = {"placement": batches.placement, "likelihood": likelihood, "compile": setting,
                   "triton_kernels": kernels.AVAILABLE and device.type == "cuda",
                   "seconds_per_epoch_median": round(statistics.median(seconds), 3),
                   "seconds_per_epoch": [round(s, 3) for s in seconds],
                   "first_epoch_seconds": round(history[0]["seconds"], 3),
                   "cells_per_s": round(args.cells / statistics.median(seconds)),
                   "loss_last_epoch": round(history[-1]["loss"], 2),
                   "train_acc_last_epoch": round(history[-1]["acc"], 4),
                   "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                   if device.type == "cuda" else None}
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
            save(results)  # a run cut short by a time limit keeps what it measured
            del module
        del batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["peak_host_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if args.profile:
        for setting in args.compile.split(","):
            results[f"profile_{args.profile}_compile_{setting}"] = profile_steps(
                counts, labels, device, args.profile, batch_size=args.batch_size, compile_setting=setting,
                trace=args.trace.format(compile=setting) if args.trace else "")
            print(results[f"profile_{args.profile}_compile_{setting}"], flush=True)
    if args.reference_steps:
        results["reference"] = reference_path(counts, types, device, batch_size=args.batch_size,
                                              steps=args.reference_steps)
        print(json.dumps(results["reference"]), flush=True)
    save(results)


if __name__ == "__main__":
    main()
