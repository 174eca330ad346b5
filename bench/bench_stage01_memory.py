"""Resident memory over stage 01's calls, as its notebook makes them, at a fraction of the lupus cohort's shape,
sampled every 20 ms from /proc/self/statm (Linux). Two commands, each one process:

    PYTHONPATH=lib python bench/bench_stage01_memory.py simulate 0.25 cohort.h5ad   # simulate once, write the file
    PYTHONPATH=lib python bench/bench_stage01_memory.py preprocess cohort.h5ad      # stage 01 on that file

Prints per call its seconds, the resident memory after it and the peak while it ran, each also as a multiple of the
counts' CSR size.
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
QC = dict(min_genes=200, min_cells=10, max_pct_mito=20.0, mito_prefix="MT-")


def resident_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


class PeakSampler:
    def __init__(self):
        self.peak, self.csr_gb = resident_gb(), None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            self.peak = max(self.peak, resident_gb())
            time.sleep(0.02)

    def step(self, name: str, call):
        self.peak, start = resident_gb(), time.perf_counter()
        result = call()
        seconds, after = time.perf_counter() - start, resident_gb()
        ratio = f"   ({after / self.csr_gb:4.2f}× / {self.peak / self.csr_gb:4.2f}× the CSR)" if self.csr_gb else ""
        print(f"{name:20s} {seconds:7.1f} s   resident after {after:6.2f} GB   peak during {self.peak:6.2f} GB{ratio}",
              flush=True)
        return result

    def set_csr(self, x) -> None:
        self.csr_gb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**30
        print(f"counts CSR {self.csr_gb:.2f} GB, {x.shape[0]:,} cells × {x.shape[1]:,} genes", flush=True)


def simulate(fraction: float, path: str) -> None:
    sampler = PeakSampler()
    shape = {**LUPUS_SIMULATION, "n_cells": int(LUPUS_SIMULATION["n_cells"] * fraction)}
    adata = sampler.step("simulate", lambda: gmvae4p.data.load_cohort(None, **COLUMNS, simulate=shape, seed=0))
    sampler.set_csr(adata.X)
    sampler.step("write_h5ad", lambda: gmvae4p.data.write_h5ad(adata, path))


def preprocess(path: str) -> None:
    sampler = PeakSampler()
    adata = sampler.step("load_cohort", lambda: gmvae4p.data.load_cohort(path, **COLUMNS))
    sampler.set_csr(adata.X)
    sampler.step("qc_metrics", lambda: gmvae4p.preprocess.qc_metrics(adata))
    adata = sampler.step("filter_cells_genes", lambda: gmvae4p.preprocess.filter_cells_genes(adata, **QC))
    sampler.step("normalize_log1p_hvg", lambda: gmvae4p.preprocess.normalize_log1p_hvg(adata, n_top_genes=2_000))
    with tempfile.TemporaryDirectory() as folder:
        sampler.step("write_h5ad", lambda: gmvae4p.data.write_h5ad(adata, os.path.join(folder, "cells.h5ad")))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"simulate": lambda: simulate(float(arguments[0]), arguments[1]), "preprocess": lambda: preprocess(arguments[0])}[
        command]()
