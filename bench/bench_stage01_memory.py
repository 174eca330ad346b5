"""Resident memory over stage 01's calls (simulate, QC metrics, QC + normalize + log1p, write) at a fraction of the
lupus cohort's shape, sampled every 20 ms from /proc/self/statm in one process (Linux):

    PYTHONPATH=lib python bench/bench_stage01_memory.py 0.25

Prints per call its seconds, the resident memory after it and the peak while it ran, and the CSR size of the counts.
"""

import os
import sys
import tempfile
import threading
import time

import gmvae4p.data
import gmvae4p.preprocess

LUPUS_SIMULATION = dict(n_patients=169, n_cells=834_096, n_genes=24_205, n_cell_types=8, library_size=1_100.0,
                        n_marker_genes=50, n_disease_genes=100)
COLUMNS = dict(patient_key="ind_cov", cell_type_key="ct_cov", label_key="disease_cov", batch_key="batch_cov")


def resident_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


class PeakSampler:
    def __init__(self):
        self.peak = resident_gb()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            self.peak = max(self.peak, resident_gb())
            time.sleep(0.02)

    def step(self, name: str, call):
        self.peak, start = resident_gb(), time.perf_counter()
        result = call()
        seconds = time.perf_counter() - start
        print(f"{name:18s} {seconds:7.1f} s   resident after {resident_gb():6.2f} GB   peak during {self.peak:6.2f} GB",
              flush=True)
        return result


def main(fraction: float) -> None:
    sampler = PeakSampler()
    simulate = {**LUPUS_SIMULATION, "n_cells": int(LUPUS_SIMULATION["n_cells"] * fraction)}
    adata = sampler.step("simulate", lambda: gmvae4p.data.load_cohort(None, **COLUMNS, simulate=simulate, seed=0))
    x = adata.X
    print(f"counts CSR {(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**30:.2f} GB, "
          f"{x.shape[0]:,} cells", flush=True)
    sampler.step("qc_metrics", lambda: gmvae4p.preprocess.qc_metrics(adata))
    adata = sampler.step("qc_normalize_hvg", lambda: gmvae4p.preprocess.qc_normalize_hvg(
        adata, min_genes=200, min_cells=10, max_pct_mito=20.0, n_top_genes=None))
    with tempfile.TemporaryDirectory() as folder:
        sampler.step("write_h5ad", lambda: gmvae4p.data.write_h5ad(adata, os.path.join(folder, "cells.h5ad")))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.25)
