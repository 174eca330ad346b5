"""Stage 04's fold workers with the small networks on the GPU or on the CPU: ``N_JOBS`` GMVAE4P fold tasks (folds
0, 1, ... of the run's own folds, repeated) submitted at once to ``N_JOBS`` workers; prints the wall time until the
last one ends and each task's seconds, and the workers' memory (GB, from ``/proc/self/smaps_rollup``) when started,
after their first CUDA operation (on ``cuda``) and after the folds, beside the kernel's after reading its inputs.

    python bench/bench_fold_workers.py RUN_FOLDER PARAMETERS_FILE N_JOBS {cuda,cpu}

RUN_FOLDER holds stages 01-03 of a run of PARAMETERS_FILE. Workers take their share of the cores, as in stage 04.
Needs anndata but not scanpy or papermill.
"""

import sys
import time

ROLLUP_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean")


def memory(_shared=None) -> dict[str, float]:
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1]) / 2**20
    return {k: round(fields.get(k, 0.0), 3) for k in ROLLUP_FIELDS}


def touch_cuda(_shared) -> dict[str, float]:
    import torch

    torch.ones(1, device="cuda").sum().item()
    return memory()


def main() -> None:
    from gmvae4p.classify import evaluate
    from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
    from gmvae4p.classify.workers import FoldWorkers
    from gmvae4p.data import read_h5ad
    from gmvae4p.layout import RunLayout
    from gmvae4p.params import load

    folder, parameters, n_jobs, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    settings = load(parameters).sections["classify"]
    layout = RunLayout(folder)
    samples = read_h5ad(layout.pseudobulk, mapped=True)
    cells = read_h5ad(layout.gmvae_cells, x=False, layers=False)
    units = unit_table(samples, evaluate.positive_label(cells, samples, settings.positive_label))
    folds = patient_folds(units, n_folds=settings.n_folds, validation_fraction=settings.validation_fraction, seed=0)
    y = sample_labels(samples, units)
    print("kernel after reading", memory(), flush=True)
    with FoldWorkers(samples, None, n_jobs=n_jobs) as workers:
        ask = lambda function: [task.result()[0] for task in [workers.submit(function) for _ in range(n_jobs)]]
        print("workers started", ask(memory), flush=True)  # every worker up before the clock starts
        if device == "cuda":
            print("workers after touching CUDA", ask(touch_cuda), flush=True)
        start = time.perf_counter()
        tasks = [workers.submit(evaluate._gmvae4p_fold, y, folds[i % len(folds)], settings, settings.n_top_genes,
                                settings.n_top_interactions, evaluate.MODALITIES, None, device, 0)
                 for i in range(n_jobs)]
        seconds = [round(task.result()[1], 2) for task in tasks]
        wall = time.perf_counter() - start
        print(f"device {device}, {n_jobs} workers: {n_jobs} GMVAE4P folds in {wall:.1f} s (each task {seconds} s)",
              flush=True)
        print("workers after the folds", ask(memory), flush=True)


if __name__ == "__main__":
    main()
