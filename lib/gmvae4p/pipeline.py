"""The chain runner: ``python -m gmvae4p run parameters/demo.yaml`` executes the stage notebooks with papermill.

Each notebook in :data:`STAGES` that exists runs in turn into ``outputs/<run>/notebooks/``, given the parameter
sections its ``parameters`` cell declares plus ``output_dir``. ``run.json`` records the parameters, package
versions, hardware and, per stage, wall time, the peak resident memory of the kernel and the peak GPU memory in use
(both sampled; GPU memory where NVML answers), rewritten atomically after every stage; at the end ``index.md`` lists
what the run wrote, with its headline numbers. A failing notebook stops the chain; the error names the stage and the
cell, and the partially executed notebook stays for inspection.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import papermill as pm
import psutil

from . import package_versions, params as params_module, preflight
from .data import atomic_path
from .layout import RunLayout
from .report import write_index

STAGES = ("01_preprocess", "02_train_gmvae", "03_pseudobulk", "04_classify", "05_ablation", "06_figures")
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
"""The stage notebooks, package data (the repository's ``notebooks/`` links here)."""
PACKAGES = ("gmvae4p", "numpy", "scipy", "pandas", "anndata", "scanpy", "torch", "scikit-learn", "xgboost-cpu",
            "liana", "umap-learn", "matplotlib", "papermill")


class StageFailed(RuntimeError):
    """A stage notebook raised; the message names the stage, the cell and the error."""


def run(parameters_file: str | os.PathLike, *, output_dir: str | os.PathLike | None = None,
        stages: list[str] | None = None, notebooks: Path = NOTEBOOKS, log_output: bool = True) -> Path:
    """Run the chain; return the run folder. Raises ParameterError before anything runs, StageFailed after."""
    params = params_module.load(parameters_file)
    selected = _select_stages(stages, notebooks)
    notes = preflight.check(params, selected)  # raises before anything is computed or written
    for note in notes:
        print(f"gmvae4p: note: {note}", flush=True)
    if params.sections["data"].label_key is None:
        selected = [s for s in selected if s not in preflight.PATIENT_STAGES]
    layout = RunLayout(output_dir or Path("outputs") / params.run_name)
    record = {
        "run_name": params.run_name,
        "parameters_file": str(Path(parameters_file).resolve()),
        "parameters": params.to_dict(),
        "command": " ".join(sys.argv),
        "started": _now(),
        "status": "running",
        "versions": _versions(),
        "hardware": _hardware(),
        "notes": notes,
        "stages": _earlier_stages(layout, params.run_name, selected),
    }
    _write_record(layout, record)
    for number, stage in enumerate(selected, 1):
        print(f"gmvae4p: stage {stage} ({number} of {len(selected)}) → {layout.notebooks / (stage + '.ipynb')}",
              flush=True)
        source = notebooks / f"{stage}.ipynb"
        declared = pm.inspect_notebook(str(source))
        values = {**params.notebook_parameters(declared), "output_dir": str(layout.root)}
        target = layout.notebooks / source.name
        entry = {"stage": stage, "notebook": str(target), "status": "running", "started": _now()}
        record["stages"].append(entry)
        failure, completed = None, False
        with _PeakMemory() as memory:
            start = time.perf_counter()
            try:
                # the kernel talks to this process over local TCP; its warning about that says nothing to a user
                pm.execute_notebook(str(source), str(target), parameters=values, cwd=str(notebooks),
                                    kernel_name="python3", progress_bar=True, log_output=log_output,
                                    extra_arguments=["--IPKernelApp.log_level=ERROR"])
                completed = True
            except pm.PapermillExecutionError as err:
                entry["error"] = f"{err.ename}: {err.evalue}"
                failure = StageFailed(f"stage {stage} failed in cell {err.exec_count} with {err.ename}: "
                                      f"{err.evalue} (partly executed notebook: {target})")
            finally:  # also when the kernel dies or the run is interrupted: the record says the stage failed
                entry["status"] = "complete" if completed else "failed"
                entry["wall_s"] = round(time.perf_counter() - start, 3)
                entry["peak_rss_gb"] = round(memory.peak / 2**30, 3)
                entry["peak_pss_gb"] = round(memory.peak_pss / 2**30, 3) if memory.peak_pss else None
                if memory.peak_pss:  # where that peak was: the kernel, then each process it had started
                    entry["peak_pss_by_process_gb"] = [round(p / 2**30, 3) for p in memory.peak_pss_by_process]
                entry["peak_gpu_gb"] = None if memory.peak_gpu is None else round(memory.peak_gpu / 2**30, 3)
                record["status"] = "running" if entry["status"] == "complete" else "failed"
                _write_record(layout, record)
        if failure is not None:
            write_index(layout, record)
            raise failure
    # after a partial rerun the record spans the earlier stages too: from the first stage's start to now
    record.update(status="complete", started=min(s["started"] for s in record["stages"]), finished=_now(),
                  total_wall_s=round(sum(s["wall_s"] for s in record["stages"]), 3))
    _write_record(layout, record)
    write_index(layout, record)
    return layout.root


def _select_stages(stages: list[str] | None, notebooks: Path) -> list[str]:
    present = [s for s in STAGES if (notebooks / f"{s}.ipynb").is_file()]
    if not stages:
        return present
    chosen = []
    for wanted in stages:
        matches = [s for s in present if s == wanted or s.split("_")[0] == wanted]
        if not matches:
            raise params_module.ParameterError(f"--stages: no stage notebook {wanted!r} in {notebooks} "
                                               f"(present: {present}).")
        chosen += matches
    return [s for s in present if s in chosen]


def _earlier_stages(layout: RunLayout, run_name: str, selected: list[str]) -> list[dict]:
    """The completed stages of an earlier run of ``run_name`` into the same folder that this run does not repeat
    (``--stages`` reruns part of a chain: the record and Table 5 keep the rest)."""
    if not layout.run_record.is_file():
        return []
    try:
        earlier = json.loads(layout.run_record.read_text())
    except json.JSONDecodeError:
        return []
    if earlier.get("run_name") != run_name:
        return []
    return [s for s in earlier.get("stages", []) if s.get("status") == "complete" and s["stage"] not in selected]


def _write_record(layout: RunLayout, record: dict) -> None:
    record["stages"].sort(key=lambda entry: STAGES.index(entry["stage"]))
    with atomic_path(layout.run_record) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    return {**package_versions(PACKAGES), "python": platform.python_version()}


def _hardware() -> dict:
    info = {"machine": platform.machine(), "system": platform.platform(), "cpu_count": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpus": []}
    try:
        import torch

        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA install must not stop a CPU run from being recorded
        pass
    return info


class _PeakMemory:
    """Samples the summed resident memory of this process's children (the kernel and what it spawns: ``peak``, and
    where Linux reports it ``peak_pss``, the proportional set size, which counts a page that processes share once, as
    libraries and forked workers' untouched memory are) and, where
    NVML answers (``nvidia-ml-py``, an NVIDIA driver), the GPU memory in use on all GPUs above what was in use when
    sampling began; ``peak_gpu`` stays None without NVML. ``peak_pss_by_process`` splits the PSS peak: the kernel's
    share first, then that of each process it started, largest first."""

    INTERVAL_S = 0.2

    def __enter__(self):
        self.peak, self.peak_pss, self.peak_gpu, self.peak_pss_by_process = 0, 0, None, []
        self._gpus = _nvml_handles()
        self._gpu_baseline = _gpu_used(self._gpus)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            rss, kernel, others = 0, 0, []
            for child in me.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                    pss = getattr(child.memory_full_info(), "pss", 0)
                    is_kernel = child.ppid() == me.pid
                except psutil.Error:
                    continue
                if is_kernel:
                    kernel += pss
                else:
                    others.append(pss)
            self.peak = max(self.peak, rss)
            if kernel + sum(others) > self.peak_pss:
                self.peak_pss = kernel + sum(others)
                self.peak_pss_by_process = [kernel, *sorted(others, reverse=True)]
            if self._gpus:
                self.peak_gpu = max(self.peak_gpu or 0, _gpu_used(self._gpus) - self._gpu_baseline)
            self._stop.wait(self.INTERVAL_S)


def _nvml_handles() -> list:
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no nvidia-ml-py, no driver, no GPU: GPU memory is not recorded
        return []


def _gpu_used(handles: list) -> int:
    if not handles:
        return 0
    import pynvml

    return sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles)
