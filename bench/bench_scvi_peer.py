"""The GMVAE beside its peer, scvi-tools' ``SCVI``, on the same synthetic matrix in one process (issue 27).

The matrix is :func:`bench_gmvae.synthetic_counts` at the lupus cohort's shape by default (834,096 cells × 24,205
genes); both train on every cell with the same batch size. The GMVAE: the production training loop with its fastest
setting (the whole step compiled and replayed as a CUDA graph, the matrix resident on the GPU), per likelihood.
``SCVI`` (nb): its default sizes (128 hidden, 1 layer, 10 latent) and sizes matched to the GMVAE's (512 hidden, 2
layers, 32 latent), each with sparse loading (``load_sparse_tensor=True``) and with its default data loading; no
validation split, no early stopping, no logger or checkpoints, fp32 as it ships (``--scvi-bf16`` also runs the matched
sparse configuration under bf16 mixed precision, as the GMVAE trains). Seconds per epoch are medians over the epochs
after the first; the JSON is rewritten after every run so that a run cut short keeps what it measured.

    python bench/bench_scvi_peer.py --out results.json [--cells 208524 --scvi-epochs 3]

Needs a GPU, torch and scvi-tools 1.5.1 (Python ≥ 3.12; the wheels the device image lacks travel in ``.whl/``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from bench_gmvae import COMPILE_SETTINGS, N_TYPES, synthetic_counts  # noqa: E402
from gmvae4p.gmvae.batches import CSRBatches  # noqa: E402
from gmvae4p.gmvae.config import TrainConfig  # noqa: E402
from gmvae4p.gmvae.module import GMVAEModule  # noqa: E402
from gmvae4p.gmvae.train import train  # noqa: E402

SCVI_SIZES = {"default": {}, "matched": {"n_hidden": 512, "n_layers": 2, "n_latent": 32}}


def gmvae_runs(counts, types, args) -> list[dict]:
    device = torch.device("cuda")
    batches = CSRBatches(counts, device=device, placement="resident")
    labels = torch.from_numpy(types).to(device)
    runs = []
    for likelihood in args.likelihoods.split(","):
        torch.manual_seed(0)
        module = GMVAEModule(counts.shape[1], N_TYPES, likelihood=likelihood)
        config = TrainConfig(epochs=args.gmvae_epochs, batch_size=args.batch_size, lr=2e-3, **COMPILE_SETTINGS["on"])
        history = train(module, batches, labels, config=config, log=None)
        seconds = [h["seconds"] for h in history[1:]]
        runs.append({"model": f"GMVAE {likelihood}", "seconds_per_epoch_median": round(statistics.median(seconds), 3),
                     "seconds_per_epoch": [round(s, 3) for s in seconds],
                     "first_epoch_seconds": round(history[0]["seconds"], 3)})
        print(json.dumps(runs[-1]), flush=True)
        del module
    del batches, labels
    torch.cuda.empty_cache()
    return runs


def scvi_run(adata, sizes: str, sparse: bool, epochs: int, batch_size: int, precision: str) -> dict:
    import lightning.pytorch as pl
    import scvi

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.seconds, self.start = [], 0.0

        def on_train_epoch_start(self, trainer, module):
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    scvi.settings.seed = 0
    model = scvi.model.SCVI(adata, **SCVI_SIZES[sizes])
    model.train(max_epochs=epochs, accelerator="gpu", devices=1, train_size=1.0, batch_size=batch_size,
                load_sparse_tensor=sparse, early_stopping=False, enable_progress_bar=False, logger=False,
                enable_checkpointing=False, callbacks=[timer], precision=precision)
    seconds = timer.seconds[1:]
    return {"model": f"SCVI nb, {sizes} sizes, {'sparse' if sparse else 'default'} loading, {precision}",
            "sizes": SCVI_SIZES[sizes] or "scvi-tools defaults", "load_sparse_tensor": sparse,
            "precision": precision, "seconds_per_epoch_median": round(statistics.median(seconds), 3),
            "seconds_per_epoch": [round(s, 3) for s in seconds], "first_epoch_seconds": round(timer.seconds[0], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=834_096)
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--draws-per-cell", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--likelihoods", default="nb,zinb")
    parser.add_argument("--gmvae-epochs", type=int, default=4)
    parser.add_argument("--scvi-epochs", type=int, default=3)
    parser.add_argument("--scvi-bf16", action="store_true")
    args = parser.parse_args()
    import anndata as ad
    import scvi

    start = time.perf_counter()
    counts, types = synthetic_counts(args.cells, args.genes, N_TYPES, args.draws_per_cell, torch.device("cuda"))
    torch.cuda.empty_cache()
    results = {"cells": args.cells, "genes": args.genes, "nnz": int(counts.nnz), "batch_size": args.batch_size,
               "device": torch.cuda.get_device_name(), "torch": torch.__version__, "scvi_tools": scvi.__version__,
               "data_seconds": round(time.perf_counter() - start, 1), "runs": []}

    def save():
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    results["runs"] += gmvae_runs(counts, types, args)
    save()
    adata = ad.AnnData(counts)
    scvi.model.SCVI.setup_anndata(adata)
    configurations = [("default", True, "32-true"), ("matched", True, "32-true"), ("default", False, "32-true"),
                      ("matched", False, "32-true")]
    if args.scvi_bf16:
        configurations.insert(2, ("matched", True, "bf16-mixed"))
    for sizes, sparse, precision in configurations:
        results["runs"].append(scvi_run(adata, sizes, sparse, args.scvi_epochs, args.batch_size, precision))
        print(json.dumps(results["runs"][-1]), flush=True)
        save()


if __name__ == "__main__":
    main()
