import pickle
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gmvae4p import keys
from gmvae4p.data import (CohortError, MappedArray, load_cohort, map_arrays, obs_column, read_h5ad, validate_cohort,
                          write_h5ad, x_on_disk)

from conftest import COLUMNS, KANG, KANG_PAIRED, TINY, real_data


def _refused(adata, message, **columns):
    with pytest.raises(CohortError) as err:
        validate_cohort(adata, **{**COLUMNS, **columns})
    text = str(err.value)
    assert message in text
    assert text.endswith(".") and not re.search(r"[.;:]\s+[A-Z]", text), f"not one sentence: {text}"
    return text


def test_valid_cohort_passes(tiny_cohort):
    assert validate_cohort(tiny_cohort, **COLUMNS) is None


def test_log_normalized_matrix_is_refused(tiny_cohort):
    adata = tiny_cohort.copy()
    adata.X = adata.X.copy()
    adata.X.data = np.log1p(adata.X.data)
    text = _refused(adata, "non-integer values")
    assert "adata.X" in text and "counts_layer" in text


@pytest.mark.parametrize("value, message", [(-1.0, "negative values"), (np.nan, "NaN or infinite"),
                                            (np.inf, "NaN or infinite")])
def test_negative_nan_and_inf_counts_are_refused(tiny_cohort, value, message):
    adata = tiny_cohort.copy()
    adata.X = adata.X.copy()
    adata.X.data[5] = value
    _refused(adata, message)


def test_dense_integer_counts_pass_and_dense_negative_fails(tiny_cohort):
    adata = tiny_cohort.copy()
    adata.X = adata.X.toarray().astype(np.int32)
    validate_cohort(adata, **COLUMNS)
    adata.X[0, 0] = -3
    _refused(adata, "negative values (minimum -3)")


def test_missing_cell_type_column_is_refused_by_parameter_and_name(tiny_cohort):
    adata = tiny_cohort.copy()
    del adata.obs["ct_cov"]
    text = _refused(adata, "cell_type_key 'ct_cov' is not a column of adata.obs")
    assert "ind_cov" in text  # says what is there to choose from


def test_patient_with_two_labels_is_refused(tiny_cohort):
    adata = tiny_cohort.copy()
    first = adata.obs["ind_cov"] == "P001"
    labels = adata.obs["disease_cov"].astype(str).to_numpy()
    labels[np.flatnonzero(first)[0]] = "healthy" if labels[first][1] == "SLE" else "SLE"
    adata.obs["disease_cov"] = labels
    _refused(adata, "patient 'P001' has 2 labels in label_key column 'disease_cov'")


def test_single_class_is_refused_unless_label_key_is_null(tiny_cohort):
    adata = tiny_cohort.copy()
    adata.obs["disease_cov"] = "SLE"
    _refused(adata, "label_key column 'disease_cov' has a single class ('SLE')")
    validate_cohort(adata, **{**COLUMNS, "label_key": None})


def test_duplicate_gene_names_are_refused(tiny_cohort):
    adata = tiny_cohort.copy()
    names = adata.var_names.to_numpy().copy()
    names[1] = names[0]
    adata.var_names = names
    _refused(adata, "gene names occur more than once")


def test_missing_values_and_samples_spanning_patients_are_refused(tiny_cohort):
    adata = tiny_cohort.copy()
    adata.obs["ind_cov"] = adata.obs["ind_cov"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("ind_cov")] = None
    _refused(adata, "patient_key column 'ind_cov' has no value for 1 cells")
    adata = tiny_cohort.copy()
    adata.obs["sample"] = "S1"
    _refused(adata, "sample 'S1' (sample_key 'sample') holds cells of", sample_key="sample")


def test_counts_layer_is_used_and_a_missing_one_is_refused(tiny_cohort):
    adata = tiny_cohort.copy()
    adata.layers["raw"] = adata.X.copy()
    adata.X = adata.X.copy()
    adata.X.data = np.log1p(adata.X.data)
    validate_cohort(adata, **COLUMNS, counts_layer="raw")
    _refused(adata, "counts_layer 'umi' is not in adata.layers", counts_layer="umi")


def test_non_anndata_is_refused():
    with pytest.raises(CohortError, match="expected an AnnData, got DataFrame"):
        validate_cohort(pd.DataFrame(), **COLUMNS)


@pytest.mark.parametrize("content, message", [(b"", "is an empty file"), (b"not hdf5 at all", "could not be read")])
def test_unreadable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "cohort.h5ad"
    path.write_bytes(content)
    with pytest.raises(CohortError, match=message):
        load_cohort(path, **COLUMNS)
    with pytest.raises(CohortError, match="does not exist"):
        load_cohort(tmp_path / "absent.h5ad", **COLUMNS)


def test_load_reads_a_file_moves_the_counts_layer_to_x_and_records_roles(tmp_path, tiny_cohort):
    adata = tiny_cohort.copy()
    adata.layers["raw"] = adata.X.copy()
    adata.X = sp.csr_matrix(adata.shape, dtype=np.float32)
    adata.write_h5ad(tmp_path / "c.h5ad")
    loaded = load_cohort(tmp_path / "c.h5ad", **COLUMNS, counts_layer="raw")
    assert (loaded.X != tiny_cohort.X).nnz == 0
    assert obs_column(loaded, "cell_type") == "ct_cov" and obs_column(loaded, "sample") is None
    assert loaded.uns[keys.UNS]["source"] == str(tmp_path / "c.h5ad")


def test_columns_of_a_file_are_checked_before_the_counts_are_loaded(tmp_path, tiny_cohort, monkeypatch):
    tiny_cohort.write_h5ad(tmp_path / "c.h5ad")
    monkeypatch.setattr(ad.AnnData, "to_memory", lambda self: pytest.fail("counts were loaded"))
    with pytest.raises(CohortError, match="patient_key 'donor'"):
        load_cohort(tmp_path / "c.h5ad", **{**COLUMNS, "patient_key": "donor"})


def test_simulated_cohort_checks_keys_before_simulating(monkeypatch):
    import gmvae4p.data.io as io

    monkeypatch.setattr(io, "simulate_cohort", lambda **kw: pytest.fail("simulated before checking keys"))
    with pytest.raises(CohortError, match="cell_type_key 'cell_type' is not a column of the simulated cohort"):
        load_cohort(None, **{**COLUMNS, "cell_type_key": "cell_type"}, simulate=TINY)


def test_obs_column_names_the_missing_step(tiny_cohort):
    with pytest.raises(KeyError, match="load_cohort first"):
        obs_column(tiny_cohort, "patient")


def test_write_is_atomic_and_a_failed_write_keeps_the_old_file(tmp_path, tiny_cohort, monkeypatch):
    path = tmp_path / "data" / "out.h5ad"
    write_h5ad(tiny_cohort, path)
    before = path.read_bytes()

    def broken_write(self, filename, *args, **kwargs):
        open(filename, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_h5ad(tiny_cohort, path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["out.h5ad"]  # no temporary left behind


def test_cells_read_without_x_are_written_with_the_x_of_their_source_file(tmp_path, tiny_cohort):
    source = tiny_cohort.copy()
    source.layers[keys.COUNTS] = source.X.copy()
    source.X = source.X.multiply(0.5).tocsr()
    source.raw = source.copy()  # a user's raw stays in the file as it was
    write_h5ad(source, tmp_path / "source.h5ad")
    cells = read_h5ad(tmp_path / "source.h5ad", x=False)
    assert cells.X is None and (cells.layers[keys.COUNTS] != source.layers[keys.COUNTS]).nnz == 0
    annotations = read_h5ad(tmp_path / "source.h5ad", x=False, layers=False)  # what stage 04 reads
    assert annotations.X is None and not annotations.layers and annotations.obs.equals(source.obs)
    cells.obsm["added"] = np.ones((cells.n_obs, 2))
    with pytest.raises(ValueError, match="x_from is for an AnnData read without X"):
        write_h5ad(source, tmp_path / "out.h5ad", x_from=tmp_path / "source.h5ad")
    with pytest.raises(ValueError, match=r"X of .* is \(800, 300\), not \(10, 300\)"):
        write_h5ad(cells[:10].copy(), tmp_path / "out.h5ad", x_from=tmp_path / "source.h5ad")
    assert not (tmp_path / "out.h5ad").exists()
    del cells.layers[keys.COUNTS]  # let go of, as GMVAE.fit(release_counts=True) does: copied from the source too
    write_h5ad(cells, tmp_path / "out.h5ad", x_from=tmp_path / "source.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert (back.X != source.X).nnz == 0 and "added" in back.obsm and back.obs.equals(source.obs)
    assert (back.layers[keys.COUNTS] != source.layers[keys.COUNTS]).nnz == 0
    assert back.raw is not None and (back.raw.X != source.raw.X).nnz == 0


def test_mapped_samples_equal_the_read_ones_and_pickle_as_a_reference_to_the_file(tmp_path):
    rng = np.random.default_rng(0)
    samples = ad.AnnData(rng.normal(size=(30, 40)).astype(np.float32),
                         obs=pd.DataFrame({"unit": [f"u{i % 6}" for i in range(30)]}, index=[f"s{i}" for i in range(30)]))
    samples.layers[keys.COUNTS] = rng.poisson(3.0, (30, 40)).astype(np.float32)
    samples.obsm["states"] = np.where(rng.random((30, 500)) < 0.1, np.nan, rng.normal(size=(30, 500))).astype(np.float32)
    samples.obsm["proportions"] = pd.DataFrame(rng.random((30, 3)), index=samples.obs_names, columns=list("abc"))
    samples.obsm["sparse"] = sp.random(30, 8, density=0.3, format="csr", random_state=0)
    write_h5ad(samples, tmp_path / "samples.h5ad")
    mapped = read_h5ad(tmp_path / "samples.h5ad", mapped=True)
    for value in (mapped.X, mapped.layers[keys.COUNTS], mapped.obsm["states"]):
        assert isinstance(value, MappedArray) and not value.flags.writeable
    assert np.array_equal(mapped.X, samples.X) and np.array_equal(mapped.layers[keys.COUNTS], samples.layers[keys.COUNTS])
    assert np.array_equal(mapped.obsm["states"], samples.obsm["states"], equal_nan=True)
    assert mapped.obsm["proportions"].equals(samples.obsm["proportions"]) and mapped.obs.equals(samples.obs)
    assert (mapped.obsm["sparse"] != samples.obsm["sparse"]).nnz == 0  # not one block of numbers: read
    with pytest.raises(ValueError, match="read-only"):
        mapped.X[0, 0] = 1.0
    whole = pickle.dumps(mapped.obsm["states"])
    assert len(whole) < 1_000 < mapped.obsm["states"].nbytes  # the file's name and where, not the numbers
    back = pickle.loads(whole)
    assert isinstance(back, MappedArray) and np.array_equal(back, samples.obsm["states"], equal_nan=True)
    part = pickle.loads(pickle.dumps(mapped.X[5:9, 2:]))  # a view pickles by value
    assert type(part) is np.ndarray and np.array_equal(part, samples.X[5:9, 2:])
    assert np.array_equal(pickle.loads(pickle.dumps(mapped)).X, samples.X)
    arrays = map_arrays({"states": samples.obsm["states"], "columns": samples.X[:, ::2]}, tmp_path)
    for name, original in (("states", samples.obsm["states"]), ("columns", samples.X[:, ::2])):
        back = pickle.loads(pickle.dumps(arrays[name]))
        assert isinstance(back, MappedArray) and np.array_equal(back, original, equal_nan=True)


def test_x_on_disk_gives_blocks_of_rows_of_the_file_s_x(tmp_path, tiny_cohort):
    write_h5ad(tiny_cohort, tmp_path / "cells.h5ad")
    with x_on_disk(tmp_path / "cells.h5ad") as x:
        assert x.shape == tiny_cohort.shape
        assert (x[100:250] != tiny_cohort.X[100:250]).nnz == 0


def test_real_kang_data_loads_without_labels():
    adata = load_cohort(real_data(KANG), patient_key="patient", cell_type_key="cell_type")
    assert adata.shape == (12261, 1287)
    assert adata.obs["patient"].nunique() == 8
    with pytest.raises(CohortError, match="single class"):
        load_cohort(KANG, patient_key="patient", cell_type_key="cell_type", label_key="condition")


def test_real_paired_data_uses_samples_as_units():
    path = real_data(KANG_PAIRED)
    with pytest.raises(CohortError, match="patient '101' has 2 labels"):
        load_cohort(path, patient_key="patient", cell_type_key="cell_type", label_key="condition")
    adata = load_cohort(path, patient_key="patient", cell_type_key="cell_type", label_key="condition",
                        sample_key="sample")
    assert adata.obs["sample"].nunique() == 4
