"""The cohort benchmark command: cohorts checked before any runs, one table over the cohorts, a failed cohort recorded."""

import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from gmvae4p import benchmark
from gmvae4p.params import ParameterError

from conftest import ROOT


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir(), reason="the real cohorts are in ../shared/data")
def test_the_shipped_benchmark_file_checks_every_cohort(monkeypatch):
    monkeypatch.chdir(ROOT)  # its data paths are taken from the folder you run from, as the README says
    cohorts = benchmark.load(ROOT / "parameters" / "benchmark.yaml")
    assert {"demo_seed1", "rare_type_state", "composition_only", "two_programs", "strong_broad", "no_effect",
            "kang_paired", "covid"} <= set(cohorts)
    assert cohorts["two_programs"]["simulate"]["second_program_cell_types"] == ["CD4 T", "CD8 T", "B"]
    assert cohorts["two_programs"]["simulate"]["n_patients"] == 60  # the base file's settings, under the change
    assert cohorts["covid"]["classify"]["positive_label"] == "COVID19_severe"
    assert cohorts["covid"]["classify"]["small_cohort_sizes"] == []  # the shared settings reach file cohorts too
    assert benchmark.stages_of(ROOT / "parameters" / "benchmark.yaml") == ["01", "02", "03", "04"]


def test_a_bad_cohort_is_refused_before_any_runs(tmp_path):
    shutil.copy(ROOT / "parameters" / "ci.yaml", tmp_path / "ci.yaml")
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump({"base": "ci.yaml", "cohorts": {"ok": {}, "typo": {"simulate": {"n_patient": 3}}}}))
    with pytest.raises(ParameterError, match="cohort typo: simulate: unknown parameter 'n_patient'"):
        benchmark.load(path)
    path.write_text(yaml.safe_dump({"base": "ci.yaml", "cohorts": {"ok": {}}}))
    with pytest.raises(ParameterError, match=r"--cohorts: \['absent'\] not in"):
        benchmark.run(path, cohorts=["absent"], output_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "benchmark.csv").exists()


@pytest.mark.slow
def test_the_benchmark_runs_cohorts_end_to_end_and_a_failed_one_does_not_stop_it(tmp_path):
    shutil.copy(ROOT / "parameters" / "ci.yaml", tmp_path / "ci.yaml")
    spec = {"base": "ci.yaml", "stages": [1, 2, 3, 4],
            "settings": {"gmvae": {"epochs": 2, "mse_for_ablation": False},
                         "classify": {"null_permutations": 0, "null_permutations_costly": 0, "small_cohort_sizes": [],
                                      "methods": ["gmvae4p", "logistic_regression"]}},
            "cohorts": {"broken": {"data": {"patient_key": "donor"}}, "ci_seed1": {"seed": 1}, "unused": {}}}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "gmvae4p", "benchmark", str(tmp_path / "bench.yaml"),
                             "--cohorts", "broken", "ci_seed1", "--output-dir", str(out)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(out / "benchmark.csv")
    assert list(table["cohort"].unique()) == ["broken", "ci_seed1"]  # the subset asked for, in that order
    broken = table[table["cohort"] == "broken"].iloc[0]
    assert broken["status"] == "failed" and "donor" in broken["error"]
    done = table[table["cohort"] == "ci_seed1"]
    assert (done["status"] == "complete").all() and {"gmvae4p", "logistic_regression"} <= set(done["method"])
    assert done["auc"].between(0, 1).all() and (done["auc_low"] <= done["auc"]).all()
    assert (done["n_patients"].dropna() == 12).all()
    index = (out / "index.md").read_text()
    assert "ci_seed1" in index and "cohort **broken** failed" in index
    assert (out / "benchmark_auc.png").is_file() and (out / "ci_seed1" / "tables" / "table1_main.csv").is_file()
    # the classifiers rerun alone on the stages already in the folder
    cells, table1 = out / "ci_seed1" / "data" / "gmvae.h5ad", out / "ci_seed1" / "tables" / "table1_main.csv"
    before = cells.stat().st_mtime_ns, table1.stat().st_mtime_ns
    result = subprocess.run([sys.executable, "-m", "gmvae4p", "benchmark", str(tmp_path / "bench.yaml"),
                             "--cohorts", "ci_seed1", "--stages", "04", "--output-dir", str(out)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert cells.stat().st_mtime_ns == before[0] and table1.stat().st_mtime_ns > before[1]
    assert (pd.read_csv(out / "benchmark.csv")["status"] == "complete").all()
