"""Resident memory over stage 01's calls, as its notebook makes them, on a fraction of the lupus-shape cohort
(parameters/lupus_sim.yaml's simulation and preprocessing settings), sampled every 20 ms from /proc/self/statm
(Linux). Two commands, each one process:

    PYTHONPATH=lib python bench/bench_stage01_memory.py simulate 0.25 cohort.h5ad   # simulate once, write the file
    PYTHONPATH=lib python bench/bench_stage01_memory.py simulate 2.4 cohort.h5ad 400   # 2 M cells of 400 patients
    PYTHONPATH=lib python bench/bench_stage01_memory.py preprocess cohort.h5ad      # stage 01 on that file

Prints per call its seconds, the resident memory after it and the peak while it ran, each also as a multiple of the
counts' CSR size.
"""

import os
import sys
import tempfile
import threading
import time

from pathlib import Path

import yaml

import gmvae4p.data
import gmvae4p.preprocess

LUPUS = yaml.safe_load((Path(__file__).resolve().parents[1] / "parameters" / "lupus_sim.yaml").read_text())
COLUMNS = {k: v for k, v in LUPUS["data"].items() if k.endswith("_key")}
QC, NORMALIZE = gmvae4p.preprocess.split_settings(LUPUS["preprocess"])


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


def simulate(fraction: float, path: str, n_patients: int | None = None) -> None:
    """``fraction`` of the lupus shape's cells, of its patients or of ``n_patients``."""
    sampler = PeakSampler()
    shape = {**LUPUS["simulate"], "n_cells": int(LUPUS["simulate"]["n_cells"] * fraction)}
    if n_patients:
        shape["n_patients"] = n_patients
    adata = sampler.step("simulate", lambda: gmvae4p.data.load_cohort(None, **COLUMNS, simulate=shape,
                                                                      seed=LUPUS["seed"]))
    sampler.set_csr(adata.X)
    sampler.step("write_h5ad", lambda: gmvae4p.data.write_h5ad(adata, path))


def preprocess(path: str) -> None:
    sampler = PeakSampler()
    adata = sampler.step("load_cohort", lambda: gmvae4p.data.load_cohort(path, **COLUMNS))
    sampler.set_csr(adata.X)
    sampler.step("qc_metrics", lambda: gmvae4p.preprocess.qc_metrics(adata))
    adata = sampler.step("filter_cells_genes", lambda: gmvae4p.preprocess.filter_cells_genes(adata, **QC,
                                                                                           reuse_matrix=True))
    with tempfile.TemporaryDirectory() as folder:  # normalized in place after the counts are written, as stage 01 does
        sampler.step("normalize_log1p_hvg + write", lambda: gmvae4p.preprocess.normalize_log1p_hvg(
            adata, **NORMALIZE, write_to=os.path.join(folder, "cells.h5ad")))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"simulate": lambda: simulate(float(arguments[0]), arguments[1], *map(int, arguments[2:3])),
     "preprocess": lambda: preprocess(arguments[0])}[command]()
