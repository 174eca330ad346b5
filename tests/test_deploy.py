"""The final GMVAE4P: fitted on every unit, saved, loaded, and applied to new samples' bulk counts."""

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gmvae4p import keys
from gmvae4p.classify import deploy
from gmvae4p.classify.cv import unit_table
from gmvae4p.pseudobulk import log_cpm

from test_classify import FAST, _samples


def _counted_samples(seed=0):
    """:func:`_samples` whose ``X`` is the log-CPM of integer counts (``layers["counts"]``), genes named G0…"""
    samples = _samples(n_patients=16, n_samples=4, seed=seed)
    rng = np.random.default_rng(seed)
    positive = (samples.obs["label"] == "SLE").to_numpy()
    rate = np.full(samples.shape, 50.0)
    rate[positive, :5] *= 3
    counts = rng.poisson(rate).astype(np.float32)
    samples.layers["counts"] = counts
    samples.X = log_cpm(counts)
    samples.var_names = [f"G{i}" for i in range(samples.n_vars)]
    return samples


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    samples = _counted_samples()
    units = unit_table(samples, "SLE")
    config = dataclasses.replace(FAST, max_epochs=20)
    model = deploy.fit_final(samples, units, config, n_top_genes=20, n_top_interactions=10, device="cpu")
    folder = tmp_path_factory.mktemp("run") / "models" / "gmvae4p"
    metrics = pd.DataFrame({"method": ["gmvae4p"], "auc": [0.9], "auc_low": [0.8], "auc_high": [1.0],
                            "balanced_accuracy": [0.85]})
    deploy.save(model, folder, samples=samples, labels=("healthy", "SLE"),
                cohort={"file": "simulated", "units": len(units), "patients": len(units)}, metrics=metrics)
    return samples, model, folder


def _whole_counts(samples):
    whole = (samples.obs[keys.KIND] == keys.WHOLE).to_numpy()
    return pd.DataFrame(samples.layers["counts"][whole], index=samples.obs["unit"][whole].to_numpy(),
                        columns=samples.var_names), np.flatnonzero(whole)


def test_the_saved_model_scores_new_counts_as_the_fitted_one_scores_the_whole_unit_pseudobulk(saved, tmp_path):
    samples, model, folder = saved
    assert {"model.pt", "model.json", "model_card.md"} <= {p.name for p in folder.iterdir()}
    card = (folder / "model_card.md").read_text()
    assert "SLE" in card and "0.900 [0.80, 1.00]" in card
    assert "stack weights from bulk linear 0.50, program 0.50, network 0.00, given cells (scRNA mode) linear 0.33, " \
           "program 0.33, network 0.33" in card
    loaded = deploy.load(folder)
    assert loaded.labels == ("healthy", "SLE") and list(loaded.genes) == list(samples.var_names)
    counts, whole = _whole_counts(samples)
    table = tmp_path / "bulk.tsv"
    counts.T.to_csv(table, sep="\t")  # genes in rows, samples in columns, as featureCounts writes it
    read, notes = deploy.read_counts(table, genes=loaded.genes)
    assert notes == [] and read.shape == counts.shape
    out = deploy.predict(loaded, read)
    expected = model.predict(samples, whole)
    np.testing.assert_allclose(out["probability"], expected.probability, atol=1e-6)
    np.testing.assert_allclose(out["probability_calibrated"], expected.calibrated, atol=1e-6)
    assert loaded.model.stack[False].temperature == model.stack[False].temperature
    np.testing.assert_allclose(out["probability_network"], expected.learners["network"], atol=1e-6)
    assert (out["genes_found"] == 1.0).all() and list(out["sample"]) == list(counts.index)
    called = np.where(expected.probability > 0.5, "SLE", "healthy")
    assert (out["predicted_label"] == called).all()
    assert {"program_score", "fusion_weight_proportions"} <= set(out.columns)


def test_too_few_model_genes_are_refused_with_the_overlap_and_a_lower_minimum_scores_them(saved):
    samples, _, folder = saved
    loaded = deploy.load(folder)
    counts, _ = _whole_counts(samples)
    renamed = counts.rename(columns={g: f"other{g}" for g in counts.columns[::3]})  # 14 of 40 genes lost
    with pytest.raises(deploy.InputError, match="65% of the model's 40 genes"):
        deploy.predict(loaded, renamed)
    with pytest.raises(deploy.InputError, match="--min-overlap must be a share"):
        deploy.predict(loaded, renamed, min_overlap=60)  # a percentage by mistake
    out = deploy.predict(loaded, renamed, min_overlap=0.6)
    assert np.allclose(out["genes_found"], 26 / 40) and out["probability"].between(0, 1).all()


def test_genes_match_ignoring_case_and_ensembl_versions_where_unambiguous():
    model = pd.Index(["CD3E", "ENSG00000111.5", "MS4A1", "IFI27"])
    given = pd.Index(["cd3e", "ENSG00000111.9", "ms4a1", "MS4A1", "ifi27", "Ifi27"])
    # exact MS4A1 wins; two spellings of IFI27 are ambiguous
    assert deploy.match_genes(model, given).tolist() == [0, 1, 3, -1]


def test_bad_count_tables_are_refused_in_one_sentence(tmp_path):
    genes = pd.Index(["A", "B", "C"])
    cases = {"negative.tsv": "gene\ts1\ts2\nA\t1\t-2\nB\t3\t4\nC\t5\t6\n",
             "tpm.csv": "gene,s1,s2\nA,1.5,2\nB,3,4\nC,5,6\n",
             "words.tsv": "gene\ts1\nA\tone\nB\t3\nC\t5\n",
             "empty.tsv": "",
             "table.xlsx": "x"}
    messages = {}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(deploy.InputError) as err:
            deploy.read_counts(tmp_path / name, genes=genes)
        messages[name] = str(err.value)
    assert "not raw counts" in messages["negative.tsv"] and "--normalized" in messages["tpm.csv"]
    assert "'A'" in messages["words.tsv"] and "could not be read" in messages["empty.tsv"]
    assert "unknown format" in messages["table.xlsx"]
    values, _ = deploy.read_counts(tmp_path / "tpm.csv", genes=genes, normalized=True)
    assert values.loc["s1", "A"] == 1.5


def test_transposed_tables_are_detected_and_duplicate_symbols_summed(tmp_path):
    genes = pd.Index(["A", "B", "C"])
    (tmp_path / "samples_in_rows.csv").write_text("sample,A,B,C,A\ns1,1,2,3,4\ns2,5,6,7,8\n")
    values, notes = deploy.read_counts(tmp_path / "samples_in_rows.csv", genes=genes)
    assert list(values.index) == ["s1", "s2"] and values.loc["s1", "A"] == 5
    assert any("columns" in n for n in notes) and any("summed" in n for n in notes)


def test_the_predict_command_writes_one_row_per_sample_and_refuses_a_poor_overlap(saved, tmp_path):
    samples, model, folder = saved
    counts, whole = _whole_counts(samples)
    counts.T.to_csv(tmp_path / "bulk.tsv", sep="\t")
    poor = counts.rename(columns={g: f"other{g}" for g in counts.columns[::3]})
    poor.to_csv(tmp_path / "poor.csv")  # samples in rows this time
    command = [sys.executable, "-m", "gmvae4p", "predict", str(folder)]
    done = subprocess.run([*command, str(tmp_path / "bulk.tsv"), "--output", str(tmp_path / "out.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    out = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(out["probability"], model.predict(samples, whole).probability, atol=1e-6)
    refused = subprocess.run([*command, str(tmp_path / "poor.csv"), "--output", str(tmp_path / "poor_out.csv")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "65% of the model's 40 genes" in refused.stderr
    assert not (tmp_path / "poor_out.csv").exists()
    lowered = subprocess.run([*command, str(tmp_path / "poor.csv"), "--output", str(tmp_path / "poor_out.csv"),
                              "--min-overlap", "0.6"], capture_output=True, text=True)
    assert lowered.returncode == 0 and "65% of the model's genes found" in lowered.stdout
    assert "genes are in the columns" in lowered.stdout


def test_cells_of_an_h5ad_are_summed_per_sample_and_the_sample_column_must_be_named(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    counts = sp.csr_matrix(np.array([[1, 0, 2], [3, 1, 0], [0, 5, 1]], dtype=np.float32))
    cells = ad.AnnData(X=counts, obs=pd.DataFrame({"donor": ["d1", "d2", "d1"]}, index=["c1", "c2", "c3"]),
                       var=pd.DataFrame(index=["A", "B", "C"]))
    cells.write_h5ad(tmp_path / "cells.h5ad")
    summed, _ = deploy.read_counts(tmp_path / "cells.h5ad", sample_key="donor")
    assert summed.loc["d1"].tolist() == [1, 5, 3] and summed.loc["d2"].tolist() == [3, 1, 0]
    with pytest.raises(deploy.InputError, match="--sample-key"):
        deploy.read_counts(tmp_path / "cells.h5ad")


def test_a_model_saved_without_its_gmvae_scores_bulk_only_and_says_so(saved, tmp_path):
    loaded = deploy.load(saved[2])
    assert loaded.gmvae is None and "scRNA mode for new cells: not available" in (saved[2] / "model_card.md").read_text()
    with pytest.raises(deploy.InputError, match="saved without its GMVAE"):
        deploy.scrna_modalities(loaded, tmp_path / "cells.h5ad", sample_key="donor")
