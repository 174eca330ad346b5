"""benchmark.csv of the ten cohorts from the two runs of this folder: the eight simulated cohorts (stage 04 rerun on
the stages 01-03 of the AUC-weighted run) and the two real ones (stages 01-04); in the order of
parameters/benchmark.yaml. Usage: merge.py [FOLDER] (default: this one; then
../cohort_benchmark_cpu_2026-12-06_batch_strata/table.py FOLDER)"""
import sys
from pathlib import Path

import pandas as pd

here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
merged = pd.concat([pd.read_csv(here / "benchmark_simulated.csv"), pd.read_csv(here / "benchmark_real.csv")])
order = ["demo_seed1", "demo_seed2", "demo_seed3", "rare_type_state", "composition_only", "two_programs",
         "strong_broad", "no_effect", "kang_paired", "covid"]
merged = merged.set_index("cohort").loc[[c for c in order if c in set(merged["cohort"])]].reset_index()
merged.to_csv(here / "benchmark.csv", index=False)
