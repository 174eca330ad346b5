import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gmvae4p import params
from gmvae4p.params import ParameterError
from gmvae4p.pipeline import STAGES

from conftest import ROOT

PARAMETER_FILES = sorted(p for p in (ROOT / "parameters").glob("*.yaml") if p.name != "benchmark.yaml")


@pytest.mark.parametrize("path", PARAMETER_FILES, ids=lambda p: p.name)
def test_every_parameters_file_checks(path):
    raw = yaml.safe_load(path.read_text())
    checked = params.from_mapping(raw, where=path.name, default_run_name=path.stem)
    assert checked.run_name == path.stem


def test_demo_file_states_the_defaults_the_notebooks_use():
    demo = params.load(ROOT / "parameters" / "demo.yaml")
    defaults = params.from_mapping({}, default_run_name="demo")
    assert demo.to_dict() == defaults.to_dict()


def _parameters_cell(notebook) -> dict:
    cells = json.loads(notebook.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "one parameters cell"
    values = {}
    for statement in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(statement, ast.Assign), "the parameters cell holds assignments only"
        values[statement.targets[0].id] = ast.literal_eval(statement.value)  # raises unless a literal
    return values


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_parameters_cell_holds_literals_equal_to_the_defaults(stage):
    values = _parameters_cell(ROOT / "notebooks" / f"{stage}.ipynb")
    assert values.pop("output_dir") == "../outputs/demo"
    defaults = params.from_mapping({}, default_run_name="demo")
    assert values == defaults.notebook_parameters(values)
    assert set(values) == set(defaults.notebook_parameters(values)), "every name is a known section or seed"


def test_the_predict_notebook_takes_the_predict_commands_options():
    values = _parameters_cell(ROOT / "notebooks" / "07_predict.ipynb")
    assert values.pop("model_dir") == "../outputs/demo/models/gmvae4p"
    assert values == {"input_path": "../outputs/demo/data/preprocessed.h5ad",
                      "output_path": "../outputs/demo/predictions_new_patients.csv", "sample_key": "ind_cov",
                      "cell_type_key": None, "min_overlap": None, "normalized": False}
    assert params.DataSection().patient_key == "ind_cov"  # the demo's cells summed per patient
    usage = subprocess.run([sys.executable, "-m", "gmvae4p", "predict", "--help"], capture_output=True, text=True,
                           cwd=ROOT).stdout
    assert all(f"--{option}" in usage for option in ("output", "sample-key", "cell-type-key", "min-overlap",
                                                        "normalized"))


def test_unknown_name_is_an_error_with_a_suggestion():
    with pytest.raises(ParameterError, match=r"unknown parameter 'n_top_gene' \(did you mean 'n_top_genes'\?\)"):
        params.from_mapping({"preprocess": {"n_top_gene": 10}})
    with pytest.raises(ParameterError, match="unknown parameter 'gmvea'"):
        params.from_mapping({"gmvea": {}})


@pytest.mark.parametrize("raw, message", [
    ({"seed": "1"}, "seed must be an integer, not '1'"),
    ({"preprocess": {"min_genes": 1.5}}, "preprocess.min_genes must be an integer"),
    ({"preprocess": {"n_top_genes": True}}, "must be an integer or null"),
    ({"simulate": {"disease_cell_types": "B"}}, "must be a list of a string"),
    ({"data": {"patient_key": None}}, "data.patient_key must be a string, not None"),
    ({"data": ["path"]}, "section 'data' must be a mapping"),
    ({"classify": {"n_jobs": 0}}, "n_jobs must be at least 1, not 0"),
])
def test_ill_typed_values_are_errors(raw, message):
    with pytest.raises(ParameterError) as err:
        params.from_mapping(raw)
    assert message in str(err.value)


def test_integers_are_accepted_for_numbers():
    checked = params.from_mapping({"preprocess": {"target_sum": 10000}})
    assert checked.sections["preprocess"].target_sum == 10000.0


def test_load_resolves_the_data_path_and_refuses_a_missing_one(tmp_path, monkeypatch):
    (tmp_path / "cohort.h5ad").write_bytes(b"")
    (tmp_path / "p.yaml").write_text("data:\n  path: cohort.h5ad\n")
    monkeypatch.chdir(tmp_path)
    assert params.load("p.yaml").sections["data"].path == str(tmp_path / "cohort.h5ad")
    (tmp_path / "q.yaml").write_text("data:\n  path: missing.h5ad\n")
    with pytest.raises(ParameterError, match="data.path missing.h5ad does not exist"):
        params.load("q.yaml")
    with pytest.raises(ParameterError, match="does not exist"):
        params.load("absent.yaml")
    (tmp_path / "r.yaml").write_text("- a list\n")
    with pytest.raises(ParameterError, match="must hold a mapping"):
        params.load("r.yaml")
