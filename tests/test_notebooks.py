"""The papermill chain on parameters/ci.yaml, then nbval over the executed notebooks."""

import json
import shutil
import subprocess
import sys

import anndata as ad
import nbformat
import numpy as np
import pandas as pd
import pytest

from gmvae4p import keys
from gmvae4p.classify import evaluate
from gmvae4p.classify.ablation import ABLATIONS
from gmvae4p.classify.config import METHODS

from conftest import ROOT

pytestmark = pytest.mark.slow


def _chain(parameters, output_dir, *extra):
    return subprocess.run([sys.executable, "-m", "gmvae4p", "run", str(parameters), "--output-dir", str(output_dir),
                           "--quiet", *extra], cwd=ROOT, capture_output=True, text=True, timeout=900)


def _nbval(*notebooks):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"),
                           *map(str, notebooks)], cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ci_run")
    result = _chain(ROOT / "parameters" / "ci.yaml", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_chain_writes_notebooks_artifacts_and_run_record(ci_run):
    record = json.loads((ci_run / "run.json").read_text())
    assert record["status"] == "complete" and record["run_name"] == "ci"
    assert record["parameters"]["simulate"]["n_patients"] == 12
    assert record["versions"]["scanpy"] and record["hardware"]["cpu_count"] >= 1
    stages = {s["stage"]: s for s in record["stages"]}
    assert stages["01_preprocess"]["status"] == "complete"
    assert stages["01_preprocess"]["wall_s"] > 0 and stages["01_preprocess"]["peak_rss_gb"] > 0
    # shared pages counted once: at most the summed resident memory (Linux reports it)
    assert 0 < stages["01_preprocess"]["peak_pss_gb"] <= stages["01_preprocess"]["peak_rss_gb"]
    # the peak split by process: the kernel's share first
    for stage in ("01_preprocess", "02_train_gmvae"):
        split = stages[stage]["peak_pss_by_process_gb"]
        assert split[0] > 0 and sum(split) == pytest.approx(stages[stage]["peak_pss_gb"], abs=0.01)
    assert (ci_run / "notebooks" / "01_preprocess.ipynb").is_file()
    for suffix in ("png", "pdf", "csv"):
        assert (ci_run / "figures" / f"01_qc.{suffix}").stat().st_size > 0
    adata = ad.read_h5ad(ci_run / "data" / "preprocessed.h5ad")
    assert keys.COUNTS in adata.layers and adata.var[keys.HIGHLY_VARIABLE].sum() == 300
    assert adata.uns[keys.UNS]["columns"]["patient"] == "ind_cov"


def test_classifier_stage_saves_a_final_model_that_predict_applies_to_bulk_counts(ci_run, tmp_path):
    folder = ci_run / "models" / "gmvae4p"
    card = (folder / "model_card.md").read_text()
    assert "- patients: 12" in card and "- units per label: SLE 6, healthy 6" in card
    assert "| gmvae4p |" in card.split("## Cross-validated")[1]
    samples = ad.read_h5ad(ci_run / "data" / "pseudobulk.h5ad")
    whole = samples[samples.obs[keys.KIND] == keys.WHOLE]
    counts = pd.DataFrame(np.asarray(whole.layers[keys.COUNTS]), index=whole.obs["unit"].astype(str).to_numpy(),
                          columns=whole.var_names).T  # genes × samples, as an RNA-seq pipeline writes it
    counts.to_csv(tmp_path / "counts.tsv", sep="\t")
    result = subprocess.run([sys.executable, "-m", "gmvae4p", "predict", str(folder), str(tmp_path / "counts.tsv"),
                             "--output", str(tmp_path / "predictions.csv")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 12 and predictions["probability"].between(0, 1).all()
    assert (predictions["genes_found"] == 1.0).all() and set(predictions["predicted_label"]) <= set(whole.obs["label"])
    assert (folder / "gmvae.pt").is_file() and "scRNA mode for new cells: an `.h5ad`" in card
    cells = ci_run / "data" / "preprocessed.h5ad"  # the training cells: their modalities are stage 03's whole units'
    result = subprocess.run([sys.executable, "-m", "gmvae4p", "predict", str(folder), str(cells), "--sample-key",
                             "ind_cov", "--cell-type-key", "ct_cov", "--output", str(tmp_path / "cells.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    scrna = pd.read_csv(tmp_path / "cells.csv").set_index("sample")
    from gmvae4p.classify import deploy

    expected = deploy.load(folder).model.predict(whole, np.arange(whole.n_obs), use_true=True).probability
    # the modalities recomputed from cells and stage 03's are two float32 sums in different orders: 1e-6 apart at times
    np.testing.assert_allclose(scrna.loc[whole.obs["unit"].astype(str), "probability_scrna"], expected, atol=1e-5)
    import papermill  # the notebook 07 is the same call, with a figure

    papermill.execute_notebook(str(ROOT / "notebooks" / "07_predict.ipynb"), str(tmp_path / "07_predict.ipynb"),
                               parameters={"model_dir": str(folder), "input_path": str(tmp_path / "counts.tsv"),
                                           "output_path": str(tmp_path / "notebook.csv")},
                               cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "notebook.csv"), predictions)
    assert (tmp_path / "notebook_probabilities.png").stat().st_size > 0
    shown = pd.read_csv(tmp_path / "notebook_probabilities.csv")
    assert shown["probability_calibrated"].is_monotonic_increasing and len(shown) == 12


def test_pseudobulk_stage_writes_samples_with_every_modality_and_its_figures(ci_run):
    samples = ad.read_h5ad(ci_run / "data" / "pseudobulk.h5ad")
    assert (samples.obs[keys.KIND] == "mixture").sum() == 12 * 4 and (samples.obs[keys.KIND] == "whole").sum() == 12
    assert (samples.obs.loc[samples.obs[keys.KIND] == "mixture", "n_cells"] == 100).all()
    assert samples.obsm[keys.COMMUNICATION].shape[1] > 0  # the simulator names genes after liana's pairs
    for name in ("03_unit_composition", "03_state_heatmap", "03_top_communication"):
        for suffix in ("png", "pdf", "csv"):
            assert (ci_run / "figures" / f"{name}.{suffix}").stat().st_size > 0


def test_classifier_stage_writes_every_table_with_each_unit_tested_once_per_method(ci_run):
    tables = ci_run / "tables"
    predictions = pd.read_csv(tables / "predictions.csv")
    assert list(predictions.columns) == ["method", "fold", "unit", "label", "probability"]
    methods = [METHODS[0], evaluate.SCRNA_NAME, *METHODS[1:]]
    assert set(predictions["method"]) == set(methods)
    assert (predictions.groupby("method")["unit"].apply(lambda u: u.is_unique and len(u) == 12)).all()
    table1 = pd.read_csv(tables / "table1_main.csv")
    assert list(table1["method"]) == [*methods, evaluate.ORACLE_ACTIVITY, evaluate.ORACLE_PROGRAM]
    assert table1["auc"].between(0, 1).all() and (table1["auc_low"] <= table1["auc"]).all()
    assert (table1["n_patients"].dropna() == 12).all()
    null = pd.read_csv(tables / "null_permutations.csv")  # ci.yaml: 3 permutations, 1 for the costly methods
    assert null.groupby("method")["permutation"].nunique().to_dict() == {
        m: 1 if m in evaluate.COSTLY_METHODS or m == evaluate.SCRNA_NAME else 3 for m in methods}
    real = table1.set_index("method").loc[methods]
    assert (real["n_permutations"] >= 1).all() and real["p_value"].between(1 / 4, 1).all()
    stack = pd.read_csv(tables / "gmvae4p_stack.csv")  # GMVAE4P's stack weights, every fold and learner
    assert len(stack) == 3 * 3 and (stack[["weight", "weight_scrna"]] >= 0).all().all()  # 3 folds × 3 learners
    assert pd.read_csv(tables / "table3_bulk_deployment.csv")["retention"].iloc[1] == 1.0
    table2 = pd.read_csv(tables / "table2_small_cohort.csv")
    assert set(table2["n_train_units"]) == {4, 6} and set(table2["method"]) == {"gmvae4p", "logistic_regression"}
    table5 = pd.read_csv(tables / "table5_compute.csv")
    assert {"01_preprocess", "02_train_gmvae", "03_pseudobulk"} <= set(table5["stage"])
    assert (table5.loc[table5["step"] == "whole stage", "wall_s"] > 0).all()
    fusion = pd.read_csv(tables / "gmvae4p_fusion.csv")
    np.testing.assert_allclose(fusion[["proportions", "states", "communication"]].sum(1), 1, rtol=1e-5)
    program = pd.read_csv(tables / "gmvae4p_program.csv")  # the learned program's genes, every fold
    assert list(program.columns) == ["fold", "gene", "loading", "seed"] and set(program["fold"]) == {0, 1, 2}
    genes = set(ad.read_h5ad(ci_run / "data" / "pseudobulk.h5ad", backed="r").var_names)
    assert set(program["gene"]) <= genes and np.isfinite(program["loading"]).all()
    for suffix in ("png", "pdf", "csv"):
        assert (ci_run / "figures" / f"04_method_auc.{suffix}").stat().st_size > 0


def test_ablation_stage_reads_stage_04s_folds_and_stage_02s_mse_gmvae_and_writes_table4(ci_run):
    cells = ad.read_h5ad(ci_run / "data" / "gmvae.h5ad", backed="r")  # ci.yaml: nb, and the mse GMVAE beside it
    assert cells.uns[keys.UNS_GMVAE]["settings"]["likelihood"] == "nb"
    assert cells.obsm[keys.X_GMVAE_MSE_ZSCORE].shape == cells.obsm[keys.X_GMVAE_ZSCORE].shape
    assert (ci_run / "models" / "gmvae_mse" / "model.pt").is_file()
    folds = pd.read_csv(ci_run / "tables" / "folds.csv")  # every unit tested once, by stage 04's folds
    assert (folds.filter(like="fold_") == "test").sum(1).eq(1).all() and len(folds) == 12
    ablation = pd.read_csv(ci_run / "tables" / "ablation_predictions.csv")
    assert set(ablation["fold"]) == {int(c.removeprefix("fold_")) for c in folds.filter(like="fold_").columns}
    table4 = pd.read_csv(ci_run / "tables" / "table4_ablation.csv")
    assert list(table4["configuration"]) == list(ABLATIONS)
    table1 = pd.read_csv(ci_run / "tables" / "table1_main.csv").set_index("method")
    assert table4.loc[0, "auc"] == pytest.approx(table1.loc["gmvae4p", "auc"], abs=1e-9)
    assert (table4["delta_auc_low"].iloc[1:] <= table4["delta_auc"].iloc[1:]).all()
    auc = table4.set_index("configuration")["auc"]  # each Δ against its own reference row
    np.testing.assert_allclose(table4["delta_auc"], table4["auc"] - auc.loc[table4["reference"]].to_numpy(), atol=1e-9)
    for suffix in ("png", "pdf", "csv"):
        assert (ci_run / "figures" / f"05_ablation_deltas.{suffix}").stat().st_size > 0


def test_figure_stage_writes_every_figure_with_its_data_and_the_index_lists_them(ci_run):
    for name in ("figure1_modality_weighting", "figure2_embeddings", "figure3_modalities", "diagnostics_classifier"):
        for suffix in ("png", "pdf", "csv"):
            assert (ci_run / "figures" / f"{name}.{suffix}").stat().st_size > 0
    points = pd.read_csv(ci_run / "figures" / "figure3_modalities.csv").query("panel == 'c'").set_index("configuration")
    table4 = pd.read_csv(ci_run / "tables" / "table4_ablation.csv").set_index("configuration")
    assert len(points) == 6  # the network alone: all modalities, no communication, each single one, none
    # the scRNA mode's: given the cells, the network reads the modalities
    pd.testing.assert_series_equal(points["auc"], table4.loc[points.index, "auc_scrna"], check_names=False)
    cells = ad.read_h5ad(ci_run / "data" / "gmvae.h5ad")
    assert cells.uns[keys.UNS_GMVAE_UMAP][keys.X_GMVAE_ZSCORE].shape == (cells.n_obs, 2)
    index = (ci_run / "index.md").read_text()
    table1 = pd.read_csv(ci_run / "tables" / "table1_main.csv").set_index("method")
    assert f"- gmvae4p: {table1.loc['gmvae4p', 'auc']:.3f}" in index
    assert "[figure3_modalities.png](figures/figure3_modalities.png)" in index and "| 06_figures | complete |" in index


NBVAL_NOTEBOOKS = ("01_preprocess", "03_pseudobulk", "06_figures")
"""Re-executed by nbval: the stages that train no model (re-running 02, 04 and 05 would double the suite's time; the
other tests here check what they write)."""


def test_nbval_reexecutes_chain_notebooks_to_the_same_checked_outputs(ci_run):
    result = _nbval(*(ci_run / "notebooks" / f"{name}.ipynb" for name in NBVAL_NOTEBOOKS))
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_nbval_check_is_not_vacuous(ci_run, tmp_path):
    notebook = nbformat.read(ci_run / "notebooks" / "01_preprocess.ipynb", as_version=4)
    checked = [c for c in notebook.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and all(c.outputs for c in checked)
    text = checked[0].outputs[0]["data"]["text/plain"]
    checked[0].outputs[0]["data"]["text/plain"] = text.replace("'n_genes_in': 400", "'n_genes_in': 401")
    assert text != checked[0].outputs[0]["data"]["text/plain"]
    tampered = tmp_path / "01_preprocess.ipynb"
    nbformat.write(notebook, tampered)
    assert _nbval(tampered).returncode != 0


def test_failing_stage_names_the_cell_keeps_the_partial_notebook_and_earlier_artifacts(ci_run, tmp_path):
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    shutil.copy(ci_run / "data" / "preprocessed.h5ad", out / "data")
    before = (out / "data" / "preprocessed.h5ad").read_bytes()
    parameters = tmp_path / "bad_column.yaml"
    parameters.write_text((ROOT / "parameters" / "ci.yaml").read_text() + "\ndata:\n  patient_key: donor\n")
    result = _chain(parameters, out)
    assert result.returncode == 1
    assert "stage 01_preprocess failed in cell" in result.stderr
    assert "patient_key 'donor' is not a column of the simulated cohort" in result.stderr
    assert (out / "notebooks" / "01_preprocess.ipynb").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert (out / "data" / "preprocessed.h5ad").read_bytes() == before


def test_bad_parameters_stop_before_anything_runs(tmp_path):
    parameters = tmp_path / "typo.yaml"
    parameters.write_text("preprocess:\n  min_gene: 3\n")
    result = _chain(parameters, tmp_path / "run")
    assert result.returncode == 2
    assert "unknown parameter 'min_gene' (did you mean 'min_genes'?)" in result.stderr
    assert not (tmp_path / "run").exists()
