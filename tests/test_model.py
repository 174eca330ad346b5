import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import COLUMNS
from gmvae4p import keys
from gmvae4p.__main__ import main
from gmvae4p.data import load_cohort
from gmvae4p.gmvae.model import MAX_UNCERTAINTY, TRAINSET, GMVAE, split_settings, summary, transfer_labels
from gmvae4p.params import GMVAESection
from gmvae4p.preprocess import qc_normalize_hvg

SMALL = {"likelihood": "nb", "latent_dim": 8, "hidden_dims": [64, 32]}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    adata = load_cohort(simulate={"n_patients": 8, "n_cells": 1600, "n_genes": 300, "n_marker_genes": 15},
                        seed=2, **COLUMNS)
    adata = qc_normalize_hvg(adata, min_genes=50, n_top_genes=200)
    folder = tmp_path_factory.mktemp("gmvae")
    model = GMVAE(adata, **SMALL).fit(folder, epochs=8, batch_size=128, log=None)
    return adata, model, folder


def test_fit_writes_the_documented_keys(fitted, tmp_path):
    adata, model, _ = fitted
    assert adata.obsm[keys.X_GMVAE].shape == adata.obsm[keys.X_GMVAE_ZSCORE].shape == (adata.n_obs, 8)
    np.testing.assert_allclose(adata.obsm[keys.GMVAE_PROBA].sum(1), 1, rtol=1e-5)
    assert list(adata.obs[keys.GMVAE_CELL_TYPE].cat.categories) == model.cell_types
    # the call: a regression on E[z|x], calibrated on the held-out cells so that its uncertainty is honest there
    assert model.caller.calibration != 1.0 and adata.uns[keys.UNS_GMVAE]["calibration"] == model.caller.calibration
    held = adata.obs[keys.GMVAE_HELD_OUT].to_numpy()  # called by the regression fitted without them
    np.testing.assert_allclose(adata.obsm[keys.GMVAE_PROBA][~held],
                               model.caller.probabilities(adata.obsm[keys.X_GMVAE][~held]))
    assert not np.allclose(adata.obsm[keys.GMVAE_PROBA][held], model.caller.probabilities(adata.obsm[keys.X_GMVAE][held]))
    np.testing.assert_allclose(adata.obs[keys.GMVAE_CELL_TYPE_UNCERTAINTY], 1 - adata.obsm[keys.GMVAE_PROBA].max(1))
    confidence = 1 - adata.obs[keys.GMVAE_CELL_TYPE_UNCERTAINTY].to_numpy()[held].mean()
    right = (adata.obs[keys.GMVAE_CELL_TYPE].astype(str) == adata.obs["ct_cov"].astype(str)).to_numpy()[held].mean()
    assert abs(confidence - right) < 0.05
    held = adata.obs[keys.GMVAE_HELD_OUT]
    assert sorted(adata.obs["ind_cov"][held].unique()) == model.held_out_patients and len(model.held_out_patients) == 2
    record = adata.uns[keys.UNS_GMVAE]
    assert len(record["genes"]) == 200 and len(record["history"]["loss"]) == 8
    assert record["metrics"]["held_out_balanced_accuracy"] >= 0.9
    assert summary(adata)["held-out patients"] == 2
    adata.write_h5ad(tmp_path / "cells.h5ad")  # every key must be writable
    assert ad.read_h5ad(tmp_path / "cells.h5ad").uns[keys.UNS_GMVAE]["components"].tolist() == model.cell_types


def test_saved_model_embeds_new_data_as_it_did_the_training_data(fitted, tmp_path):
    adata, model, _ = fitted
    loaded = GMVAE.load(model.save(tmp_path / "gmvae.pt"), adata)
    np.testing.assert_array_equal(loaded.caller.weight, model.caller.weight)
    assert loaded.caller.calibration == model.caller.calibration
    other = adata[:300].copy()
    del other.obsm[keys.X_GMVAE]
    loaded.embed(other)
    np.testing.assert_allclose(other.obsm[keys.X_GMVAE], adata.obsm[keys.X_GMVAE][:300], atol=1e-5)
    with pytest.raises(ValueError, match="lacks 200 of the model's 200 genes"):
        GMVAE.load(tmp_path / "gmvae.pt", adata[:, ~adata.var[keys.HIGHLY_VARIABLE]].copy())


def test_label_transfer_names_an_unannotated_querys_cells_and_calls_the_uncertain_ones_unknown(fitted, tmp_path):
    adata, model, _ = fitted
    path = model.save(tmp_path / "gmvae.pt")
    cells = np.arange(0, adata.n_obs, 3)
    query = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names[cells]), var=pd.DataFrame(index=adata.var_names[::-1]),
                       layers={keys.COUNTS: adata.layers[keys.COUNTS][cells][:, ::-1]})  # no annotation, no roles
    probabilities = model.caller.probabilities(adata.obsm[keys.X_GMVAE][cells])  # the saved call, for new cells
    uncertainty, argmax = 1 - probabilities.max(1), np.asarray(model.component_names)[probabilities.argmax(1)]
    threshold = float(np.quantile(uncertainty[uncertainty > 0], 0.75))  # a quarter of those not called with certainty
    transfer_labels(path, query, max_uncertainty=threshold)
    np.testing.assert_allclose(query.obs[keys.GMVAE_CELL_TYPE_UNCERTAINTY], uncertainty, atol=1e-5)
    np.testing.assert_allclose(query.obsm[keys.X_GMVAE], adata.obsm[keys.X_GMVAE][cells], atol=1e-5)
    called = query.obs[keys.GMVAE_CELL_TYPE].astype(str).to_numpy()
    unknown = called == keys.UNKNOWN
    assert 0 < unknown.mean() < 0.5
    np.testing.assert_array_equal(unknown, query.obs[keys.GMVAE_CELL_TYPE_UNCERTAINTY].to_numpy() > threshold)
    np.testing.assert_array_equal(called[~unknown], argmax[~unknown])
    with pytest.raises(ValueError, match="max_uncertainty must be in"):
        transfer_labels(path, query, max_uncertainty=2)
    with pytest.raises(ValueError, match="lacks 200 of the model's 200 genes"):
        transfer_labels(path, query[:, ~query.var_names.isin(model.genes)].copy())
    normalized = query.copy()
    normalized.layers[keys.COUNTS] = normalized.layers[keys.COUNTS] * 0.5
    with pytest.raises(ValueError, match=r'query.layers\["counts"\] holds non-integer values'):
        transfer_labels(path, normalized)
    counts = query.layers.pop(keys.COUNTS)
    with pytest.raises(KeyError, match="label transfer reads raw counts"):
        transfer_labels(path, query)
    query = ad.AnnData(X=counts, obs=pd.DataFrame(index=query.obs_names), var=pd.DataFrame(index=query.var_names))
    query.write_h5ad(tmp_path / "query.h5ad")  # raw counts in X, as a count matrix is often shared
    assert main(["annotate", str(path), str(tmp_path / "query.h5ad"), "--output", str(tmp_path / "out.h5ad")]) == 0
    annotated = ad.read_h5ad(tmp_path / "out.h5ad")
    expected = np.where(uncertainty > MAX_UNCERTAINTY, keys.UNKNOWN, argmax)
    assert annotated.obs[keys.GMVAE_CELL_TYPE].astype(str).tolist() == expected.tolist()  # the default threshold
    assert main(["annotate", str(path), str(tmp_path / "query.h5ad"), "--output", str(tmp_path / "bad.h5ad"),
                 "--max-uncertainty", "-1"]) == 2
    assert not (tmp_path / "bad.h5ad").exists()


def test_a_fit_that_releases_the_counts_embeds_the_same_and_leaves_them_out_of_memory(fitted, tmp_path):
    adata, _, folder = fitted
    released = adata.copy()
    GMVAE(released, **SMALL).fit(tmp_path, epochs=8, batch_size=128, log=None, release_counts=True)
    assert keys.COUNTS not in released.layers
    with h5py.File(tmp_path / TRAINSET) as written, h5py.File(folder / TRAINSET) as first:
        assert all(np.array_equal(written[name][:], first[name][:]) for name in first)  # the counts went there
    np.testing.assert_allclose(released.obsm[keys.X_GMVAE], adata.obsm[keys.X_GMVAE], rtol=1e-4, atol=1e-5)


def test_bad_input_is_refused_before_training(fitted, tmp_path):
    adata, _, _ = fitted
    raw = adata.copy()
    del raw.layers[keys.COUNTS]
    with pytest.raises(KeyError, match="run gmvae4p.preprocess.qc_normalize_hvg"):
        GMVAE(raw).fit(tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="likelihood must be one of"):
        GMVAE(adata, likelihood="poisson")
    with pytest.raises(ValueError, match=r"held_out_patients \['P999'\]"):
        GMVAE(adata).fit(tmp_path, held_out_patients=["P999"])
    with pytest.raises(TypeError, match="epoch"):
        GMVAE(adata).fit(tmp_path, epoch=3)
    assert not (tmp_path / "trainset.h5").exists()


def test_the_parameters_section_splits_into_model_and_fit_arguments():
    model_settings, fit_settings = split_settings(GMVAESection().__dict__)
    assert {"likelihood", "hidden_dims", "supervised", "use_highly_variable"} <= set(model_settings)
    assert {"epochs", "n_processes", "validation_fraction", "device"} <= set(fit_settings)
    assert not set(model_settings) & set(fit_settings)
