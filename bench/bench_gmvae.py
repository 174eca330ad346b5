"""GMVAE training speed and memory at lupus scale (torch + numpy + scipy + h5py only, for the device image).

Synthetic counts with the lupus cohort's shape (834,096 cells × 24,205 genes, ~3.8 % non-zero, 8 types with
type-specific gene means), so the measurement does not wait for the full simulator. Per likelihood: seconds per
epoch (median over the epochs after the first), cells/s, peak GPU memory; peak host RSS of the process.

    python bench/bench_gmvae.py --out results.json [--cells 834096 --genes 24205 --epochs 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from gmvae4p.gmvae.batches import CSRBatches  # noqa: E402
from gmvae4p.gmvae.config import TrainConfig  # noqa: E402
from gmvae4p.gmvae.module import GMVAEModule  # noqa: E402
from gmvae4p.gmvae.train import train  # noqa: E402


def synthetic_counts(n_cells: int, n_genes: int, n_types: int, nnz_per_cell: int, seed: int = 0):
    """Each cell draws its non-zero genes from its type's gene distribution; values are 1 + Poisson(0.6)."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    type_genes = [rng.dirichlet(np.full(n_genes, 0.3)) for _ in range(n_types)]
    indices = np.empty(n_cells * nnz_per_cell, dtype=np.int32)
    for k in range(n_types):
        cells = np.flatnonzero(types == k)
        draws = rng.choice(n_genes, size=len(cells) * nnz_per_cell, p=type_genes[k]).astype(np.int32)
        rows = (cells[:, None] * nnz_per_cell + np.arange(nnz_per_cell)).ravel()
        indices[rows] = draws
    data = (1 + rng.poisson(0.6, size=indices.size)).astype(np.float32)
    indptr = np.arange(0, indices.size + 1, nnz_per_cell, dtype=np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes)), types


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=834_096)
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--density", type=float, default=0.038)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--likelihoods", default="mse,nb,zinb")
    parser.add_argument("--placements", default="resident")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    counts, types = synthetic_counts(args.cells, args.genes, 8, int(args.density * args.genes))
    results = {"cells": args.cells, "genes": args.genes, "nnz": int(counts.nnz), "batch_size": args.batch_size,
               "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "data_seconds": round(time.perf_counter() - start, 1), "runs": []}
    labels = torch.from_numpy(types).to(device)
    for placement in args.placements.split(","):
        batches = CSRBatches(counts, device=device, placement=placement)
        for likelihood in args.likelihoods.split(","):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            torch.manual_seed(0)
            module = GMVAEModule(args.genes, 8, likelihood=likelihood)
            history = train(module, batches, labels, config=TrainConfig(epochs=args.epochs,
                            batch_size=args.batch_size, lr=2e-3), log=lambda line: print(line, flush=True))
            seconds = [h["seconds"] for h in history[1:]]
            run = {"placement": batches.placement, "likelihood": likelihood,
                   "seconds_per_epoch_median": round(statistics.median(seconds), 3),
                   "seconds_per_epoch": [round(s, 3) for s in seconds],
                   "first_epoch_seconds": round(history[0]["seconds"], 3),
                   "cells_per_s": round(args.cells / statistics.median(seconds)),
                   "train_acc_last_epoch": round(history[-1]["acc"], 4),
                   "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda"
                   else None}
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
            del module
        del batches
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["peak_host_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
