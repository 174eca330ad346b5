"""Counts held as CSR tensors, cut into batches of rows on the compute device (as :class:`.module.SparseCounts`).

Two placements. *Resident*: the CSR arrays live on the device (834k × 24k at 4 % non-zero is about 6 GB with
float32 values and int32 column ids) and a batch is any set of rows. *Streamed*, for matrices that do not fit:
the arrays stay in pinned host memory and the rows are cut into contiguous chunks of a few batches; each chunk is
copied to the device asynchronously on a side stream while the previous one trains, and shuffled within. A
streamed batch therefore mixes rows of one chunk only: write rows in random order (:mod:`.trainset` does).

Batches are planned on the host from the host copy of ``indptr`` (row order, each batch's non-zero count), so
gathering a batch's entries on the device needs no host synchronization. No DataLoader, no per-row Python.

*Fixed-shape* batches (for a compiled step captured once and replayed as a CUDA graph, which needs every step's
tensors to have the same shape) are padded to one number of rows and one number of entries: the rows after a batch's
cells are empty, but the last ("sink") row, which takes value-0 entries up to the entry bound. Their positions are
−1, so that the training loop gives them no weight. A step recorded as one CUDA graph (:mod:`.train`) takes the
batch's padded matrix rows instead (``counts=False``) and gathers their counts itself (:meth:`CSRBatches.gather`),
so that the gathering is recorded with it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from . import kernels
from .config import PLACEMENTS
from .module import SparseCounts
from .trainset import read_entries, read_indptr

CHUNK_BATCHES = 8
"""Batches per streamed chunk: large enough to hide the copy, small enough that a chunk is cheap to hold twice."""
ENTRY_HEADROOM = 1.05
"""Fixed-shape batches: the entry bound is set this much above the largest batch seen, so that the batches of later
epochs (other shuffles) rarely exceed it; each time one does, the bound grows and the compiled step is compiled again
for the new shape."""


class CSRBatches:
    """Rows of a CSR count matrix, served in batches on ``device``.

    Parameters
    ----------
    counts
        Cells × genes CSR (a DDP rank passes only its shard). Repeated entries of a row and column are summed
        (in a copy): the likelihood reads each non-zero entry as one gene's count.
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
        if not counts.has_canonical_format:  # a repeated (row, column) entry is one count, as in the dense matrix
            counts = counts.copy()
            counts.sum_duplicates()
        self._place(counts.indptr, counts.shape[1], torch.device(device), placement,
                    lambda where, pin: (torch.from_numpy(counts.indices.astype(np.int32, copy=False)),
                                        torch.from_numpy(counts.data.astype(np.float32, copy=False))))

    @classmethod
    def from_trainset(cls, path, start: int, stop: int, *, device: torch.device | str = "cpu",
                      placement: str = "auto") -> CSRBatches:
        """Stored rows ``start:stop`` of a training-set file (:mod:`.trainset`), its entries read a block at a time
        straight into where they are kept (the device, pinned memory, or host memory): no host copy of the shard
        beside them. The file's rows are in canonical form (:func:`.trainset.write_trainset` makes them so)."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}.")
        indptr, n_genes = read_indptr(path, start, stop)

        def allocate_and_read(where, pin):
            arrays = {name: torch.empty(int(indptr[-1]), dtype=dtype, device=where, pin_memory=pin)
                      for name, dtype in (("indices", torch.int32), ("data", torch.float32))}
            read_entries(path, start, arrays)
            return arrays["indices"], arrays["data"]

        batches = cls.__new__(cls)
        batches._place(indptr, n_genes, torch.device(device), placement, allocate_and_read)
        return batches

    def _place(self, indptr: np.ndarray, n_genes: int, device: torch.device, placement: str, arrays) -> None:
        """Sets the CSR tensors. ``arrays(where, pin)`` gives the int32 column ids and float32 values, preferably
        already on ``where`` (the device when resident, else the host; pinned when ``pin``); they are moved there
        otherwise."""
        self.n_rows, self.n_genes = len(indptr) - 1, n_genes
        self.device = device
        self.host_indptr = np.asarray(indptr, dtype=np.int64)
        if placement == "auto":
            entries = int(self.host_indptr[-1]) * 8  # an int32 column id and a float32 value per entry
            placement = "streamed" if device.type == "cuda" and _too_large(device, entries) else "resident"
        self.placement = placement
        pin = placement == "streamed" and device.type == "cuda"
        where = device if placement == "resident" else torch.device("cpu")
        indices, data = arrays(where, pin)
        if pin and not indices.is_pinned():
            indices, data = indices.pin_memory(), data.pin_memory()
        self.indptr, self.indices, self.data = (t.to(where) for t in (torch.from_numpy(self.host_indptr), indices, data))
        self._copy_stream = torch.cuda.Stream(self.device) if pin else None
        self._host_lengths = np.diff(self.host_indptr)
        self.rows: np.ndarray | None = None  # the matrix rows served (sorted); None: all
        self._entry_bound = 0  # entries of a fixed-shape batch (grows; see ENTRY_HEADROOM)

    def select(self, rows: np.ndarray) -> CSRBatches:
        """The same arrays serving only matrix rows ``rows`` (no copy): batches then yield positions in ``rows``.

        Training and validation cells of one matrix share its arrays this way, instead of each holding a copy.
        """
        rows = np.sort(np.asarray(rows, dtype=np.int64))
        if self.rows is not None:
            rows = self.rows[rows]
        if len(rows) and (rows[0] < 0 or rows[-1] >= len(self._host_lengths)):
            raise IndexError(f"rows must lie in 0..{len(self._host_lengths) - 1}.")
        subset = copy.copy(self)
        subset.rows, subset.n_rows = rows, len(rows)
        return subset

    @property
    def nbytes(self) -> int:
        """Bytes of the CSR arrays (on the device when resident)."""
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.indices, self.data))

    def batches(self, n_batches: int, *, seed: int | None = None, fixed_shape: bool = False, counts: bool = True,
                agree: Callable[[int, int], tuple[int, int]] | None = None
                ) -> Iterator[tuple[torch.Tensor, SparseCounts | torch.Tensor]]:
        """``n_batches`` batches covering every row once: ``(row ids on the device, their counts)``; the ids are
        positions in :meth:`select`'s rows where rows were selected.

        ``seed=None`` keeps row order (prediction); an integer shuffles (training). Under DDP every rank passes the
        same ``n_batches`` so that all take the same number of steps. ``fixed_shape``: every batch has the same
        numbers of rows and entries (see the module's docstring); padding rows have id −1. ``counts=False`` (with
        ``fixed_shape``, resident only): the batch's matrix rows (−1 for padding) in place of its counts, for
        :meth:`gather`. ``agree(rows, entries)``: the largest batch's rows and entries over every rank (called once
        per epoch, with ``fixed_shape``), so that all ranks' batches have one shape and one entry bound.
        """
        if not counts and not (fixed_shape and self.placement == "resident"):
            raise ValueError("counts=False needs fixed_shape=True and resident counts.")
        if self.n_rows == 0:  # a DDP rank may hold no validation cells
            return
        n_batches = max(1, min(n_batches, self.n_rows))
        rng = None if seed is None else np.random.default_rng(seed)
        # Chunks are contiguous ranges of positions; resident counts are one chunk, the whole matrix.
        n_chunks = 1 if self.placement == "resident" else -(-n_batches // CHUNK_BATCHES)
        bounds = np.linspace(0, self.n_rows, n_chunks + 1).round().astype(np.int64)
        chunk_order = np.arange(n_chunks) if rng is None else rng.permutation(n_chunks)
        split = np.array_split(np.arange(n_batches), n_chunks)  # how many batches each chunk gives
        # The whole epoch is planned first (positions, batch bounds, non-zero counts): a fixed shape fits all batches.
        plans = []
        for i, c in enumerate(chunk_order):
            start, stop = bounds[c], bounds[c + 1]
            positions = start + (np.arange(stop - start) if rng is None else rng.permutation(stop - start))
            matrix_rows = positions if self.rows is None else self.rows[positions]
            batch_bounds = np.cumsum([0] + [len(p) for p in np.array_split(positions, len(split[i]))])
            nnz = np.add.reduceat(self._host_lengths[matrix_rows], batch_bounds[:-1])
            plans.append((positions, matrix_rows, batch_bounds, nnz))
        shape = self._fixed_shape(plans, agree) if fixed_shape else None
        ahead = self._chunk(*self._matrix_range(bounds, chunk_order[0]))
        for i, c in enumerate(chunk_order):
            current = ahead
            if i + 1 < n_chunks:  # start the next copy before this chunk's batches are queued
                ahead = self._chunk(*self._matrix_range(bounds, chunk_order[i + 1]))
            yield from self._chunk_batches(self._matrix_range(bounds, c)[0], self._ready(current), *plans[i], shape,
                                           counts)

    def gather(self, rows: torch.Tensor) -> SparseCounts:
        """The fixed-shape batch of resident matrix ``rows`` (from ``batches(..., counts=False)``): no host
        synchronization and no shape that depends on the rows, so that a CUDA graph can record it."""
        return _select_rows(self.indptr, self.indices, self.data, rows, self._entry_bound, self.n_genes, sink=True)

    @property
    def entry_bound(self) -> int:
        """Entries of every fixed-shape batch (0 before the first; it grows when an epoch's batches need more)."""
        return self._entry_bound

    def _fixed_shape(self, plans, agree=None) -> tuple[int, int]:
        """``(rows, entries)`` of every batch of ``plans``: room for the largest batch plus the sink row (rounded up
        to a multiple of 8 rows), and the entry bound, raised if a batch exceeds it (the largest over the ranks where
        they ``agree``)."""
        most_rows = max(int(np.diff(batch_bounds).max()) for _, _, batch_bounds, _ in plans)
        most_entries = max(int(np.max(nnz)) for *_, nnz in plans)
        if agree is not None:
            most_rows, most_entries = agree(most_rows, most_entries)
        if most_entries > self._entry_bound:
            self._entry_bound = -(-int(most_entries * ENTRY_HEADROOM) // 1024) * 1024
        return -(-(most_rows + 1) // 8) * 8, self._entry_bound

    def _matrix_range(self, bounds: np.ndarray, chunk: int) -> tuple[int, int]:
        """Matrix rows ``first:stop`` spanning the positions of ``chunk`` (with other rows between, when selected)."""
        start, stop = bounds[chunk], bounds[chunk + 1]
        if self.placement == "resident":
            return 0, len(self._host_lengths)
        if self.rows is None:
            return int(start), int(stop)
        return int(self.rows[start]), int(self.rows[stop - 1]) + 1

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

    def _chunk_batches(self, first: int, chunk, positions: np.ndarray, matrix_rows: np.ndarray,
                       batch_bounds: np.ndarray, nnz: np.ndarray, shape: tuple[int, int] | None, counts: bool):
        """The batches of a chunk holding matrix rows from ``first`` on (its plan from :meth:`batches`)."""
        indptr, indices, data = chunk
        if shape is None:
            device_rows = torch.from_numpy(matrix_rows - first).to(self.device, non_blocking=True)
            device_positions = torch.from_numpy(positions).to(self.device, non_blocking=True)
            for a, b, batch_nnz in zip(batch_bounds[:-1], batch_bounds[1:], nnz):
                yield device_positions[a:b], _select_rows(indptr, indices, data, device_rows[a:b], int(batch_nnz),
                                                          self.n_genes)
            return
        # one upload per chunk of every batch's padded positions and rows
        padded = np.full((2, len(batch_bounds) - 1, shape[0]), -1, dtype=np.int64)
        for i, (a, b) in enumerate(zip(batch_bounds[:-1], batch_bounds[1:])):
            padded[0, i, :b - a], padded[1, i, :b - a] = positions[a:b], matrix_rows[a:b] - first
        device_positions, device_rows = torch.from_numpy(padded).to(self.device, non_blocking=True)
        for batch_positions, rows in zip(device_positions, device_rows):
            yield batch_positions, (_select_rows(indptr, indices, data, rows, shape[1], self.n_genes, sink=True)
                                    if counts else rows)


def _select_rows(indptr, indices, data, rows, n_entries, n_genes, *, sink=False) -> SparseCounts:
    """Rows ``rows`` of the CSR ``(indptr, indices, data)`` (−1: an empty row), ``n_entries`` entries in all: the
    batch's non-zero count, known from the host plan, or with ``sink``, the fixed-shape entry bound, the entries
    beyond the rows' own going to the last row (the sink) as zeros. No host synchronization either way. On CUDA the
    entries are gathered by one Triton kernel (:func:`.kernels.gather_rows`) instead of the dozen torch operations
    below, launched one by one (timings in ``BENCHMARKS.md``).

    The sink's columns cycle through the genes: a column may repeat there, which is harmless at value 0, but should
    not repeat thousands of times, which would serialize the atomic adds of a gene-wise gradient."""
    known = rows >= 0
    starts = indptr[rows.clamp_min(0)]
    lengths = torch.where(known, indptr[rows.clamp_min(0) + 1] - starts, 0)
    if sink:
        lengths = torch.cat([lengths[:-1], n_entries - lengths[:-1].sum(0, keepdim=True)])
    offsets = F.pad(torch.cumsum(lengths, 0), (1, 0))
    if kernels.AVAILABLE and rows.is_cuda:
        return SparseCounts(*kernels.gather_rows(indptr, indices, data, rows, offsets, n_entries, n_genes), offsets,
                            (len(rows), n_genes))
    entry_row = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths, output_size=n_entries)
    rank = torch.arange(n_entries, device=rows.device) - offsets[entry_row]  # an entry's place in its row
    position = rank + starts[entry_row]
    if not sink:
        return SparseCounts(entry_row, indices[position].long(), data[position], offsets, (len(rows), n_genes))
    in_sink = entry_row == len(rows) - 1
    position = position.masked_fill(in_sink, 0)
    return SparseCounts(entry_row, torch.where(in_sink, rank % n_genes, indices[position].long()),
                        data[position].masked_fill(in_sink, 0), offsets, (len(rows), n_genes))


def _too_large(device: torch.device, nbytes: int) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes > free / 2
