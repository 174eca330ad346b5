"""Pseudobulk stage speed and memory at the lupus cohort's shape (stage 03: plan, counts, states, communication).

Synthetic counts of that shape (834,096 cells × 24,205 genes, ~3.8 % non-zero; 169 patients, 8 cell types, a
32-dimensional z-score per cell), made quickly rather than with the full simulator: the stage's cost depends on the
matrix's size and sparsity, not on its biology. The first genes carry the symbols of liana's consensus resource so
that every pair of it is scored. Each timed call runs in this process; peak RSS is ``ru_maxrss``.

    PYTHONPATH=lib python bench/bench_pseudobulk.py --out results.json [--cells 834096 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gmvae4p import keys
from gmvae4p.data import ligand_receptor_genes
from gmvae4p.modalities import make_pseudobulk


def synthetic_cohort(n_cells: int, n_genes: int, n_patients: int, n_types: int, nnz_per_cell: int,
                     seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, n_genes, n_cells * nnz_per_cell, dtype=np.int32)
    data = (1 + rng.poisson(0.6, indices.size)).astype(np.float32)
    indptr = np.arange(0, indices.size + 1, nnz_per_cell, dtype=np.int64)
    counts = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    symbols = ligand_receptor_genes(n_genes)
    genes = symbols + [f"G{i:05d}" for i in range(n_genes - len(symbols))]
    obs = pd.DataFrame({"ind_cov": pd.Categorical(rng.integers(0, n_patients, n_cells).astype(str)),
                        "ct_cov": pd.Categorical(rng.integers(0, n_types, n_cells).astype(str))})
    obs["disease_cov"] = np.where(obs["ind_cov"].astype(int) % 2 == 0, "SLE", "healthy")
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(obs=obs, var=pd.DataFrame(index=genes))
    adata.layers[keys.COUNTS] = counts
    adata.obsm[keys.X_GMVAE_ZSCORE] = rng.normal(size=(n_cells, 32)).astype(np.float32)
    adata.uns[keys.UNS] = {"columns": {"patient": "ind_cov", "cell_type": "ct_cov", "label": "disease_cov"}}
    return adata


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=834_096)
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--patients", type=int, default=169)
    parser.add_argument("--density", type=float, default=0.038)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    adata = synthetic_cohort(args.cells, args.genes, args.patients, 8, int(args.density * args.genes))
    counts = adata.layers[keys.COUNTS]
    sparse_gb = (counts.data.nbytes + counts.indices.nbytes + counts.indptr.nbytes) / 2**30
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    seconds = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        samples = make_pseudobulk(adata, n_samples=10, n_cells=500, seed=repeat, progress=False)
        seconds.append(time.perf_counter() - start)
        print(f"repeat {repeat}: {seconds[-1]:.2f} s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    results = {"cells": args.cells, "genes": args.genes, "patients": args.patients, "nnz": int(counts.nnz),
               "sparse_input_gb": round(sparse_gb, 2), "samples": samples.n_obs,
               "state_features": samples.obsm[keys.STATES].shape[1],
               "communication_features": samples.obsm[keys.COMMUNICATION].shape[1],
               "seconds": [round(s, 2) for s in seconds], "seconds_median": round(statistics.median(seconds), 2),
               "peak_rss_gb_before_stage": round(rss_before, 2), "peak_rss_gb": round(peak, 2),
               "peak_rss_over_sparse_input": round(peak / sparse_gb, 2)}
    print(json.dumps(results), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
