"""Counts held as CSR tensors (on the GPU when they fit), gathered and densified there one batch at a time.

Batches are planned on the host for a whole epoch (row order and each batch's non-zero count come from the
host copy of ``indptr``), so gathering a batch on the device needs no host synchronization: the sizes that
``repeat_interleave`` and the scatter need are already known. No DataLoader, no per-row Python.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


class CSRBatches:
    """Rows of a CSR count matrix, densified per batch on ``device``.

    Parameters
    ----------
    counts
        Cells × genes CSR (only its rows in ``rows`` are kept: a DDP rank passes its shard).
    device
        Where the CSR arrays live and batches are made.
    rows
        Row ids to keep (default all), in the order their local ids will refer to.
    """

    def __init__(self, counts: sp.csr_matrix, *, device: torch.device | str = "cpu", rows: np.ndarray | None = None):
        if not (sp.issparse(counts) and counts.format == "csr"):
            raise TypeError("counts must be a scipy CSR matrix (cells × genes).")
        if rows is not None:
            counts = counts[rows]
        self.n_rows, self.n_genes = counts.shape
        self.device = torch.device(device)
        self.host_indptr = counts.indptr.astype(np.int64)
        self.indptr = torch.from_numpy(self.host_indptr).to(self.device)
        self.indices = torch.from_numpy(counts.indices.astype(np.int64, copy=False)).to(self.device)
        self.data = torch.from_numpy(counts.data.astype(np.float32, copy=False)).to(self.device)

    def plan(self, order: np.ndarray, batch_size: int) -> list[tuple[torch.Tensor, int]]:
        """Split local row ids ``order`` into batches: ``(row ids on the device, their non-zero count)``."""
        order = np.asarray(order, dtype=np.int64)
        lengths = self.host_indptr[order + 1] - self.host_indptr[order]
        device_order = torch.from_numpy(order).to(self.device, non_blocking=True)
        plan = []
        for start in range(0, len(order), batch_size):
            stop = min(start + batch_size, len(order))
            plan.append((device_order[start:stop], int(lengths[start:stop].sum())))
        return plan

    def dense(self, rows: torch.Tensor, nnz: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The rows ``rows`` (local ids, on the device) as a dense (len(rows) × genes) tensor; ``nnz`` from plan."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        entry_row = torch.repeat_interleave(torch.arange(len(rows), device=self.device), lengths, output_size=nnz)
        first_entry = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(nnz, device=self.device) - first_entry[entry_row] + starts[entry_row]
        out = torch.zeros(len(rows), self.n_genes, dtype=dtype, device=self.device)
        out[entry_row, self.indices[position]] = self.data[position].to(dtype)
        return out
