import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import anndata as ad

from gmvae4p import keys
from gmvae4p.data import io, read_h5ad, write_h5ad, x_on_disk
from gmvae4p.modalities import communication, expression_states, ligand_receptor_pairs, make_pseudobulk, states
from gmvae4p.keys import MIXTURE, WHOLE
from gmvae4p.pseudobulk import PseudobulkError, plan_mixtures, pseudobulk_counts

TYPES = ["B", "CD4 T", "Mono", "NK"]
# Real pairs of liana's consensus resource, a receptor complex among them (checked by the test that uses them).
LR_GENES = ["LGALS9", "PTPRC", "CD44", "TGFB1", "TGFBR1", "TGFBR2"]


def _cohort(seed=0, n_cells=240):
    rng = np.random.default_rng(seed)
    genes = LR_GENES + [f"G{i}" for i in range(30)]
    obs = pd.DataFrame({"ind_cov": rng.choice(["P1", "P2", "P3"], n_cells),
                        "ct_cov": rng.choice(TYPES, n_cells), "disease_cov": "healthy"},
                       index=[f"c{i}" for i in range(n_cells)])
    obs.loc[obs["ind_cov"] == "P3", "disease_cov"] = "SLE"
    obs.loc[(obs["ind_cov"] == "P2") & (obs["ct_cov"] == "NK"), "ct_cov"] = "B"  # P2 has no NK cells
    counts = sp.random(n_cells, len(genes), density=0.3, format="csr", random_state=seed, dtype=np.float32)
    counts.data = np.ceil(counts.data * 6)
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=genes))
    adata.layers[keys.COUNTS] = counts
    adata.obsm[keys.X_GMVAE_ZSCORE] = rng.normal(size=(n_cells, 3)).astype(np.float32)
    adata.obsm[keys.X_GMVAE] = rng.normal(size=(n_cells, 3)).astype(np.float32)
    adata.uns[keys.UNS] = {"columns": {"patient": "ind_cov", "cell_type": "ct_cov", "label": "disease_cov"}}
    return adata


def test_each_mixture_has_n_cells_drawn_from_its_own_unit_and_whole_rows_take_every_cell_once():
    adata = _cohort()
    plan = plan_mixtures(adata, n_samples=6, n_cells=50, proportions="dirichlet", sparse_prob=0.5, progress=False)
    obs, weights = plan.obs, plan.weights
    assert list(obs["kind"].value_counts().sort_index()) == [3 * 6, 3]
    patient_of_cell = adata.obs["ind_cov"].to_numpy()
    for i in range(len(obs)):
        row = weights[i]
        assert set(patient_of_cell[row.indices]) == {obs["patient"].iloc[i]}
        expected = 50 if obs["kind"].iloc[i] == MIXTURE else int((patient_of_cell == obs["unit"].iloc[i]).sum())
        assert row.sum() == expected == obs["n_cells"].iloc[i]
        if obs["kind"].iloc[i] == WHOLE:
            assert set(row.data) == {1.0}
    # int(K · 0.5) of a unit's K types are zeroed: at most 2 of 4 types (P1, P3), 2 of 3 (P2, no NK) drawn
    drawn_types = (plan.cells_per_type > 0).sum(1)[obs["kind"].to_numpy() == MIXTURE]
    assert drawn_types.max() <= 2 and drawn_types.min() >= 1
    assert (plan.cells_per_type[(obs["patient"] == "P2").to_numpy(), TYPES.index("NK")] == 0).all()


def test_unit_proportions_keep_each_units_composition_up_to_sampling_noise():
    adata = _cohort(n_cells=3000)
    plan = plan_mixtures(adata, n_samples=40, n_cells=400, proportions="unit", progress=False)
    mixture = (plan.obs["kind"] == MIXTURE).to_numpy()
    for unit in ("P1", "P2", "P3"):
        own = (adata.obs["ind_cov"] == unit).to_numpy()
        expected = adata.obs.loc[own, "ct_cov"].value_counts(normalize=True).reindex(TYPES, fill_value=0).to_numpy()
        rows = mixture & (plan.obs["unit"] == unit).to_numpy()
        drawn = plan.cells_per_type[rows] / 400
        assert np.abs(drawn.mean(0) - expected).max() < 0.02  # mean of 40 draws of 400 cells
        assert (drawn > 0).sum(1).min() == (expected > 0).sum()  # no type left out
        assert drawn.std(0).max() > 0  # multinomial noise, not one fixed mixture


def test_pseudobulk_counts_are_exactly_the_sum_of_the_drawn_cells():
    adata = _cohort()
    plan = plan_mixtures(adata, n_samples=4, n_cells=30, progress=False)
    dense = adata.layers[keys.COUNTS].toarray()
    expected = np.stack([np.sum([dense[c] * w for c, w in zip(row.indices, row.data)], axis=0)
                         for row in plan.weights])
    np.testing.assert_array_equal(pseudobulk_counts(adata, plan), expected)


def test_same_seed_same_samples_other_seed_other_samples():
    adata = _cohort()
    first, again, other = (plan_mixtures(adata, n_samples=4, n_cells=30, seed=s, progress=False) for s in (1, 1, 2))
    assert (first.weights != again.weights).nnz == 0 and first.obs.equals(again.obs)
    assert (first.weights != other.weights).nnz > 0


def test_states_are_mean_zscores_of_the_drawn_cells_per_type_and_missing_types_are_nan():
    adata = _cohort()
    plan = plan_mixtures(adata, n_samples=5, n_cells=40, progress=False)
    values, names = states(adata, plan)
    assert values.shape == (len(plan.obs), len(TYPES) * 3) and names[:2] == ["B|z0", "B|z1"]
    zscore, cell_types = adata.obsm[keys.X_GMVAE_ZSCORE], adata.obs["ct_cov"].to_numpy()
    for i in range(len(plan.obs)):
        row = plan.weights[i]
        for k, t in enumerate(TYPES):
            mine = cell_types[row.indices] == t
            got = values[i, k * 3:(k + 1) * 3]
            if mine.any():
                expected = np.average(zscore[row.indices[mine]], axis=0, weights=row.data[mine])
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
            else:
                assert np.isnan(got).all()


def test_expression_states_read_the_ranked_genes_or_else_the_most_variable_ones_of_x():
    adata = _cohort()
    plan = plan_mixtures(adata, n_samples=5, n_cells=40, progress=False)
    dense = adata.X.toarray()
    expected = adata.var_names[np.sort(np.argsort(-dense.var(0), kind="stable")[:4])]
    _, names = expression_states(adata, plan, n_genes=4)
    assert [n.split("|")[1] for n in names[:4]] == list(expected) and names[0].startswith("B|")
    adata.var["highly_variable_rank"] = np.r_[[np.nan] * 30, np.arange(6.0)]  # the last six genes, ranked
    values, names = expression_states(adata, plan, n_genes=4)
    assert [n.split("|")[1] for n in names[:4]] == list(adata.var_names[30:34])
    b_cells = adata.obs["ct_cov"].to_numpy() == "B"
    sample = next(i for i in range(len(plan.obs)) if b_cells[plan.weights[i].indices].any())
    row = plan.weights[sample]
    mine = b_cells[row.indices]
    np.testing.assert_allclose(values[sample, :4], np.average(dense[row.indices[mine]][:, 30:34], axis=0,
                                                              weights=row.data[mine]), rtol=1e-5)


def test_expression_states_read_from_disk_in_blocks_equal_those_read_from_memory(tmp_path, monkeypatch):
    adata = _cohort()
    plan = plan_mixtures(adata, n_samples=5, n_cells=40, progress=False)
    expected, names = expression_states(adata, plan, n_genes=4)
    write_h5ad(adata, tmp_path / "cells.h5ad")
    monkeypatch.setattr(io, "BLOCK_ROWS", 37)  # several blocks, the last one short
    with x_on_disk(tmp_path / "cells.h5ad") as x:
        values, on_disk_names = expression_states(read_h5ad(tmp_path / "cells.h5ad", x=False), plan, n_genes=4,
                                                  expression=x)
    assert on_disk_names == names
    np.testing.assert_array_equal(values, expected)


def test_communication_matches_a_direct_computation_for_a_pair_with_a_receptor_complex():
    adata = _cohort()
    pairs = ligand_receptor_pairs(adata.var_names)
    assert {"LGALS9", "TGFB1"} <= set(pairs["ligand"]) and "TGFBR1_TGFBR2" in set(pairs["receptor"])
    plan = plan_mixtures(adata, n_samples=3, n_cells=60, progress=False)
    values, names = communication(adata, plan, pairs)
    assert values.shape == (len(plan.obs), len(pairs) * len(TYPES) ** 2)
    counts = adata.layers[keys.COUNTS].toarray()
    cell_log_cpm = np.log1p(counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e6)
    genes, cell_types = list(adata.var_names), adata.obs["ct_cov"].to_numpy()

    def mean_in(row, cell_type, gene):
        mine = cell_types[row.indices] == cell_type
        return np.average(cell_log_cpm[row.indices[mine], genes.index(gene)], weights=row.data[mine])

    column = names.index("TGFB1→TGFBR1_TGFBR2|Mono→CD4 T")
    for i in range(len(plan.obs)):
        row = plan.weights[i]
        if not {"Mono", "CD4 T"} <= set(cell_types[row.indices]):
            assert np.isnan(values[i, column])
            continue
        receptor = min(mean_in(row, "CD4 T", "TGFBR1"), mean_in(row, "CD4 T", "TGFBR2"))
        np.testing.assert_allclose(values[i, column], mean_in(row, "Mono", "TGFB1") * receptor, rtol=1e-5)


def test_make_pseudobulk_writes_one_anndata_with_every_modality(tmp_path):
    adata = _cohort()
    samples = make_pseudobulk(adata, n_samples=4, n_cells=40, progress=False)
    assert samples.n_obs == 3 * 4 + 3 and list(samples.var_names) == list(adata.var_names)
    assert {"sample_id", "unit", "patient", "label", "n_cells", "kind"} <= set(samples.obs.columns)
    for key in (keys.PROPORTIONS, keys.COMPOSITION, keys.STATES, keys.STATES_EXPRESSION,
                keys.COMMUNICATION):
        assert samples.obsm[key].shape[0] == samples.n_obs
    n_types = len(samples.uns[keys.UNS_PSEUDOBULK]["cell_types"])
    assert samples.obsm[keys.STATES_EXPRESSION].shape[1] == n_types * adata.n_vars  # fewer genes than 200: all
    assert len(samples.uns[keys.UNS_PSEUDOBULK]["state_expression_features"]) == n_types * adata.n_vars
    np.testing.assert_allclose(samples.obsm[keys.PROPORTIONS].sum(1), 1.0)
    truth = adata.obs.groupby("ind_cov")["ct_cov"].value_counts(normalize=True).unstack(fill_value=0)
    np.testing.assert_allclose(samples.obsm[keys.COMPOSITION].to_numpy(),
                               truth.loc[samples.obs["patient"], TYPES].to_numpy())
    assert samples.X[0].sum() > 0
    assert keys.STATES_GMVAE_MSE not in samples.obsm  # only where stage 02 trained the ablation's mse GMVAE
    adata.obsm[keys.X_GMVAE_MSE_ZSCORE] = adata.obsm[keys.X_GMVAE_ZSCORE] * 2 + 1
    with_mse = make_pseudobulk(adata, n_samples=4, n_cells=40, progress=False)
    np.testing.assert_allclose(with_mse.obsm[keys.STATES_GMVAE_MSE], samples.obsm[keys.STATES] * 2 + 1, rtol=1e-5)
    path = write_h5ad(samples, tmp_path / "pseudobulk.h5ad")
    back = ad.read_h5ad(path)
    assert back.uns[keys.UNS_PSEUDOBULK]["settings"]["n_cells"] == 40


@pytest.mark.parametrize("change, match", [
    (dict(n_cells=0), "n_cells must be an integer of at least 1"),
    (dict(n_samples=2.5), "n_samples must be an integer"),
    (dict(sparse_prob=1.0), r"sparse_prob must be in \[0, 1\)"),
    (dict(proportions="tape"), r"proportions must be one of \['unit', 'dirichlet'\]"),
])
def test_bad_settings_are_refused_before_any_work(change, match):
    with pytest.raises(PseudobulkError, match=match):
        make_pseudobulk(_cohort(), progress=False, **change)


def test_missing_inputs_name_the_stage_or_column():
    adata = _cohort()
    del adata.obsm[keys.X_GMVAE_ZSCORE]
    with pytest.raises(PseudobulkError, match=r"X_gmvae_zscore.*run stage 02"):
        make_pseudobulk(adata, progress=False)
    adata = _cohort()
    del adata.layers[keys.COUNTS]
    with pytest.raises(PseudobulkError, match=r"layers\['counts'\].*stage 01"):
        make_pseudobulk(adata, progress=False)
    adata = _cohort()
    adata.obs["ct_cov"] = adata.obs["ct_cov"].astype("category")
    adata.obs.loc[adata.obs["ind_cov"] == "P2", "ct_cov"] = np.nan
    with pytest.raises(PseudobulkError, match=r"P2 have no cells with a cell type in obs\['ct_cov'\]"):
        make_pseudobulk(adata, progress=False)


def test_with_a_sample_column_units_are_samples_and_keep_their_patient():
    adata = _cohort()
    adata.obs["sample"] = adata.obs["ind_cov"] + np.where(np.arange(adata.n_obs) % 2 == 0, "_ctrl", "_stim")
    adata.uns[keys.UNS]["columns"]["sample"] = "sample"
    plan = plan_mixtures(adata, n_samples=2, n_cells=20, progress=False)
    assert plan.obs["unit"].nunique() == 6 and (plan.obs["sample"] == plan.obs["unit"]).all()
    assert (plan.obs["unit"].astype(str).str[:2] == plan.obs["patient"].astype(str)).all()


def test_each_sample_carries_the_batch_of_most_of_its_units_cells():
    adata = _cohort()
    assert "batch" not in plan_mixtures(adata, n_samples=2, n_cells=20, progress=False).obs  # no batch key
    patient = adata.obs["ind_cov"].to_numpy()
    # P1 mostly in run B, P2 wholly in A, P3 mostly in A
    adata.obs["run"] = np.where(patient == "P2", "A", np.where(np.arange(adata.n_obs) % 5 == 0, "A", "B"))
    adata.obs.loc[patient == "P3", "run"] = np.where(np.arange((patient == "P3").sum()) % 5 == 0, "B", "A")
    adata.uns[keys.UNS]["columns"]["batch"] = "run"
    plan = plan_mixtures(adata, n_samples=2, n_cells=20, progress=False)
    assert plan.obs.groupby("unit", observed=True)["batch"].agg(set).map(sorted).to_dict() == {
        "P1": ["B"], "P2": ["A"], "P3": ["A"]}
