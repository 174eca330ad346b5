"""Throughput of stage 04's fold workers with the small networks on the GPU or on the CPU: ``N_JOBS`` GMVAE4P fold
tasks (folds 0, 1, ... of the run's own folds, repeated) submitted at once to ``N_JOBS`` workers, wall time until the
last one ends, then each worker's PSS (GB).

    python bench/bench_fold_workers.py RUN_FOLDER PARAMETERS_FILE N_JOBS {cuda,cpu}

RUN_FOLDER holds stages 01-03 of a run of PARAMETERS_FILE. Workers take their share of the cores, as in stage 04.
"""

import sys
import time


def pss(_shared=None) -> float:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return round(int(line.split()[1]) / 2**20, 3)
    return float("nan")


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
    with FoldWorkers(samples, None, n_jobs=n_jobs) as workers:
        for task in [workers.submit(pss) for _ in range(n_jobs)]:  # every worker up before the clock starts
            task.result()
        start = time.perf_counter()
        tasks = [workers.submit(evaluate._gmvae4p_fold, y, folds[i % len(folds)], settings, settings.n_top_genes,
                                settings.n_top_interactions, evaluate.MODALITIES, None, device, 0)
                 for i in range(n_jobs)]
        seconds = [round(task.result()[1], 2) for task in tasks]
        wall = time.perf_counter() - start
        sizes = [workers.submit(pss).result()[0] for _ in range(n_jobs)]
    print(f"device {device}, {n_jobs} workers: {n_jobs} GMVAE4P folds in {wall:.1f} s (each task {seconds} s); "
          f"worker PSS after, as asked {sizes} GB", flush=True)


if __name__ == "__main__":
    main()
