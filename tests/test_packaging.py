import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
import yaml

from conftest import ROOT
from gmvae4p.pipeline import STAGES

CONDA_TO_PYPI = {"pytorch": "torch", "py-xgboost-cpu": "xgboost-cpu"}
NOT_PACKAGES = {"python", "pip"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {CONDA_TO_PYPI.get(_name(d), _name(d)) for d in env["dependencies"] if isinstance(d, str)}
    assert conda - NOT_PACKAGES == declared
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e ."]
    assert "conda-forge" in env["channels"]
    assert "python=3.11" in env["dependencies"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


@pytest.mark.slow
def test_a_non_editable_install_runs_the_chain_from_another_folder(tmp_path):
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    source.mkdir()  # a copy: building in the checkout would leave build/ and egg-info there
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(wheels), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("gmvae4p-*.whl"))
    assert {f"gmvae4p/notebooks/{stage}.ipynb" for stage in STAGES} <= set(zipfile.ZipFile(wheel).namelist())
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(ROOT / "parameters" / "ci.yaml", elsewhere / "ci.yaml")
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not this checkout's lib/
    where = subprocess.run([sys.executable, "-c", "import gmvae4p.pipeline as p; print(p.NOTEBOOKS)"], env=env,
                           cwd=elsewhere, capture_output=True, text=True)
    assert where.stdout.strip() == str(site / "gmvae4p" / "notebooks"), where.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "gmvae4p", "run", "ci.yaml", "--stages", "01", "--quiet"], env=env,
                         cwd=elsewhere, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (elsewhere / "outputs" / "ci" / "data" / "preprocessed.h5ad").is_file()
