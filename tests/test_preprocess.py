import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from gmvae4p import keys, preprocess
from gmvae4p.data import CohortError, load_cohort, write_h5ad
from gmvae4p.preprocess import (_normalize_total_in_place, _subset_csr, filter_cells_genes, normalize_log1p_hvg,
                                qc_metrics, qc_normalize_hvg, qc_summary)

from conftest import COLUMNS, KANG, TINY, real_data


@pytest.fixture
def loaded():
    return load_cohort(None, **COLUMNS, simulate=TINY, seed=1)


def test_counts_kept_x_log_normalized_hvgs_flagged(loaded):
    raw = loaded.X.copy()
    out = qc_normalize_hvg(loaded, min_genes=50, min_cells=3, max_pct_mito=20.0, n_top_genes=100)
    kept = loaded.obs_names.get_indexer(out.obs_names)
    genes = loaded.var_names.get_indexer(out.var_names)
    counts = out.layers[keys.COUNTS]
    assert (counts != raw[kept][:, genes]).nnz == 0
    expected = sp.diags(1e4 / np.asarray(counts.sum(1)).ravel()) @ counts
    np.testing.assert_allclose(out.X.toarray(), np.log1p(expected.toarray()), rtol=1e-5, atol=1e-6)
    assert sp.issparse(out.X)
    assert out.var[keys.HIGHLY_VARIABLE].sum() == 100


def test_qc_removes_the_simulated_low_quality_cells_and_records_it(loaded):
    n_low = int(loaded.obs[keys.LOW_QUALITY].sum())
    out = qc_normalize_hvg(loaded, min_genes=0, min_cells=0, max_pct_mito=20.0, n_top_genes=None)
    assert n_low > 0 and not out.obs[keys.LOW_QUALITY].any()
    record = out.uns[keys.UNS_PREPROCESS]
    assert record["n_cells_removed_mito"] == n_low
    assert record["n_cells_out"] == loaded.n_obs - n_low
    assert out.var[keys.HIGHLY_VARIABLE].all()
    summary = qc_summary(out)
    assert summary["n_cells_out"] == out.n_obs and sum(summary["units_per_class"].values()) == TINY["n_patients"]


def test_gene_filter_counts_only_kept_cells(loaded):
    # a gene seen only in cells that QC removes must go too
    counts = loaded.X.tolil()
    low = np.flatnonzero(loaded.obs[keys.LOW_QUALITY])
    counts[:, 0] = 0
    counts[low[:3], 0] = 5
    loaded.X = counts.tocsr()
    out = qc_normalize_hvg(loaded, min_genes=0, min_cells=1, max_pct_mito=20.0, n_top_genes=None)
    assert loaded.var_names[0] not in out.var_names
    assert out.uns[keys.UNS_PREPROCESS]["n_genes_removed_min_cells"] >= 1


def test_refuses_to_run_twice_or_to_remove_everything(loaded):
    out = qc_normalize_hvg(loaded, n_top_genes=None, min_genes=10)
    with pytest.raises(CohortError, match="has been preprocessed"):
        qc_normalize_hvg(out)
    with pytest.raises(CohortError, match="QC removed every cell"):
        qc_normalize_hvg(loaded.copy(), min_genes=10**6)


def test_real_kang_data_preprocesses():
    adata = load_cohort(real_data(KANG), patient_key="patient", cell_type_key="cell_type")
    out = qc_normalize_hvg(adata, min_genes=20, max_pct_mito=None, n_top_genes=500)
    assert out.var[keys.HIGHLY_VARIABLE].sum() == 500
    assert out.n_obs > 0.95 * adata.n_obs


def test_in_place_normalization_equals_scanpys_across_row_blocks():
    counts = sp.random(50, 30, density=0.3, format="csr", dtype=np.float32, random_state=0)
    counts.data = np.ceil(counts.data * 10)
    counts[7] = 0  # a cell without counts stays zero
    counts.eliminate_zeros()
    expected = ad.AnnData(counts.copy())
    sc.pp.normalize_total(expected, target_sum=1e4)
    mine = counts.copy()
    _normalize_total_in_place(mine, 1e4, block_rows=8)
    np.testing.assert_allclose(mine.toarray(), expected.X.toarray(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_qc_metrics_are_scanpys_columns_and_values(loaded, dtype):
    loaded.X = loaded.X.astype(dtype)
    loaded.X[3] = 0  # a cell without counts
    loaded.X.data[:5] = 0  # explicit zeros are not detected genes
    mine, scanpys = loaded.copy(), loaded.copy()
    qc_metrics(mine)
    scanpys.var[keys.MITO] = mine.var[keys.MITO]
    sc.pp.calculate_qc_metrics(scanpys, qc_vars=[keys.MITO], percent_top=None, log1p=False, inplace=True)
    for ours, theirs in ((mine.obs, scanpys.obs), (mine.var, scanpys.var)):
        assert list(ours.columns) == list(theirs.columns)
        for column in ours.select_dtypes("number").columns:
            np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-5, err_msg=column)
    assert mine.var[keys.MITO].sum() > 0 and np.isnan(mine.obs[keys.PCT_MITO].iloc[3])


def test_subset_of_rows_and_columns_equals_scipys():
    rng = np.random.default_rng(0)
    x = sp.random(300, 50, density=0.2, format="csr", dtype=np.float32, random_state=0)
    for rows, cols in ((rng.random(300) < 0.7, rng.random(50) < 0.6), (rng.random(300) < 0.7, np.ones(50, bool)),
                       (np.ones(300, bool), rng.random(50) < 0.6), (np.zeros(300, bool), rng.random(50) < 0.6)):
        expected = x[rows][:, cols]
        mine = _subset_csr(x, rows, cols)
        assert mine.shape == expected.shape and (mine != expected).nnz == 0 and mine.has_sorted_indices
        squeezed = x.copy()
        mine = _subset_csr(squeezed, rows, cols, in_place=True)
        assert mine.shape == expected.shape and (mine != expected).nnz == 0 and mine.has_sorted_indices
        # no copy of the kept part, unless it is under half of the arrays (scipy then copies it, freeing them)
        assert np.shares_memory(mine.data, squeezed.data) == (mine.nnz >= x.nnz // 2)


def test_the_two_steps_give_qc_normalize_hvg_and_keep_an_untouched_cohort_as_it_is(loaded):
    settings = dict(min_genes=50, min_cells=3, max_pct_mito=20.0, n_top_genes=100)
    one = qc_normalize_hvg(loaded.copy(), **settings)
    two = filter_cells_genes(loaded, min_genes=50, min_cells=3, max_pct_mito=20.0)
    normalize_log1p_hvg(two, n_top_genes=100)
    assert (one.X != two.X).nnz == 0 and one.var[keys.HIGHLY_VARIABLE].equals(two.var[keys.HIGHLY_VARIABLE])
    assert one.uns[keys.UNS_PREPROCESS] == two.uns[keys.UNS_PREPROCESS]
    clean = loaded[~loaded.obs[keys.LOW_QUALITY]].copy()
    assert filter_cells_genes(clean, min_genes=0, min_cells=0) is clean  # nothing removed: no copy
    given_up = loaded.copy()
    three = filter_cells_genes(given_up, min_genes=50, min_cells=3, max_pct_mito=20.0, reuse_matrix=True)
    assert given_up.X is None
    normalize_log1p_hvg(three, n_top_genes=100)
    assert three.obs.equals(two.obs) and three.var.equals(two.var)
    assert (three.X != two.X).nnz == 0 and (three.layers[keys.COUNTS] != two.layers[keys.COUNTS]).nnz == 0


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_normalizing_into_a_file_writes_what_the_in_memory_steps_give(loaded, tmp_path, monkeypatch, dtype):
    loaded.X = loaded.X.astype(dtype)
    expected = qc_normalize_hvg(loaded.copy(), min_genes=50, n_top_genes=100)
    write_h5ad(expected, tmp_path / "expected.h5ad")
    adata = filter_cells_genes(loaded, min_genes=50)
    path = tmp_path / "preprocessed.h5ad"
    normalize_log1p_hvg(adata, n_top_genes=100, write_to=path)
    assert keys.COUNTS not in adata.layers and (adata.X != expected.X).nnz == 0  # memory: one copy, normalized
    written, reference = ad.read_h5ad(path), ad.read_h5ad(tmp_path / "expected.h5ad")
    assert (written.X != reference.X).nnz == 0 and written.X.dtype == reference.X.dtype
    assert (written.layers[keys.COUNTS] != reference.layers[keys.COUNTS]).nnz == 0
    assert written.layers[keys.COUNTS].dtype == reference.layers[keys.COUNTS].dtype
    assert written.var.equals(reference.var) and written.obs.equals(reference.obs)
    assert set(written.uns) == set(reference.uns) and written.uns["log1p"] == reference.uns["log1p"]
    before = path.read_bytes()

    def fails(*args):
        raise MemoryError("out of memory")

    monkeypatch.setattr(preprocess, "_normalize_log1p", fails)
    with pytest.raises(MemoryError):
        normalize_log1p_hvg(filter_cells_genes(loaded, min_genes=50), n_top_genes=100, write_to=path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["expected.h5ad", path.name]


def test_bad_settings_are_refused_before_the_cohort_is_touched(loaded):
    with pytest.raises(ValueError, match="n_top_genes must be positive"):
        qc_normalize_hvg(loaded, n_top_genes=0)
    assert keys.N_GENES not in loaded.obs and keys.UNS_PREPROCESS not in loaded.uns
