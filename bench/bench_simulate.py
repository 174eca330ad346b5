"""Time and peak memory of the cohort simulator up to the lupus cohort's shape (834,096 cells × 24,205 genes).

Each size runs in a fresh process so its peak resident memory is its own. Needs numpy, scipy and pandas only:

    PYTHONPATH=lib python bench/bench_simulate.py --fractions 0.0625 0.25 1 --repeats 3 --out bench_simulate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

LUPUS_SHAPE = {"n_cells": 834_096, "n_genes": 24_205, "n_patients": 169}
# Library size chosen so that about 4 % of entries are non-zero, as in the lupus cohort.
LUPUS_SIMULATION = {**LUPUS_SHAPE, "library_size": 1_100.0, "n_marker_genes": 50, "n_disease_genes": 100}


def one_run(fraction: float, seed: int) -> dict:
    from gmvae4p.data.simulate import simulate_cohort

    kwargs = {**LUPUS_SIMULATION, "n_cells": round(LUPUS_SIMULATION["n_cells"] * fraction)}
    start = time.perf_counter()
    cohort = simulate_cohort(**kwargs, seed=seed)
    seconds = time.perf_counter() - start
    counts = cohort.counts
    csr_gb = (counts.data.nbytes + counts.indices.nbytes + counts.indptr.nbytes) / 2**30
    return {"fraction": fraction, "n_cells": counts.shape[0], "n_genes": counts.shape[1], "seconds": seconds,
            "nnz": int(counts.nnz), "density": counts.nnz / (counts.shape[0] * counts.shape[1]),
            "csr_gb": csr_gb, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0625, 0.25, 1.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # internal: a single run in this process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args.one, args.seed)))
        return

    rows = []
    for fraction in args.fractions:
        runs = []
        for repeat in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, "--one", str(fraction), "--seed", str(repeat)],
                                 check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        rows.append({**runs[-1], "seconds_median": statistics.median(r["seconds"] for r in runs),
                     "seconds_all": [round(r["seconds"], 2) for r in runs],
                     "peak_rss_gb_max": max(r["peak_rss_gb"] for r in runs), "repeats": len(runs)})
    result = {"machine": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "rows": rows}
    print("| cells | genes | non-zero | CSR GB | median s (runs) | peak RSS GB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n_cells']:,} | {r['n_genes']:,} | {r['density']:.1%} | {r['csr_gb']:.2f} | "
              f"{r['seconds_median']:.1f} ({', '.join(map(str, r['seconds_all']))}) | {r['peak_rss_gb_max']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
