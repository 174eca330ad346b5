"""The GMVAE's training-set file: counts, components and the validation split, readable with h5py alone.

:class:`gmvae4p.gmvae.model.GMVAE` writes it from an AnnData; the torchrun entry (:mod:`.train`) and the benchmark
read it without anndata. Rows are stored in a random order (``cell_index`` maps each stored row back to its cell),
so that contiguous DDP shards and streamed chunks are random samples of the cohort. A rank reads only its shard.

Layout (HDF5): ``indptr`` int64, ``indices`` int32, ``data`` float32 (the CSR of raw counts, stored rows × genes),
``components`` int64 (component of each stored row, −1 when unknown), ``validation`` bool (held-out patients),
``cell_index`` int64, ``genes`` and ``component_names`` (strings); attribute ``format``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp
import torch

from ..data import BLOCK_ROWS
from ..data.atomic import atomic_path

FORMAT = "gmvae4p-trainset-2"
"""Version 2: each row's entries in canonical form (sorted columns, no repeats)."""


@dataclasses.dataclass
class Shard:
    """Stored rows ``start:stop`` of a training set."""

    counts: sp.csr_matrix | None
    components: np.ndarray
    validation: np.ndarray
    cell_index: np.ndarray
    start: int
    stop: int
    n_cells: int
    genes: list[str]
    component_names: list[str]


def write_trainset(path: str | os.PathLike, counts: sp.csr_matrix, components: np.ndarray, *,
                   component_names: list[str], genes: list[str], validation: np.ndarray, seed: int = 0,
                   columns: np.ndarray | None = None) -> Path:
    """Write cells × genes ``counts`` with their ``components`` (−1: unknown) and ``validation`` mask, shuffled.
    ``columns``: the columns of ``counts`` that are ``genes``, in their order (default: every column), taken a block
    of rows at a time, so that no copy of those columns exists beside ``counts``."""
    counts = sp.csr_matrix(counts)
    if not counts.has_canonical_format:  # a repeated (row, column) entry is one count: readers rely on one entry each
        counts = counts.copy()
        counts.sum_duplicates()
    n_cells = counts.shape[0]
    components, validation = np.asarray(components, dtype=np.int64), np.asarray(validation, dtype=bool)
    if len(components) != n_cells or len(validation) != n_cells:
        raise ValueError("components and validation need one entry per cell (row of counts).")
    if columns is not None and np.array_equal(columns, np.arange(counts.shape[1])):
        columns = None
    if len(genes) != (counts.shape[1] if columns is None else len(columns)):
        raise ValueError(f"genes has {len(genes)} names for "
                         f"{counts.shape[1] if columns is None else len(columns)} columns of counts.")
    if components.max(initial=-1) >= len(component_names):
        raise ValueError("a component index is out of range of component_names.")
    order = np.random.default_rng(seed).permutation(n_cells)
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(_row_entries(counts, columns)[order], out=indptr[1:])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f["indptr"] = indptr
        indices = f.create_dataset("indices", (indptr[-1],), dtype=np.int32)
        data = f.create_dataset("data", (indptr[-1],), dtype=np.float32)
        for start in range(0, n_cells, BLOCK_ROWS):  # shuffled a block of rows at a time: no second copy of counts
            stop = min(start + BLOCK_ROWS, n_cells)
            block = counts[order[start:stop]]
            if columns is not None:
                block = block[:, columns]
                block.sort_indices()
            indices[indptr[start]:indptr[stop]] = block.indices
            data[indptr[start]:indptr[stop]] = block.data
        f["components"] = components[order]
        f["validation"] = validation[order]
        f["cell_index"] = order.astype(np.int64)
        f["genes"] = np.asarray(genes, dtype=object).astype("S")
        f["component_names"] = np.asarray(component_names, dtype=object).astype("S")
    return Path(path)


def _row_entries(counts: sp.csr_matrix, columns: np.ndarray | None) -> np.ndarray:
    """Stored entries of each row of ``counts`` in ``columns`` (all: ``None``), a block of rows at a time."""
    if columns is None:
        return np.diff(counts.indptr)
    kept = np.zeros(counts.shape[1], dtype=bool)
    kept[columns] = True
    entries = np.empty(counts.shape[0], dtype=np.int64)
    for start in range(0, counts.shape[0], BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, counts.shape[0])
        first, last = counts.indptr[start], counts.indptr[stop]
        running = np.concatenate([[0], np.cumsum(kept[counts.indices[first:last]])])
        bounds = counts.indptr[start:stop + 1] - first
        entries[start:stop] = running[bounds[1:]] - running[bounds[:-1]]
    return entries


def shard_bounds(n_cells: int, rank: int, world_size: int) -> tuple[int, int]:
    """Stored rows of ``rank``: contiguous, sizes differing by at most one."""
    bounds = np.linspace(0, n_cells, world_size + 1).round().astype(np.int64)
    return int(bounds[rank]), int(bounds[rank + 1])


def read_shard(path: str | os.PathLike, rank: int = 0, world_size: int = 1, *, counts: bool = True) -> Shard:
    """The rows of ``rank`` out of ``world_size`` (all rows by default), read without touching the others; with
    ``counts=False`` all but the counts (``Shard.counts`` None: :meth:`.batches.CSRBatches.from_trainset` reads them
    where they are to be kept)."""
    with _open(path) as f:
        n_cells = len(f["components"])
        start, stop = shard_bounds(n_cells, rank, world_size)
        genes = [g.decode() for g in f["genes"][:]]
        matrix = None
        if counts:  # through the readers CSRBatches.from_trainset uses: one reading of the layout
            indptr, _ = read_indptr(path, start, stop)
            entries = {"indices": torch.empty(int(indptr[-1]), dtype=torch.int32),
                       "data": torch.empty(int(indptr[-1]), dtype=torch.float32)}
            read_entries(path, start, entries)
            matrix = sp.csr_matrix((entries["data"].numpy(), entries["indices"].numpy(), indptr),
                                   shape=(stop - start, len(genes)))
        return Shard(counts=matrix, components=f["components"][start:stop], validation=f["validation"][start:stop],
                     cell_index=f["cell_index"][start:stop], start=start, stop=stop, n_cells=n_cells, genes=genes,
                     component_names=[c.decode() for c in f["component_names"][:]])


ENTRY_BLOCK = 1 << 24
"""Entries read at a time by :func:`read_entries`."""


def read_indptr(path: str | os.PathLike, start: int, stop: int) -> tuple[np.ndarray, int]:
    """Row pointers of stored rows ``start:stop`` (from 0) and the number of genes."""
    with _open(path) as f:
        indptr = f["indptr"][start:stop + 1]
        return indptr - indptr[0], len(f["genes"])


def read_entries(path: str | os.PathLike, start: int, arrays: dict) -> None:
    """The ``indices`` and ``data`` entries of the stored rows from ``start`` on into the torch tensors of
    ``arrays`` (one entry each, filled from the first), :data:`ENTRY_BLOCK` entries at a time: read straight into
    host tensors, through one block-sized host buffer into device tensors."""
    with _open(path) as f:
        first = int(f["indptr"][start])
        for name, target in arrays.items():
            source, n = f[name], target.numel()
            buffer = None if target.device.type == "cpu" else np.empty(min(n, ENTRY_BLOCK), dtype=source.dtype)
            for lo in range(0, n, ENTRY_BLOCK):
                hi = min(lo + ENTRY_BLOCK, n)
                if buffer is None:
                    source.read_direct(target.numpy(), np.s_[first + lo:first + hi], np.s_[lo:hi])
                else:
                    source.read_direct(buffer, np.s_[first + lo:first + hi], np.s_[:hi - lo])
                    target[lo:hi].copy_(torch.from_numpy(buffer[:hi - lo]))


def _open(path: str | os.PathLike) -> h5py.File:
    if not Path(path).is_file():
        raise FileNotFoundError(f"training set {path} does not exist: GMVAE.fit writes it (write_trainset).")
    f = h5py.File(path, "r")
    if f.attrs.get("format") != FORMAT:
        found = f.attrs.get("format")
        f.close()
        raise ValueError(f"{path} is not a gmvae4p training set of this version (format {found!r}, not {FORMAT!r}): "
                         "write it again (GMVAE.fit does).")
    return f
