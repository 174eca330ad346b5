"""The likelihood's Triton kernels alone, at the lupus benchmark's batch shape (torch + numpy + triton only).

One batch like those of ``bench_gmvae.py`` (4,096 cells, 24,205 genes padded to the module's width, ~3.8 % non-zero,
counts from a geometric law), padded as a fixed-shape batch is (a last, "sink" row holding value-0 entries, 5 % of
all; :mod:`gmvae4p.gmvae.batches`): each kernel's GPU time (median of repeated launches, CUDA events) for a few launch
settings, with its registers and spills per thread, so that block sizes and warps are chosen on measurements. Also
the gathering of such a batch's rows from resident counts (:func:`gmvae4p.gmvae.batches._select_rows`), by its
Triton kernel and by the torch code it replaces on CUDA.

    python bench/bench_kernels.py --out kernels.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from gmvae4p.gmvae import kernels  # noqa: E402
from gmvae4p.gmvae.batches import ENTRY_HEADROOM, _select_rows  # noqa: E402

VARIANTS = {
    "forward": [{"BLOCK": 1024, "num_warps": 8}, {"BLOCK": 512, "num_warps": 4}],
    "entries_forward": [{"BLOCK": b, "num_warps": w} for b, w in ((128, 4), (256, 4), (512, 4), (512, 8))],
    "backward": [{"BLOCK_ROWS": r, "BLOCK_COLUMNS": c, "num_warps": w}
                 for r, c, w in ((8, 256, 8), (16, 128, 8), (8, 256, 4), (4, 256, 4), (4, 512, 8), (16, 256, 8))],
    "entries_backward": [{"BLOCK": b, "num_warps": w} for b, w in ((256, 4), (256, 8), (512, 8))],
    "gather_rows": [{"BLOCK": b, "num_warps": w} for b, w in ((1024, 4), (512, 4), (256, 4), (1024, 8), (2048, 8))],
}


def batch(cells: int, genes: int, density: float, sink_share: float, seed: int = 0):
    """Decoder outputs, biases, per-cell log library and log θ, and the entries (sorted by cell, then column)."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    width = -(-genes // 64) * 64

    def normal(*shape, scale=1.0):
        return scale * torch.randn(*shape, device="cuda", generator=generator)

    present = torch.rand(cells - 1, genes, device="cuda", generator=generator) < density
    rows, columns = present.nonzero(as_tuple=True)
    values = torch.distributions.Geometric(probs=torch.full((len(rows),), 0.4, device="cuda")).sample() + 1
    n_sink = int(sink_share * len(rows))
    sink_columns = torch.arange(n_sink, device="cuda") % genes
    return {"out": normal(cells, width, scale=2.0).bfloat16(), "zero_logits": normal(cells, width).bfloat16(),
            "bias": normal(width), "zero_bias": normal(width), "log_library": 7 + normal(cells, 1, scale=0.5),
            "log_theta": normal(genes), "rows": torch.cat([rows, torch.full_like(sink_columns, cells - 1)]),
            "columns": torch.cat([columns, sink_columns]), "values": torch.cat([values, 0 * sink_columns])}


def time_launch(launch, repeats: int) -> float:
    """Median milliseconds of ``launch()`` over ``repeats`` launches, each timed with CUDA events."""
    launch()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        launch()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gather_runs(cells: int, genes: int, density: float, repeats: int, matrix_rows: int = 200_000) -> list[dict]:
    """Milliseconds to gather a fixed-shape batch of ``cells`` random rows (plus padding and the sink) from resident
    CSR counts of ``matrix_rows`` rows, with the Triton kernel and with the torch code."""
    generator = torch.Generator(device="cuda").manual_seed(1)
    lengths = torch.binomial(torch.full((matrix_rows,), float(genes)), torch.full((matrix_rows,), density))
    lengths = lengths.long().cuda()
    indptr = torch.nn.functional.pad(lengths.cumsum(0), (1, 0))
    nnz = int(indptr[-1])
    indices = torch.randint(0, genes, (nnz,), device="cuda", generator=generator, dtype=torch.int32)
    data = torch.ones(nnz, device="cuda")
    rows = torch.nn.functional.pad(torch.randperm(matrix_rows, device="cuda", generator=generator)[:cells],
                                   (0, -(-(cells + 1) // 8) * 8 - cells), value=-1)
    n_entries = -(-int(lengths[rows[:cells]].sum() * ENTRY_HEADROOM) // 1024) * 1024
    runs = []
    for triton_kernel in (True, False):  # the whole gathering, as training calls it
        kernels.AVAILABLE = triton_kernel  # read at each call
        milliseconds = time_launch(lambda: _select_rows(indptr, indices, data, rows, n_entries, genes, sink=True),
                                   repeats)
        runs.append({"kernel": "select_rows" if triton_kernel else "select_rows_torch", "entries": n_entries,
                     "ms": round(milliseconds, 4)})
        print(json.dumps(runs[-1]), flush=True)
    kernels.AVAILABLE = True
    # the kernel alone, in several launch settings
    batch = _select_rows(indptr, indices, data, rows, n_entries, genes, sink=True)
    batch_rows, columns, values, offsets = batch.row, batch.col, batch.value, batch.offsets
    for config in VARIANTS["gather_rows"]:
        def launch(config=config):
            return kernels._gather_rows[(-(-n_entries // config["BLOCK"]),)](
                indptr, indices, data, rows, offsets, batch_rows, columns, values, len(rows), n_entries, genes,
                SEARCH_STEPS=(len(rows) - 1).bit_length(), **config)
        compiled = launch()
        runs.append({"kernel": "gather_rows", "entries": n_entries, **config,
                     "ms": round(time_launch(launch, repeats), 4), "registers": getattr(compiled, "n_regs", None),
                     "spills": getattr(compiled, "n_spills", None)})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=4096)
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--density", type=float, default=0.038)
    parser.add_argument("--sink-share", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    t = batch(args.cells, args.genes, args.density, args.sink_share)
    n_rows, width = t["out"].shape
    n_genes, n_entries = len(t["log_theta"]), len(t["values"])
    results = {"cells": n_rows, "width": width, "genes": n_genes, "entries": n_entries, "sink_share": args.sink_share,
               "device": torch.cuda.get_device_name(), "torch": torch.__version__, "runs": []}
    for zinb in (True, False):
        zero_logits, zero_bias = (t["zero_logits"], t["zero_bias"]) if zinb else (t["out"], t["bias"])
        dense = (t["out"], zero_logits, t["bias"], zero_bias, t["log_library"], t["log_theta"])
        sums, log_norm, slope_sums = (torch.empty(n_rows, device="cuda") for _ in range(3))
        entry_grads = torch.empty(3, n_entries, device="cuda")
        grad_sums = torch.randn(n_rows, device="cuda")
        grad_out, grad_zero_logits = torch.empty_like(t["out"]), torch.empty_like(t["out"])
        grad_log_theta = torch.zeros(n_genes, device="cuda")
        launches = {
            "forward": lambda c: kernels._forward[(n_rows,)](*dense, sums, log_norm, slope_sums, n_genes, width,
                                                            ZINB=zinb, **c),
            "entries_forward": lambda c: kernels._entries_forward[(-(-n_entries // c["BLOCK"]),)](
                *dense, log_norm, t["rows"], t["columns"], t["values"], sums, slope_sums, entry_grads, width,
                n_entries, ZINB=zinb, **c),
            "backward": lambda c: kernels._backward[(-(-n_rows // c["BLOCK_ROWS"]), -(-width // c["BLOCK_COLUMNS"]))](
                *dense, log_norm, slope_sums, grad_sums, grad_out, grad_zero_logits,
                torch.empty(-(-n_rows // c["BLOCK_ROWS"]), n_genes, device="cuda"), n_rows, n_genes, width,
                ZINB=zinb, **c),
            "entries_backward": lambda c: kernels._entries_backward[(-(-n_entries // c["BLOCK"]),)](
                *dense, log_norm, slope_sums, entry_grads, t["rows"], t["columns"], grad_sums, grad_out,
                grad_zero_logits, grad_log_theta, n_entries, width, ZINB=zinb, **c),
        }
        for name, configs in VARIANTS.items():
            for config in configs if name in launches else ():
                compiled = launches[name](config)
                milliseconds = time_launch(lambda: launches[name](config), args.repeats)
                run = {"likelihood": "zinb" if zinb else "nb", "kernel": name, **config, "ms": round(milliseconds, 4),
                       "registers": getattr(compiled, "n_regs", None), "spills": getattr(compiled, "n_spills", None)}
                print(json.dumps(run), flush=True)
                results["runs"].append(run)
        # the two custom ops as the module calls them, with the launch settings of kernels.py
        arguments = (t["out"], t["zero_logits"] if zinb else None, t["bias"], t["zero_bias"] if zinb else None,
                     t["log_library"], t["log_theta"])
        _, log_norm, slope_sums, entry_grads = kernels.count_forward(*arguments, t["rows"], t["columns"],
                                                                     t["values"])
        for name, launch in [
                ("count_forward", lambda: kernels.count_forward(*arguments, t["rows"], t["columns"], t["values"])),
                ("count_backward", lambda: kernels.count_backward(*arguments, log_norm, slope_sums, entry_grads,
                                                                  t["rows"], t["columns"], grad_sums))]:
            run = {"likelihood": "zinb" if zinb else "nb", "kernel": name,
                   "ms": round(time_launch(launch, args.repeats), 4)}
            print(json.dumps(run), flush=True)
            results["runs"].append(run)
    results["runs"] += gather_runs(args.cells, args.genes, args.density, args.repeats)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
