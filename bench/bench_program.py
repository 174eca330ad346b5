"""Time of learning GMVAE4P's disease program (:class:`gmvae4p.classify.program.LearnedProgram`) once per fold at the
lupus cohort's pseudobulk shape, and of reading its score: numpy, scipy and pandas only.

Synthetic pseudobulk: ``--patients`` patients (a training fold's share, ``--train-share``) × 10 mixture samples of
24,205 genes, log-scale values with donor effects and a 40-gene program driven by a latent activity that the labels
read noisily, so the co-expression steps run as they do on a real cohort. Prints and writes the median of
``--repeats`` fits.

    python bench/bench_program.py --out bench/results/program_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from gmvae4p.classify.program import LearnedProgram  # noqa: E402

N_PROGRAM = 40


def pseudobulk(n_patients: int, n_samples: int, n_genes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_unit = np.arange(n_patients) % 2
    activity = y_unit + rng.normal(0, 0.6, n_patients)
    means = rng.normal(2.0, 1.0, n_genes) + rng.normal(0, 0.15, (n_patients, n_genes)).astype(np.float32)
    means[:, :N_PROGRAM] += 0.6 * np.outer(activity, rng.uniform(0.5, 1.5, N_PROGRAM))
    units = np.repeat(np.arange(n_patients), n_samples)
    values = means[units] + rng.normal(0, 0.3, (len(units), n_genes)).astype(np.float32)
    return values.astype(np.float32), units.astype(str), y_unit[units]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--patients", type=int, default=169)
    parser.add_argument("--train-share", type=float, default=0.64, help="of the patients: outer 4/5, less 1/5 "
                        "held for validation")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--genes", type=int, default=24_205)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    values, units, y = pseudobulk(args.patients, args.samples, args.genes)
    train = np.flatnonzero(units.astype(int) < round(args.train_share * args.patients))
    fits, scores = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        program = LearnedProgram.fit(values, train, units, y)
        fits.append(time.perf_counter() - start)
        start = time.perf_counter()
        program.score(values, np.arange(len(units)))
        scores.append(time.perf_counter() - start)
    result = {"patients": args.patients, "training_units": len(np.unique(units[train])),
              "training_samples": len(train), "genes": args.genes, "machine": platform.processor() or platform.machine(),
              "fit_seconds": [round(s, 3) for s in fits], "fit_seconds_median": round(statistics.median(fits), 3),
              "score_seconds_median": round(statistics.median(scores), 4), "program_genes": len(program.genes),
              "program_genes_planted": int(np.sum(program.genes < N_PROGRAM))}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
