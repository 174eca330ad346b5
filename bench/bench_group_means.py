"""Stage 04's per-(unit, type) means of the cells' log-normalized expression read from disk
(``CellData.from_anndata(cells, expression=x_on_disk(...))``'s step), on a synthetic CSR: 100,000 cells × 24,205
genes, 900 entries drawn per cell, 1,352 groups (169 units × 8 types, as at the lupus shape), each cell's group
drawn at random (the worst order for the memory the sums are added into). The file is written once to PATH
(``/tmp/gmvae4p_group_means.h5ad``) and reused. The library comes from ``PYTHONPATH``, so two commits can be timed
against each other, run in turn (A B A B …) under ``/usr/bin/time -v``:

    PYTHONPATH=lib /usr/bin/time -v python bench/bench_group_means.py
"""

import os
import sys
import time

import anndata as ad
import numpy as np
import scipy.sparse as sp

from gmvae4p.classify import cell_baselines
from gmvae4p.data import x_on_disk

PATH = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gmvae4p_group_means.h5ad"
N_CELLS, N_GENES, PER_CELL, N_GROUPS = 100_000, 24_205, 900, 1_352

if not os.path.exists(PATH):
    rng = np.random.default_rng(0)
    flat = np.unique(np.arange(N_CELLS, dtype=np.int64).repeat(PER_CELL) * N_GENES
                     + rng.integers(0, N_GENES, N_CELLS * PER_CELL))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(flat // N_GENES, minlength=N_CELLS))])
    x = sp.csr_matrix((rng.random(len(flat), dtype=np.float32), (flat % N_GENES).astype(np.int32), indptr),
                      shape=(N_CELLS, N_GENES))
    ad.AnnData(x).write_h5ad(PATH)
group = np.random.default_rng(1).integers(-1, N_GROUPS, N_CELLS)
start = time.perf_counter()
with x_on_disk(PATH) as expression:
    means = cell_baselines._group_means(expression, group, N_GROUPS)
print(f"group means {time.perf_counter() - start:.2f} s, checksum {float(np.nansum(means)):.6g}")
