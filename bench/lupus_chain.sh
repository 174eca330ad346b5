#!/usr/bin/env bash
# The whole chain on parameters/lupus_sim.yaml's cohort (834,096 simulated cells × 24,205 genes, 169 patients) on the device
# machine, whose image has torch, numpy, scipy, pandas, scikit-learn, h5py, matplotlib and numba but not anndata,
# scanpy, papermill or the Jupyter kernel: those travel as wheels in .whl/ (bench/lupus_chain_wheels.txt lists them).
#
# A device command runs at most 10 minutes, so the chain runs detached and later calls follow it:
#   bash bench/lupus_chain.sh start            # installs the wheels (once per machine), starts the chain (setsid)
#   bash bench/lupus_chain.sh follow 540       # waits up to 540 s for the chain, then packs what it wrote into $OUT
# Each call names .whl in `carry`; `follow` is made right after the previous call returns (the machine is given back
# when idle). CLASSIFY_DEVICE=cpu (or cuda) before `start` sets stages 04-05's classify.device (default: the file's);
# SCALE (default 1.0) multiplies the cohort's cells and PATIENTS sets its patients (e.g. SCALE=2.4 PATIENTS=400: two
# million cells); STAGES (e.g. "01 02 03 04") runs only those stages; CUDA_TESTS=1 runs tests/test_cuda_training.py
# first ($OUT/cuda_tests.txt; it compiles the Triton kernels, so the chain then starts with a warm kernel cache).
# Results: $OUT/lupus_sim.tar.gz (run.json,
# index.md, tables, figures, executed notebooks), $OUT/chain.log.
# The cohort is simulated into an .h5ad first (bench/bench_stage01_memory.py, which prints the simulation's memory)
# and the chain reads that file, as it would a real cohort's: stage 01's time and memory are then those of reading
# and preprocessing, not of the simulator.
set -euo pipefail

RUN=/tmp/lupus_sim
SITE=/tmp/site
LOG=/tmp/lupus_chain.log
CELLS=/tmp/lupus_cells.h5ad
PARAMETERS=/tmp/lupus_sim_file.yaml
export PYTHONPATH="$SITE:$PWD/lib" PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

pack() {
    mkdir -p "${OUT:-/tmp/out}"
    cp "$LOG" "${OUT:-/tmp/out}/chain.log" 2>/dev/null || true
    if [ -d "$RUN" ]; then
        tar -czf "${OUT:-/tmp/out}/lupus_sim.tar.gz" -C "$RUN" --exclude=data --exclude=models .
    fi
}

case "${1:-}" in
start)
    # once per machine: reinstalling would give the packages new files, and numba's on-disk cache of umap-learn's
    # compiled code (keyed on its source files) would then be compiled again in every run
    if [ ! -f "$SITE/.installed" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
        touch "$SITE/.installed"
    fi
    python3 -c "import anndata, scanpy, papermill, ipykernel, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    if [ -n "${CUDA_TESTS:-}" ]; then
        mkdir -p "${OUT:-/tmp/out}"
        python3 -m pytest --noconftest -q -p no:cacheprovider tests/test_cuda_training.py \
            >"${OUT:-/tmp/out}/cuda_tests.txt" 2>&1 || true
        tail -n 5 "${OUT:-/tmp/out}/cuda_tests.txt"
    fi
    rm -rf "$RUN"
    python3 bench/bench_stage01_memory.py simulate "${SCALE:-1.0}" "$CELLS" ${PATIENTS:-}
    python3 -c "
import yaml
settings = yaml.safe_load(open('parameters/lupus_sim.yaml'))
del settings['simulate']
settings['data']['path'] = '$CELLS'
if '${CLASSIFY_DEVICE:-}':
    settings['classify']['device'] = '${CLASSIFY_DEVICE:-}'
yaml.safe_dump(settings, open('$PARAMETERS', 'w'), sort_keys=False)"
    setsid nohup python3 -m gmvae4p run "$PARAMETERS" --output-dir "$RUN" ${STAGES:+--stages $STAGES} >"$LOG" 2>&1 \
        < /dev/null &
    sleep 60
    tail -c 2000 "$LOG"
    ;;
follow)
    deadline=$((SECONDS + ${2:-540}))
    while [ $SECONDS -lt $deadline ] && pgrep -f "gmvae4p run $PARAMETERS" >/dev/null; do
        sleep 10
    done
    python3 -c "
import json, sys
record = json.load(open('$RUN/run.json'))
print('status', record['status'], 'total_wall_s', record.get('total_wall_s'))
for s in record['stages']:
    print(s['stage'], s['status'], s.get('wall_s'), 'rss', s.get('peak_rss_gb'), 'pss', s.get('peak_pss_gb'),
          'gpu', s.get('peak_gpu_gb'), s.get('error', ''))
" || true
    python3 -c "
import json, pathlib
for path in sorted(pathlib.Path('$RUN/notebooks').glob('*.ipynb')):
    cells = json.loads(path.read_text())['cells']
    slow = [(c['metadata'].get('papermill', {}).get('duration') or 0, ''.join(c['source']).splitlines()[0][:70])
            for c in cells if c['cell_type'] == 'code']
    print(path.stem, ' | '.join(f'{d:.1f}s {s}' for d, s in slow if d > 3))
" || true
    free -g | head -2
    pack
    tail -c 3000 "$LOG" | tr '\r' '\n' | tail -n 25
    ;;
*)
    echo "usage: bash bench/lupus_chain.sh start | follow [seconds]" >&2
    exit 2
    ;;
esac
