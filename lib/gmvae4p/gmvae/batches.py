"""Counts held as CSR tensors, cut into batches of rows on the compute device (as :class:`.module.SparseCounts`).

Two placements. *Resident*: the CSR arrays live on the device (834k × 24k at 4 % non-zero is about 6 GB with
float32 values and int32 column ids) and a batch is any set of rows. *Streamed*, for matrices that do not fit:
the arrays stay in pinned host memory and the rows are cut into contiguous chunks of a few batches; each chunk is
copied to the device asynchronously on a side stream while the previous one trains, and shuffled within. A
streamed batch therefore mixes rows of one chunk only: write rows in random order (:mod:`.trainset` does).

Batches are planned on the host from the host copy of ``indptr`` (row order, each batch's non-zero count), so
gathering a batch's entries on the device needs no host synchronization. No DataLoader, no per-row Python.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from .config import PLACEMENTS
from .module import SparseCounts

CHUNK_BATCHES = 8
"""Batches per streamed chunk: large enough to hide the copy, small enough that a chunk is cheap to hold twice."""


class CSRBatches:
    """Rows of a CSR count matrix, served in batches on ``device``.

    Parameters
    ----------
    counts
        Cells × genes CSR (a DDP rank passes only its shard).
    device
        Where batches are made.
    placement
        ``"resident"`` (CSR on the device), ``"streamed"`` (pinned host memory, chunks copied asynchronously) or
        ``"auto"``: resident unless the arrays would take more than half of the device's free memory.
    """

    def __init__(self, counts: sp.csr_matrix, *, device: torch.device | str = "cpu", placement: str = "auto"):
        if not (sp.issparse(counts) and counts.format == "csr"):
            raise TypeError("counts must be a scipy CSR matrix (cells × genes).")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}.")
        self.n_rows, self.n_genes = counts.shape
        self.device = torch.device(device)
        self.host_indptr = counts.indptr.astype(np.int64)
        indices = torch.from_numpy(counts.indices.astype(np.int32, copy=False))
        data = torch.from_numpy(counts.data.astype(np.float32, copy=False))
        if placement == "auto":
            placement = "streamed" if self.device.type == "cuda" and _too_large(self.device, indices, data) \
                else "resident"
        self.placement = placement
        pin = placement == "streamed" and self.device.type == "cuda"
        self.indptr = torch.from_numpy(self.host_indptr)
        self.indices, self.data = (indices.pin_memory(), data.pin_memory()) if pin else (indices, data)
        if placement == "resident":
            self.indptr, self.indices, self.data = (t.to(self.device) for t in (self.indptr, self.indices, self.data))
        self._copy_stream = torch.cuda.Stream(self.device) if pin else None

    @property
    def nbytes(self) -> int:
        """Bytes of the CSR arrays (on the device when resident)."""
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.data))

    def batches(self, n_batches: int, *, seed: int | None = None) -> Iterator[tuple[torch.Tensor, SparseCounts]]:
        """``n_batches`` batches covering every row once: ``(row ids on the device, their counts)``.

        ``seed=None`` keeps row order (prediction); an integer shuffles (training). Under DDP every rank passes the
        same ``n_batches`` so that all take the same number of steps.
        """
        if self.n_rows == 0:  # a DDP rank may hold no validation cells
            return
        n_batches = max(1, min(n_batches, self.n_rows))
        if self.placement == "resident":
            order = np.arange(self.n_rows) if seed is None else np.random.default_rng(seed).permutation(self.n_rows)
            yield from self._chunk_batches(0, self._chunk(0, self.n_rows), order, n_batches)
            return
        rng = None if seed is None else np.random.default_rng(seed)
        n_chunks = -(-n_batches // CHUNK_BATCHES)
        bounds = np.linspace(0, self.n_rows, n_chunks + 1).round().astype(np.int64)
        chunk_order = np.arange(n_chunks) if rng is None else rng.permutation(n_chunks)
        split = np.array_split(np.arange(n_batches), n_chunks)  # how many batches each chunk gives
        ahead = self._chunk(bounds[chunk_order[0]], bounds[chunk_order[0] + 1])
        for i, c in enumerate(chunk_order):
            current = ahead
            if i + 1 < n_chunks:  # start the next copy before this chunk's batches are queued
                ahead = self._chunk(bounds[chunk_order[i + 1]], bounds[chunk_order[i + 1] + 1])
            start, stop = bounds[c], bounds[c + 1]
            order = np.arange(stop - start) if rng is None else rng.permutation(stop - start)
            yield from self._chunk_batches(start, self._ready(current), order, len(split[i]))

    def _chunk(self, start: int, stop: int):
        """Device tensors ``(indptr from 0, indices, data)`` for rows ``start:stop`` (a copy is only queued)."""
        first, last = self.host_indptr[start], self.host_indptr[stop]
        arrays = (self.indptr[start:stop + 1] - first, self.indices[first:last], self.data[first:last])
        if self._copy_stream is None:
            return arrays
        with torch.cuda.stream(self._copy_stream):
            return tuple(t.to(self.device, non_blocking=True) for t in arrays)

    def _ready(self, chunk):
        if self._copy_stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._copy_stream)
            for t in chunk:
                t.record_stream(current)
        return chunk

    def _chunk_batches(self, start: int, chunk, order: np.ndarray, n_batches: int):
        indptr, indices, data = chunk
        host_lengths = np.diff(self.host_indptr[start:start + len(order) + 1])[order]
        device_order = torch.from_numpy(order).to(self.device, non_blocking=True)
        for part in np.array_split(np.arange(len(order)), n_batches):
            local = device_order[part[0]:part[-1] + 1]
            nnz = int(host_lengths[part[0]:part[-1] + 1].sum())
            yield local + start, _select_rows(indptr, indices, data, local, nnz, self.n_genes)


def _select_rows(indptr, indices, data, rows, nnz, n_genes) -> SparseCounts:
    """Rows ``rows`` of the CSR ``(indptr, indices, data)``; ``nnz`` is known from the host plan (no sync)."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    entry_row = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths, output_size=nnz)
    first_entry = torch.cumsum(lengths, 0) - lengths
    position = torch.arange(nnz, device=rows.device) - first_entry[entry_row] + starts[entry_row]
    return SparseCounts(entry_row, indices[position].long(), data[position], (len(rows), n_genes))


def _too_large(device: torch.device, *arrays: torch.Tensor) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in arrays) > free / 2
