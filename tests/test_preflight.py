"""The pre-flight check: every parameter against the cohort before stage 01 computes, one sentence each."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from gmvae4p import pipeline, preflight
from gmvae4p.params import ParameterError, from_mapping, load


def _cohort(path, *, n_healthy=3, n_sick=6, cells=40, genes=60, sparse_cells=None):
    """A small real-looking cohort: raw counts, patient / label / sample columns; ``sparse_cells`` = (patient, n)
    gives that patient's first n cells 5 detected genes."""
    rng = np.random.default_rng(0)
    patients = [f"H{i}" for i in range(n_healthy)] + [f"S{i}" for i in range(n_sick)]
    obs = pd.DataFrame({"donor": np.repeat(patients, cells), "cell_type": rng.choice(["T", "B"], len(patients) * cells),
                        "status": np.repeat(["healthy"] * n_healthy + ["sick"] * n_sick, cells)})
    obs["sample"] = obs["donor"]
    counts = rng.poisson(2.0, (len(obs), genes)).astype(np.float32)
    if sparse_cells is not None:
        patient, n = sparse_cells
        counts[np.flatnonzero((obs["donor"] == patient).to_numpy())[:n], 5:] = 0
    var = pd.DataFrame(index=[f"G{j}" for j in range(genes - 2)] + ["MT-CO1", "MT-ND1"])
    ad.AnnData(sp.csr_matrix(counts), obs=obs.set_index(obs.index.astype(str)), var=var).write_h5ad(path)
    return path


def _params(path, **sections):
    raw = {"data": {"path": str(path), "patient_key": "donor", "cell_type_key": "cell_type", "label_key": "status",
                    "batch_key": None},
           "preprocess": {"min_genes": 10, "max_pct_mito": None, "n_top_genes": None},
           "classify": {"positive_label": "sick", "n_folds": 3, "n_top_genes": 50, "small_cohort_sizes": [4]}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return from_mapping(raw)


STAGES = list(pipeline.STAGES)


def test_a_cohort_that_fits_its_parameters_passes_with_no_notes(tmp_path):
    assert preflight.check(_params(_cohort(tmp_path / "c.h5ad")), STAGES) == []


@pytest.mark.parametrize("sections, message", [
    ({"classify": {"positive_label": None}}, "classify.positive_label is null: name the label scored as positive, "
                                             "one of ['healthy', 'sick']"),
    ({"classify": {"positive_label": "COVID"}}, "classify.positive_label 'COVID' is not a label of column 'status'"),
    ({"classify": {"n_folds": 5}}, "classify.n_folds is 5 but label 'healthy' has 3 patient(s)"),
    ({"classify": {"n_top_genes": 2000}}, "classify.n_top_genes is 2000 but the cohort has 60 genes"),
    ({"preprocess": {"n_top_genes": 100}}, "preprocess.n_top_genes is 100 but the cohort has 60 genes"),
    ({"classify": {"small_cohort_sizes": [4, 40]}}, "classify.small_cohort_sizes [40] exceed"),
])
def test_each_parameter_the_cohort_cannot_satisfy_is_one_sentence(tmp_path, sections, message):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        preflight.check(_params(_cohort(tmp_path / "c.h5ad"), **sections), STAGES)


def test_qc_that_removes_many_cells_is_said_and_a_patient_left_without_cells_is_refused(tmp_path):
    path = _cohort(tmp_path / "c.h5ad", sparse_cells=("S0", 20))
    (note,) = preflight.check(_params(path, preprocess={"min_genes": 10, "max_pct_mito": 50.0}), STAGES)
    assert note.startswith("quality control would remove 20 of 360 cells (5.6%): min_genes 10 removes 5.6%")
    assert "max_pct_mito 50 removes 0.0% (the cohort has 2 genes with prefix 'MT-')" in note
    path = _cohort(tmp_path / "d.h5ad", sparse_cells=("S0", 40))
    with pytest.raises(ParameterError, match=r"remove every cell of patient\(s\) \['S0'\]"):
        preflight.check(_params(path), STAGES)


def test_a_simulate_section_beside_a_data_path_is_refused(tmp_path):
    path = _cohort(tmp_path / "c.h5ad")
    with pytest.raises(ParameterError, match="the simulate section applies only when data.path is null"):
        from_mapping({"data": {"path": str(path)}, "simulate": {"n_patients": 10}})


def _no_notebooks(monkeypatch):
    """Stage notebooks replaced by a record of which ran (the checks come before any of them)."""
    ran = []

    def execute(source, target, **kwargs):
        ran.append(source.rsplit("/", 1)[-1].removesuffix(".ipynb"))
        open(target, "w").close()

    monkeypatch.setattr(pipeline.pm, "execute_notebook", execute)
    monkeypatch.setattr(pipeline.pm, "inspect_notebook", lambda source: {})
    monkeypatch.setattr(pipeline, "write_index", lambda layout, record: None)
    return ran


def test_a_failing_check_stops_the_run_before_anything_is_written(tmp_path, monkeypatch):
    ran = _no_notebooks(monkeypatch)
    path = _cohort(tmp_path / "c.h5ad")
    raw = {"data": {"path": str(path), "patient_key": "donor", "cell_type_key": "cell_type", "label_key": "status",
                    "batch_key": None}, "preprocess": {"n_top_genes": None, "min_genes": 10},
           "classify": {"n_folds": 5, "positive_label": "sick", "n_top_genes": 50}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ParameterError, match="classify.n_folds is 5"):
        pipeline.run(tmp_path / "p.yaml", output_dir=tmp_path / "run")
    assert ran == [] and not (tmp_path / "run").exists()


def test_a_cohort_without_labels_runs_the_cell_level_stages_and_ends_complete(tmp_path, monkeypatch, capsys):
    ran = _no_notebooks(monkeypatch)
    path = _cohort(tmp_path / "c.h5ad")
    raw = {"data": {"path": str(path), "patient_key": "donor", "cell_type_key": "cell_type", "label_key": None,
                    "batch_key": None}, "preprocess": {"min_genes": 10, "max_pct_mito": None, "n_top_genes": None}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    folder = pipeline.run(tmp_path / "p.yaml", output_dir=tmp_path / "run")
    assert ran == ["01_preprocess", "02_train_gmvae", "03_pseudobulk"]
    record = yaml.safe_load((folder / "run.json").read_text())
    assert record["status"] == "complete" and "are skipped" in record["notes"][0]
    printed = capsys.readouterr().out
    assert "gmvae4p: note: data.label_key is null" in printed and "stage 03_pseudobulk (3 of 3)" in printed
    assert load(tmp_path / "p.yaml").sections["data"].label_key is None
