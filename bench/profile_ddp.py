"""Where a DDP training step's time goes: one profiled epoch of the GMVAE per rank (torch + numpy + scipy + h5py only).

Each rank makes its own synthetic counts (``--cells`` per rank, the lupus shape's genes and density; seed = rank, as
``bench_gmvae.synthetic_counts``), trains one warm-up epoch and one profiled epoch (zinb, batch 4096 per rank, not
compiled: DDP keeps the dynamic-shape path), and rank 0 writes the profiler's table and timeline. Run it alone and
under torchrun to compare one GPU with N:

    python bench/profile_ddp.py --out DIR
    torchrun --standalone --nproc_per_node=2 bench/profile_ddp.py --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from bench_gmvae import N_TYPES, synthetic_counts  # noqa: E402
from gmvae4p.gmvae.batches import CSRBatches  # noqa: E402
from gmvae4p.gmvae.config import TrainConfig  # noqa: E402
from gmvae4p.gmvae.module import GMVAEModule  # noqa: E402
from gmvae4p.gmvae.train import _init_distributed, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="folder for profile_world{N}.txt and trace_world{N}.json")
    parser.add_argument("--cells", type=int, default=200_000, help="cells per rank")
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    rank, world, device = _init_distributed(None)
    counts, types = synthetic_counts(args.cells, args.genes, N_TYPES, 1000, device, seed=rank)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    batches = CSRBatches(counts, device=device, placement="resident")
    labels = torch.from_numpy(types).to(device)
    torch.manual_seed(0)
    module = GMVAEModule(args.genes, N_TYPES, likelihood="zinb")
    config = TrainConfig(epochs=1, batch_size=args.batch_size, lr=2e-3, compile=False)
    train(module, batches, labels, config=config, log=None)  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        history = train(module, batches, labels, config=config, log=None)
    if rank == 0:
        steps = -(-args.cells // args.batch_size)
        print(f"WORLD {world}: epoch {history[-1]['seconds']:.3f} s for {args.cells} cells/rank, "
              f"{history[-1]['seconds'] / steps * 1000:.2f} ms/step (profiled)")
        table = profiler.key_averages().table(sort_by="cuda_time_total" if device.type == "cuda" else
                                              "cpu_time_total", row_limit=25, max_name_column_width=70)
        print(table)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"profile_world{world}.txt").write_text(table)
        profiler.export_chrome_trace(str(out / f"trace_world{world}.json"))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
