"""The cohort benchmark: ``python -m gmvae4p benchmark parameters/benchmark.yaml`` runs stages 01–04 on many
cohorts and puts every method's Table 1 row of every cohort in one table and one figure.

A benchmark file names a ``base`` parameters file (taken from the benchmark file's folder), ``settings`` that every
cohort shares on top of it (e.g. Table 2 off), the ``stages`` to run and the ``cohorts``: each one a mapping of
parameter sections merged over the base and the shared settings (a simulated regime changes ``simulate``), or
``file: <parameters file>`` for a cohort described by its own file (a real cohort), to which only the shared settings
are added. Every cohort is checked before the first one runs. A cohort whose run fails is recorded as failed, with
its error, and the others go on.

Writes under ``output_dir`` (default ``outputs/<name of the file>``): one run folder per cohort, ``benchmark.csv``
(cohort, method, AUC with its CI over patients, balanced accuracy, units and patients, the run's status),
``benchmark_auc.png`` (AUC of each method on each cohort; its data in ``benchmark_auc.csv``), and ``index.md``.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pandas as pd
import yaml

from . import params as params_module
from .data import write_csv
from .data.atomic import atomic_path
from .params import ParameterError

TOP_LEVEL = ("base", "settings", "stages", "cohorts")
COLUMNS = ["cohort", "status", "method", "auc", "auc_low", "auc_high", "balanced_accuracy", "n_units", "n_patients",
           "wall_s", "error"]


def load(path: str | os.PathLike) -> dict[str, dict]:
    """Each cohort's checked parameters mapping, by name, from a benchmark file (errors name the cohort)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"benchmark file {path} does not exist.")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - set(TOP_LEVEL)
    if unknown or not isinstance(raw.get("cohorts"), dict) or not raw["cohorts"]:
        raise ParameterError(f"{path}: a benchmark file holds {list(TOP_LEVEL)}, with at least one cohort under "
                             f"'cohorts'" + (f"; unknown: {sorted(unknown)}" if unknown else "") + ".")
    folder = path.parent
    base = _read_yaml(folder / raw["base"]) if raw.get("base") else {}
    shared = raw.get("settings") or {}
    cohorts = {}
    for name, spec in raw["cohorts"].items():
        spec = dict(spec or {})
        if "file" in spec:
            mapping = _merge(_read_yaml(folder / spec.pop("file")), shared)
            mapping = _merge(mapping, spec)
        else:
            mapping = _merge(_merge(base, shared), spec)
        mapping["run_name"] = str(name)
        data = mapping.get("data") or {}
        if data.get("path"):  # taken from the folder you run from, as in a parameters file
            data["path"] = str(Path(data["path"]).expanduser().resolve())
        checked = params_module.from_mapping(mapping, where=f"{path}: cohort {name}", default_run_name=str(name))
        if checked.sections["data"].path and not Path(checked.sections["data"].path).is_file():
            raise ParameterError(f"{path}: cohort {name}: data.path {checked.sections['data'].path} does not exist.")
        cohorts[str(name)] = mapping
    return cohorts


def stages_of(path: str | os.PathLike) -> list[str]:
    """The stages a benchmark file runs (default 01–04)."""
    return [str(s).zfill(2) for s in (yaml.safe_load(Path(path).read_text()) or {}).get("stages", [1, 2, 3, 4])]


def run(path: str | os.PathLike, *, cohorts: list[str] | None = None, output_dir: str | os.PathLike | None = None,
        stages: list[str] | None = None, log_output: bool = False) -> Path:
    """Run the benchmark (or the ``cohorts`` named) and return its folder; ``stages`` (default: the file's) may
    rerun later stages in cohort folders that hold the earlier ones, e.g. ``["04"]`` after a change to the
    classifier."""
    from .pipeline import run as run_chain

    settings = load(path)
    chosen = list(settings) if not cohorts else cohorts
    missing = [c for c in chosen if c not in settings]
    if missing:
        raise ParameterError(f"--cohorts: {missing} not in {path} (its cohorts: {list(settings)}).")
    root = Path(output_dir or Path("outputs") / Path(path).stem)
    root.mkdir(parents=True, exist_ok=True)
    stages = list(stages) if stages else stages_of(path)
    rows = []
    for index, name in enumerate(chosen, 1):
        print(f"benchmark: cohort {index}/{len(chosen)}: {name}", flush=True)
        folder = root / name
        folder.mkdir(exist_ok=True)
        parameters = folder / "parameters.yaml"
        with atomic_path(parameters) as temporary:
            Path(temporary).write_text(yaml.safe_dump(settings[name], sort_keys=False))
        start = time.perf_counter()
        try:
            run_chain(parameters, output_dir=folder, stages=stages, log_output=log_output)
            table = pd.read_csv(folder / "tables" / "table1_main.csv")
            for row in table.to_dict("records"):
                rows.append({"cohort": name, "status": "complete", **row})
            status = "complete"
        except Exception as err:  # noqa: BLE001 — a failed cohort is a result: recorded, and the others go on
            rows.append({"cohort": name, "status": "failed", "error": f"{type(err).__name__}: {err}"})
            status = "failed"
        for row in rows:
            if row["cohort"] == name:
                row["wall_s"] = round(time.perf_counter() - start, 1)
        print(f"benchmark: cohort {name}: {status}", flush=True)
        _write(root, pd.DataFrame(rows).reindex(columns=COLUMNS))  # after every cohort: a stopped run keeps its rows
    return root


def _write(root: Path, table: pd.DataFrame) -> None:
    from . import plots

    write_csv(table, root / "benchmark.csv")
    complete = table[table["status"] == "complete"].dropna(subset=["auc"])
    if len(complete):
        fig, data = plots.benchmark_heatmap(complete)
        plots.save_figure(fig, data, root, "benchmark_auc")
    lines = ["# Cohort benchmark", "", "AUC [95 % CI over patients] per method and cohort (`benchmark.csv`, figure "
             "`benchmark_auc.png`).", ""]
    if len(complete):
        cell = complete.assign(text=complete.apply(
            lambda r: f"{r['auc']:.3f} [{r['auc_low']:.2f}, {r['auc_high']:.2f}]", axis=1))
        wide = cell.pivot(index="method", columns="cohort", values="text")
        wide = wide.reindex(index=list(dict.fromkeys(cell["method"])), columns=list(dict.fromkeys(cell["cohort"])))
        lines += [_markdown(wide.reset_index().fillna("")), ""]
        means = complete[~complete["method"].str.startswith("oracle")].groupby("method", sort=False)["auc"].mean()
        lines += ["Mean AUC over the cohorts above: " + ", ".join(f"{m} {v:.3f}" for m, v in
                                                                   means.sort_values(ascending=False).items()), ""]
    failed = table[table["status"] == "failed"]
    for row in failed.itertuples():
        lines.append(f"- cohort **{row.cohort}** failed: {row.error}")
    with atomic_path(root / "index.md") as temporary:
        Path(temporary).write_text("\n".join(lines) + "\n")


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ParameterError(f"benchmark: parameters file {path} does not exist.")
    return yaml.safe_load(path.read_text()) or {}


def _merge(base: dict, change: dict) -> dict:
    """``base`` with ``change`` laid over it, section by section (a section's names merge; other values replace)."""
    merged = copy.deepcopy(base)
    for key, value in (change or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged
