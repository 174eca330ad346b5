"""Benchmark of the classifier stage (stage 04): Table 1 (every method, 5 patient-grouped folds), the null control
(every method again on permuted labels) and Table 2 (small cohorts), each timed; median over repeats.

Two cohorts:
- ``--run outputs/demo``: a chain's own stage 02–03 outputs (``data/pseudobulk.h5ad``, ``data/gmvae.h5ad``), as the
  notebook reads them.
- ``--synthetic 169``: that many patients at the lupus cohort's shapes, built directly: per patient 10 mixtures + one
  whole sample of 24,205 genes, states 8 types × 32 dims, communication 4,620 pairs × 8 × 8 types (295,680
  features); cells 834,096 × 24,205 CSR at 4 % nonzero (the lupus cells per patient) with 32-dim embeddings. Random values with no label
  signal: it times the compute, not the accuracy.

Needs torch, numpy, scipy, pandas, scikit-learn, anndata and xgboost (on the device machine, carry the last two as
wheels: see BENCHMARKS.md). Writes a JSON after every repeat.

    python bench/bench_classify.py --run outputs/demo --repeats 3 --out bench/results/classify_cpu.json
    python bench/bench_classify.py --synthetic 169 --device cuda --repeats 1 --out $OUT/classify_h100.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

from gmvae4p import keys  # noqa: E402
from gmvae4p.classify import evaluate  # noqa: E402
from gmvae4p.classify.cell_baselines import CellData  # noqa: E402
from gmvae4p.classify.config import N_TOP_GENES, N_TOP_INTERACTIONS, ClassifierConfig  # noqa: E402
from gmvae4p.classify.cv import patient_folds, permute_labels, unit_table  # noqa: E402

LUPUS = {"n_cells": 834_096, "n_genes": 24_205, "n_types": 8, "latent_dim": 32, "n_pairs": 4_620,
         "n_samples": 10, "density": 0.04}


def synthetic(n_patients: int, seed: int = 0) -> tuple[ad.AnnData, CellData]:
    shape = LUPUS
    rng = np.random.default_rng(seed)
    patients = [f"P{i:03d}" for i in range(n_patients)]
    labels = np.where(np.arange(n_patients) % 2 == 0, "SLE", "healthy")
    rows = [(f"{p}_{k}", p, p, labels[i], keys.MIXTURE if k < shape["n_samples"] else keys.WHOLE)
            for i, p in enumerate(patients) for k in range(shape["n_samples"] + 1)]
    obs = pd.DataFrame(rows, columns=["sample_id", "unit", "patient", "label", keys.KIND]).set_index("sample_id",
                                                                                                       drop=False)
    n, types = len(obs), [f"type{t}" for t in range(shape["n_types"])]
    samples = ad.AnnData(np.abs(rng.standard_normal((n, shape["n_genes"]), dtype=np.float32)) * 3, obs=obs)
    proportions = pd.DataFrame(rng.dirichlet(np.ones(len(types)), n), index=obs.index, columns=types)
    samples.obsm[keys.PROPORTIONS] = proportions
    samples.obsm[keys.COMPOSITION] = proportions.copy()
    states = rng.standard_normal((n, len(types) * shape["latent_dim"]), dtype=np.float32)
    states[rng.random(n) < 0.5, : shape["latent_dim"]] = np.nan
    samples.obsm[keys.STATES] = states
    samples.obsm[keys.COMMUNICATION] = rng.standard_normal((n, shape["n_pairs"] * len(types) ** 2),
                                                           dtype=np.float32)
    # cells: a patient's cells are contiguous; CSR with random columns (duplicates sum, as in any sparse product)
    n_cells = shape["n_cells"] * n_patients // 169  # the lupus cohort's cells per patient
    per_row = int(shape["n_genes"] * shape["density"])
    unit_of_cell = np.sort(rng.integers(0, n_patients, n_cells))
    indptr = np.arange(n_cells + 1, dtype=np.int64) * per_row
    indices = rng.integers(0, shape["n_genes"], n_cells * per_row, dtype=np.int32)
    values = np.log1p(rng.poisson(1.5, n_cells * per_row).astype(np.float32) + 1)
    expression = sp.csr_matrix((values, indices, indptr), shape=(n_cells, shape["n_genes"]))
    embedding = rng.standard_normal((n_cells, shape["latent_dim"]), dtype=np.float32)
    cells = CellData(patients, unit_of_cell, types, rng.integers(0, len(types), n_cells), embedding,
                     rng.standard_normal((n_cells, shape["latent_dim"]), dtype=np.float32), expression)
    return samples, cells


def from_run(folder: Path) -> tuple[ad.AnnData, CellData, ad.AnnData]:
    samples = ad.read_h5ad(folder / "data" / "pseudobulk.h5ad")
    cells = ad.read_h5ad(folder / "data" / "gmvae.h5ad")
    return samples, CellData.from_anndata(cells), cells


def stage(samples, cell_data, positive, settings: dict, device: str | None, seed: int) -> dict:
    """The notebook's sequence: folds, Table 1, null control, Table 3, Table 2; each part timed."""
    config = ClassifierConfig()
    shared = dict(cells=cell_data, config=config, n_top_genes=N_TOP_GENES, n_top_interactions=N_TOP_INTERACTIONS,
                  device=device, seed=seed, progress=False)
    times = {}
    start = time.perf_counter()
    units = unit_table(samples, positive)
    folds = patient_folds(units, n_folds=5, seed=seed)
    result = evaluate.cross_validate(samples, units, folds, **shared)
    times["table1"] = time.perf_counter() - start
    times.update({f"table1/{m}": s for m, s in result.seconds.items()})
    table1 = evaluate.main_table(result.predictions, seed=seed)
    evaluate.deployment_table(result.deployment, seed=seed)
    start = time.perf_counter()
    null_units = permute_labels(units, seed)
    evaluate.cross_validate(samples, null_units, patient_folds(null_units, n_folds=5, seed=seed), **shared)
    times["null_control"] = time.perf_counter() - start
    start = time.perf_counter()
    shared.pop("progress")
    evaluate.small_cohort_table(samples, units, folds, sizes=settings["small_cohort_sizes"],
                                repeats=settings["small_cohort_repeats"], methods=["gmvae4p", "logistic_regression"],
                                progress=False, **shared)
    times["table2"] = time.perf_counter() - start
    times["stage"] = times["table1"] + times["null_control"] + times["table2"]
    return {"seconds": times, "auc": dict(zip(table1["method"], table1["auc"].round(4)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a chain's run folder (stages 02 and 03 done)")
    source.add_argument("--synthetic", type=int, metavar="N_PATIENTS", help="lupus-shaped random cohort")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--small-cohort-sizes", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--small-cohort-repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    start = time.perf_counter()
    if args.run:
        samples, cell_data, cells = from_run(args.run)
        positive = evaluate.positive_label(cells, samples, None)
    else:
        samples, cell_data = synthetic(args.synthetic)
        positive = "SLE"
    build_s = time.perf_counter() - start
    settings = {"small_cohort_sizes": args.small_cohort_sizes, "small_cohort_repeats": args.small_cohort_repeats}
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    report = {"cohort": str(args.run) if args.run else f"synthetic, {args.synthetic} patients, lupus shapes",
              "samples": list(samples.shape), "cells": int(len(cell_data.unit_of_cell)),
              "communication_features": int(samples.obsm[keys.COMMUNICATION].shape[1]),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch_threads": torch.get_num_threads(), "build_or_read_s": round(build_s, 2), "settings": settings,
              "repeats": []}
    for repeat in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        measured = stage(samples, cell_data, positive, settings, str(device), seed=0)
        measured["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        if device.type == "cuda":
            measured["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        report["repeats"].append(measured)
        parts = report["repeats"][0]["seconds"]
        report["median_s"] = {k: round(statistics.median(r["seconds"][k] for r in report["repeats"]), 2)
                              for k in parts}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"repeat {repeat + 1}/{args.repeats}: stage {measured['seconds']['stage']:.1f} s "
              f"(table 1 {measured['seconds']['table1']:.1f}, null {measured['seconds']['null_control']:.1f}, "
              f"table 2 {measured['seconds']['table2']:.1f}), peak RSS {measured['peak_rss_gb']} GB", flush=True)


if __name__ == "__main__":
    main()
