"""Host memory of stage 04's fold workers: each worker's /proc/self/smaps_rollup (GB) when started, after touching
CUDA (where there is a GPU) and after one GMVAE4P fold, beside the kernel's after reading its inputs.

    python bench/bench_worker_memory.py RUN_FOLDER N_JOBS PARAMETERS_FILE

RUN_FOLDER holds stages 01-03 of a run of PARAMETERS_FILE (e.g. `python -m gmvae4p run parameters/ci.yaml --stages
01 02 03`). Needs anndata but not scanpy or papermill (runs on the device machine with a few carried wheels).
"""

import sys

ROLLUP_FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean")


def rollup(_shared=None) -> dict[str, float]:
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                fields[parts[0][:-1]] = int(parts[1]) / 2**20
    return {k: round(fields.get(k, 0.0), 3) for k in ROLLUP_FIELDS}


def touch_cuda(_shared) -> dict[str, float]:
    import torch

    if torch.cuda.is_available():
        torch.ones(1, device="cuda").sum().item()
    return rollup()


def main() -> None:
    from gmvae4p.classify import evaluate
    from gmvae4p.classify.cv import patient_folds, sample_labels, unit_table
    from gmvae4p.classify.workers import FoldWorkers
    from gmvae4p.data import read_h5ad
    from gmvae4p.layout import RunLayout
    from gmvae4p.params import load

    folder, n_jobs, parameters = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = load(parameters).sections["classify"]
    layout = RunLayout(folder)
    samples = read_h5ad(layout.pseudobulk, mapped=True)
    cells = read_h5ad(layout.gmvae_cells, x=False, layers=False)
    units = unit_table(samples, evaluate.positive_label(cells, samples, settings.positive_label))
    folds = patient_folds(units, n_folds=settings.n_folds, validation_fraction=settings.validation_fraction, seed=0)
    y = sample_labels(samples, units)
    print("kernel after reading", rollup(), flush=True)
    with FoldWorkers(samples, None, n_jobs=n_jobs) as workers:
        ask = lambda function: [workers.submit(function).result()[0] for _ in range(n_jobs)]
        print("worker started", ask(rollup), flush=True)
        print("worker after touching CUDA", ask(touch_cuda), flush=True)
        tasks = [workers.submit(evaluate._gmvae4p_fold, y, folds[i % len(folds)], settings, settings.n_top_genes,
                                settings.n_top_interactions, evaluate.MODALITIES, None, None, 0)
                 for i in range(n_jobs)]
        for task in tasks:
            task.result()
        print("worker after a GMVAE4P fold", ask(rollup), flush=True)


if __name__ == "__main__":
    main()
