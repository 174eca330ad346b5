#!/usr/bin/env bash
# The README's main command, timed: the whole chain on the embedded cohort, N times into fresh folders, each run's
# run.json kept (per-stage wall time and peak memory). Median and per-stage split: BENCHMARKS.md.
#   bash bench/bench_demo_chain.sh 3 bench/results/demo_chain_cpu_$(date +%F)
set -euo pipefail
repeats=${1:-3}
results=${2:-bench/results/demo_chain}
mkdir -p "$results"
for i in $(seq 1 "$repeats"); do
    out=$(mktemp -d)
    start=$(date +%s.%N)
    .venv/bin/python -m gmvae4p run parameters/demo.yaml --output-dir "$out/demo" --quiet
    end=$(date +%s.%N)
    cp "$out/demo/run.json" "$results/run_$i.json"
    echo "run $i: $(echo "$end - $start" | bc) s (command wall time)" | tee -a "$results/command_wall_s.txt"
    rm -rf "$out"
done
