import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from gmvae4p import keys
from gmvae4p.data import CohortError, load_cohort
from gmvae4p.preprocess import _normalize_total_in_place, qc_normalize_hvg, qc_summary

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
