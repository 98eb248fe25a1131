#!/usr/bin/env bash
# The project's one prepared GPU check (scripts/gpu_check.py says what each step measures).
#
# On the lent GPU machine (one H200; no network; the machine's python3 has CUDA torch, transformers, lightning,
# peft and torchmetrics but no bitsandbytes), from the session's checkout:
#
#   1. Here, once per session (no GPU needed): bash scripts/gpu_check.sh --prepare
#      copies bitsandbytes (its Python files and CPU/CUDA 13 libraries, about 8 MiB) from this machine's
#      environment into .gpu_check/site/ (ignored by git) for the NF4 step; without it that step records
#      "No module named 'bitsandbytes'" and the others run.
#   2. The `run` tool:  command  "bash scripts/gpu_check.sh"   timeout_s 480   carry [".gpu_check"]
#      (the .venv is not carried: python3 there is the system's CUDA torch; lightning_split runs from the
#      source tree through PYTHONPATH, nothing is installed). Everything ends within GPU_CHECK_TIMEOUT
#      (default 420 s; no step starts after GPU_CHECK_BUDGET, default 90 s less). The results come back from
#      $OUT: gpu_check.json (every number), gpu_check.md (the summary), gpu_check.log (the progress lines).
#      Estimated (never run yet): about 3 minutes. Then call give_back, unless a step failed for a reason
#      fixable at once: then rerun only it while the machine is warm, e.g. command
#      "GPU_CHECK_TIMEOUT=200 bash scripts/gpu_check.sh --steps memory_7b throughput_7b", timeout_s 240.
#
# Here (CPU): bash scripts/gpu_check.sh --smoke   (the same code paths on tiny models, under a minute; the
# results go to $OUT, else ./gpu_check_out). tests/test_gpu_check.py runs it.
# Extra arguments go to scripts/gpu_check.py (e.g. --steps forms bf16).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    PYTHON=${PYTHON:-.venv/bin/python}
    src=$("$PYTHON" -c 'import bitsandbytes, os; print(os.path.dirname(bitsandbytes.__file__))') || exit 1
    rm -rf .gpu_check/site && mkdir -p .gpu_check/site && cp -r "$src" .gpu_check/site/bitsandbytes
    find .gpu_check/site -name __pycache__ -prune -exec rm -rf {} +
    find .gpu_check/site/bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda13*.so' -delete
    "$PYTHON" -c 'import importlib.metadata as m; print("bitsandbytes", m.version("bitsandbytes"))' \
        > .gpu_check/site/VERSIONS
    du -sh .gpu_check && echo "now run: bash scripts/gpu_check.sh (carry .gpu_check)"
    exit 0
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    [[ " $* " == *" --smoke "* && -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
# tiny models on a shared CPU: one intra-op thread is faster than several waiting on each other
[[ " $* " == *" --smoke "* ]] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ -d .gpu_check/site ]] && export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_check/site"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline WANDB_SILENT=true HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OUT

echo "[gpu_check.sh $(date -u +%H:%M:%S)] python $PYTHON, OUT $OUT, PYTHONPATH $PYTHONPATH"
limit=${GPU_CHECK_TIMEOUT:-420}
timeout -k 15 "$limit" "$PYTHON" scripts/gpu_check.py --out "$OUT" --budget-s "${GPU_CHECK_BUDGET:-$((limit - 90))}" \
    "$@" 2>&1 | tee "$OUT/gpu_check.log"
status=$?
echo "[gpu_check.sh $(date -u +%H:%M:%S)] exit status $status (124: stopped by the time limit; finished steps" \
    "are in $OUT/gpu_check.json)" | tee -a "$OUT/gpu_check.log"
exit "$status"
