"""Read a cohort, check it against the data contract before any compute, write atomically.

The contract: raw integer counts in ``X`` or a named layer; ``obs`` columns for patient and cell type (and
optionally label, sample, batch) named by parameters; one label per unit (the sample when ``sample_key`` is set,
else the patient); at least two classes; unique gene names. Each failure raises :class:`CohortError` with one
sentence that names the column or parameter and says what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import keys
from . import BLOCK_ROWS
from .atomic import atomic_path
from .simulate import simulate_cohort

_CHUNK = 1 << 24  # values checked at a time, so validation never holds more than a few temporaries of this size


class CohortError(ValueError):
    """Input data that breaks the data contract."""


def load_cohort(
    path: str | os.PathLike | None = None,
    *,
    patient_key: str,
    cell_type_key: str,
    label_key: str | None = None,
    sample_key: str | None = None,
    batch_key: str | None = None,
    counts_layer: str | None = None,
    simulate: dict | None = None,
    seed: int = 0,
) -> ad.AnnData:
    """Read an ``.h5ad`` (or simulate a cohort when ``path`` is None), check it, and record the column roles.

    ``obs`` is checked before the counts are loaded. On return ``X`` holds the raw counts (copied from
    ``counts_layer`` when given) and ``adata.uns["gmvae4p"]["columns"]`` maps each role to its column.
    """
    columns = {"patient": patient_key, "cell_type": cell_type_key, "label": label_key, "sample": sample_key,
               "batch": batch_key}
    if path is None:
        from . import simulate as sim

        available = [sim.PATIENT, sim.CELL_TYPE, sim.LABEL, sim.BATCH]
        _check_columns_exist(columns, available, "the simulated cohort's obs")
        adata = simulate_cohort(**(simulate or {}), seed=seed).to_anndata()
        validate_cohort(adata, counts_layer=counts_layer, **{f"{role}_key": c for role, c in columns.items()})
        source = "simulated"
    else:
        backed = _open(Path(path))
        _check_obs(backed.obs, columns, f"{path}'s obs")
        if counts_layer is not None and counts_layer not in backed.layers:
            raise CohortError(f"counts_layer {counts_layer!r} is not a layer of {path} "
                              f"(layers: {list(backed.layers) or 'none'}).")
        adata = backed.to_memory()
        backed.file.close()
        source = str(path)
        _check_genes_and_counts(adata, counts_layer)  # obs was checked on the backed file
    if counts_layer is not None:
        adata.X = adata.layers[counts_layer]
    if not (sp.issparse(adata.X) and adata.X.format == "csr"):
        adata.X = sp.csr_matrix(adata.X)  # every later stage gathers rows of cells
    adata.uns[keys.UNS] = {"columns": {r: c for r, c in columns.items() if c is not None}, "source": source}
    return adata


def validate_cohort(
    adata: ad.AnnData,
    *,
    patient_key: str,
    cell_type_key: str,
    label_key: str | None = None,
    sample_key: str | None = None,
    batch_key: str | None = None,
    counts_layer: str | None = None,
) -> None:
    """Raise :class:`CohortError` at the first breach of the data contract; return None when all holds."""
    if not isinstance(adata, ad.AnnData):
        raise CohortError(f"expected an AnnData, got {type(adata).__name__}.")
    columns = {"patient": patient_key, "cell_type": cell_type_key, "label": label_key, "sample": sample_key,
               "batch": batch_key}
    _check_obs(adata.obs, columns, "adata.obs")
    _check_genes_and_counts(adata, counts_layer)


def _check_genes_and_counts(adata: ad.AnnData, counts_layer: str | None) -> None:
    if adata.n_vars == 0:
        raise CohortError("the AnnData has no genes.")
    duplicated = adata.var_names[adata.var_names.duplicated()].unique()
    if len(duplicated):
        raise CohortError(f"{len(duplicated)} gene names occur more than once in adata.var_names "
                          f"(e.g. {list(duplicated[:3])}); call adata.var_names_make_unique() first.")
    if counts_layer is not None and counts_layer not in adata.layers:
        raise CohortError(f"counts_layer {counts_layer!r} is not in adata.layers "
                          f"(layers: {list(adata.layers) or 'none'}).")
    where = "adata.X" if counts_layer is None else f"adata.layers[{counts_layer!r}]"
    check_counts(adata.X if counts_layer is None else adata.layers[counts_layer], where=where)


def check_counts(matrix, *, where: str = "adata.X") -> None:
    """Raise :class:`CohortError` unless ``matrix`` holds finite, non-negative integers."""
    if matrix is None:
        raise CohortError(f"{where} is empty; set counts_layer to the layer that holds raw counts.")
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).reshape(-1)
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        raise CohortError(f"{where} has dtype {values.dtype}; gmvae4p needs raw counts.")
    if np.issubdtype(values.dtype, np.integer):
        if values.size and values.min() < 0:
            raise CohortError(f"{where} holds negative values (minimum {values.min()}); gmvae4p needs raw counts.")
        return
    for start in range(0, values.size, _CHUNK):
        chunk = values[start:start + _CHUNK]
        bad = ~np.isfinite(chunk)
        if bad.any():
            raise CohortError(f"{where} holds NaN or infinite values ({chunk[bad][0]}); gmvae4p needs raw counts.")
        if (chunk < 0).any():
            raise CohortError(f"{where} holds negative values (minimum {chunk.min():.3g}), so it is not raw counts; "
                              "set counts_layer to the layer that holds them.")
        fractional = chunk != np.round(chunk)
        if fractional.any():
            raise CohortError(f"{where} holds non-integer values (e.g. {chunk[fractional][0]:.4g}), so it looks "
                              "normalized or log-transformed; set counts_layer to the layer with raw integer counts.")


def obs_column(adata: ad.AnnData, role: str) -> str | None:
    """The ``obs`` column playing ``role`` (see :data:`gmvae4p.keys.ROLES`), None for an unset optional role."""
    try:
        columns = adata.uns[keys.UNS]["columns"]
    except KeyError:
        raise KeyError(f"adata.uns[{keys.UNS!r}] has no column roles: load the data with "
                       "gmvae4p.data.load_cohort first (stage 01).") from None
    return columns.get(role)


def read_h5ad(path: str | os.PathLike, *, x: bool = True, layers: bool = True, mapped: bool = False) -> ad.AnnData:
    """``anndata.read_h5ad``; with ``x=False`` every element but ``X`` and ``raw``, which stay on disk (a stage that
    reads only the counts layer then holds one copy of the cells' matrix, not two; :func:`write_h5ad`'s ``x_from``
    copies them into the stage's output file); with ``layers=False`` the layers stay on disk too (a stage that reads
    the cells' annotations and embeddings only).

    ``mapped=True``: the dense arrays of ``X``, ``layers`` and ``obsm`` are mapped from the file, read-only
    (:class:`MappedArray`), where HDF5 stores them in one uncompressed block (as :func:`write_h5ad` does); the others
    are read. Every process that maps the file shares its pages, and a mapped array pickles as a reference to the
    file, so worker processes (:class:`~gmvae4p.classify.workers.FoldWorkers`) receive no copy of the samples. The
    file must not change in place while mapped (the stages replace files by renaming, which leaves a mapping valid).
    """
    if x and layers and not mapped:
        return ad.read_h5ad(path)
    with h5py.File(path, "r") as f:
        read = lambda element: _mapped(path, element) if mapped else ad.io.read_elem(element)
        elements = {name: ad.io.read_elem(f[name]) for name in f if name not in ("X", "raw", "layers", "obsm")}
        for name in ("layers", "obsm") if layers else ("obsm",):
            if name in f:
                elements[name] = {key: read(value) for key, value in f[name].items()}
        if x and "X" in f:
            elements["X"] = read(f["X"])
            if "raw" in f:
                elements["raw"] = ad.io.read_elem(f["raw"])
    return ad.AnnData(**elements)


@contextlib.contextmanager
def x_on_disk(path: str | os.PathLike):
    """``X`` of an ``.h5ad`` left on disk while the block is open: a sparse ``X`` as anndata's backed matrix, whose
    row slices are read when asked for; a dense one as the HDF5 dataset."""
    with h5py.File(path, "r") as f:
        yield ad.io.sparse_dataset(f["X"]) if isinstance(f["X"], h5py.Group) else f["X"]


def row_blocks(x, *, block_rows: int | None = None):
    """``(start, stop, x[start:stop])`` over the rows of ``x`` (dense, sparse, or on disk: :func:`x_on_disk`),
    ``block_rows`` (default :data:`BLOCK_ROWS`) at a time."""
    block_rows = block_rows or BLOCK_ROWS
    for start in range(0, x.shape[0], block_rows):
        stop = min(start + block_rows, x.shape[0])
        yield start, stop, x[start:stop]


class MappedArray(np.memmap):
    """A read-only array mapped from a file that pickles as (file, dtype, offset, shape): unpickled in another
    process it maps the same pages instead of carrying a copy. A slice or view of it pickles by value."""

    _whole = False

    @classmethod
    def open(cls, filename: str, dtype: str, offset: int, shape: tuple[int, ...]) -> MappedArray:
        array = cls(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape))
        array._whole = True
        return array

    def __array_finalize__(self, obj):
        super().__array_finalize__(obj)
        self._whole = False

    def __reduce__(self):
        if self._whole:
            return MappedArray.open, (self.filename, self.dtype.str, self.offset, self.shape)
        return np.asarray(self).__reduce__()


def map_arrays(arrays: dict[str, np.ndarray], folder: str | os.PathLike) -> dict[str, MappedArray]:
    """Each array written to ``folder/<name>.npy`` and mapped back from it, read-only (:class:`MappedArray`): for
    handing large arrays to other processes as references to one copy."""
    mapped = {}
    for name, array in arrays.items():
        path = Path(folder).resolve() / f"{name}.npy"
        np.save(path, np.ascontiguousarray(array))
        header = np.load(path, mmap_mode="r")  # where the numbers start, after the .npy header
        mapped[name] = MappedArray.open(os.fspath(path), header.dtype.str, header.offset, header.shape)
    return mapped


def _mapped(path, element):
    """An ``.h5ad`` element as a :class:`MappedArray` where it is a numeric dataset stored in one uncompressed
    block; else as anndata reads it."""
    if isinstance(element, h5py.Dataset) and element.ndim and element.dtype.kind in "biuf" and element.size:
        offset = element.id.get_offset()  # None unless contiguous, unfiltered and allocated
        if element.chunks is None and offset is not None:
            return MappedArray.open(os.fspath(Path(path).resolve()), element.dtype.str, offset, element.shape)
    return ad.io.read_elem(element)


def write_h5ad(adata: ad.AnnData, path: str | os.PathLike, *, x_from: str | os.PathLike | None = None,
               finish: Callable[[h5py.File], None] | None = None) -> Path:
    """Write ``adata`` to ``path`` through a temporary file in the same folder, so a reader never sees half a file.

    ``x_from``: an ``.h5ad`` of the same cells and genes whose ``X`` (and ``raw``, where it has one, and each layer
    ``adata`` lacks) is copied into the file, for an ``adata`` read without them (:func:`read_h5ad`) or that let
    them go (:meth:`gmvae4p.gmvae.model.GMVAE.fit`'s ``release_counts``); HDF5 copies them a chunk at a time.
    ``finish(file)``: called with the temporary file open for writing, before it replaces ``path``, to move or add
    elements (:func:`gmvae4p.preprocess.normalize_log1p_hvg` writes the counts before it normalizes them).
    """
    path = Path(path)
    if x_from is not None:
        if adata.X is not None:
            raise ValueError("write_h5ad: x_from is for an AnnData read without X, and this one has X.")
        with h5py.File(x_from, "r") as source:
            if _shape(source["X"]) != adata.shape:
                raise ValueError(f"write_h5ad: X of {x_from} is {_shape(source['X'])}, not {adata.shape}.")
    # pandas ≥ 3 makes every text column a nullable string array, which anndata writes only when allowed
    with atomic_path(path) as tmp, ad.settings.override(allow_write_nullable_strings=True):
        adata.write_h5ad(tmp)
        if x_from is not None:
            with h5py.File(x_from, "r") as source, h5py.File(tmp, "a") as target:
                for name in ("X", "raw"):
                    if name in source:
                        source.copy(source[name], target, name)
                for name in source.get("layers", {}):
                    if name not in adata.layers:
                        source.copy(source[f"layers/{name}"], target["layers"], name)
        if finish is not None:
            with h5py.File(tmp, "a") as target:
                finish(target)
    return path


def _shape(element) -> tuple:
    """Rows and columns of an ``.h5ad`` element: a sparse matrix's group records them, a dense dataset has them."""
    return tuple(int(n) for n in (element.attrs["shape"] if isinstance(element, h5py.Group) else element.shape))


def write_csv(frame: pd.DataFrame, path: str | os.PathLike, *, index: bool = False) -> Path:
    """Write a table atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)
    return path


def _open(path: Path) -> ad.AnnData:
    if not path.is_file():
        raise CohortError(f"data path {path} does not exist.")
    if path.stat().st_size == 0:
        raise CohortError(f"data path {path} is an empty file, not an AnnData .h5ad.")
    try:
        return ad.read_h5ad(path, backed="r")
    except Exception as err:  # h5py and anndata raise many kinds for a file that is not an AnnData
        raise CohortError(f"data path {path} could not be read as an AnnData .h5ad ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'no detail'}).") from err


def _check_columns_exist(columns: dict, available, where: str) -> None:
    for role, column in columns.items():
        if column is not None and column not in available:
            raise CohortError(f"{role}_key {column!r} is not a column of {where}; "
                              f"choose one of {list(available)[:30]}.")


def _check_obs(obs: pd.DataFrame, columns: dict, where: str) -> None:
    if len(obs) == 0:
        raise CohortError(f"{where} has no cells.")
    _check_columns_exist(columns, obs.columns, where)
    for role, column in columns.items():
        if column is not None:
            missing = int(obs[column].isna().sum())
            if missing:
                raise CohortError(f"{role}_key column {column!r} has no value for {missing} cells; "
                                  "fill or drop them first.")
    patient, sample, label = columns["patient"], columns["sample"], columns["label"]
    if sample is not None:
        patients_per_sample = obs.groupby(sample, observed=True)[patient].nunique()
        shared = patients_per_sample[patients_per_sample > 1]
        if len(shared):
            raise CohortError(f"sample {shared.index[0]!r} (sample_key {sample!r}) holds cells of "
                              f"{shared.iloc[0]} patients (patient_key {patient!r}); a sample must come from one "
                              "patient.")
    if label is None:
        return
    unit, unit_role = (sample, "sample") if sample is not None else (patient, "patient")
    labels_per_unit = obs.groupby(unit, observed=True)[label].unique()
    mixed = labels_per_unit[labels_per_unit.map(len) > 1]
    if len(mixed):
        found = sorted(map(str, mixed.iloc[0]))
        hint = "" if sample is not None else " (set sample_key if a patient has several samples)"
        raise CohortError(f"{unit_role} {mixed.index[0]!r} has {len(found)} labels in label_key column {label!r} "
                          f"({', '.join(found)}); each {unit_role} needs exactly one{hint}.")
    classes = pd.unique(obs[label].astype(str))
    if len(classes) < 2:
        raise CohortError(f"label_key column {label!r} has a single class ({classes[0]!r}); a classifier needs at "
                          "least two (set label_key to null to run the cell-level stages only).")
