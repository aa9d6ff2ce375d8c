#!/usr/bin/env bash
# Images/s of SING-Zero and SING-INN at 256 px, 100 steps, bf16, on a CUDA GPU.
#
#   bash benchmarks/gpu.sh [--dry-run] [OUT] [-- extra gpu_throughput.py options]
#
# OUT: where gpu_throughput.json / .md go (default: $OUT, else outputs/benchmarks/gpu). The
# prior is google/ddpm-ema-celebahq-256's architecture with seeded random weights, laid out as a
# Hugging Face cache in OUT/hf/hub (HF_HUB_CACHE, HF_HUB_OFFLINE=1: nothing is downloaded), so
# the numbers are timing only. PYTHON picks the interpreter (default .venv/bin/python, else
# python3); src/ is put on PYTHONPATH, so singexp need not be installed.
# Without a CUDA GPU it says so in one line and exits 3 before anything is written.
# --dry-run prints the command it would run and exits 0 (no GPU needed). About 3-5 minutes on
# an H200 (the direct measurement, then one CLI run of the main job).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then
    dry_run=1
    shift
fi
out="${OUT:-outputs/benchmarks/gpu}"
if [[ $# -gt 0 && "$1" != "--" ]]; then
    out="$1"
    shift
fi
[[ "${1:-}" == "--" ]] && shift
out="$(realpath -m "$out")"  # absolute: the CLI run works in a folder of its own

python="${PYTHON:-.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

command=("$python" benchmarks/gpu_throughput.py --out "$out" --steps 100 --precision bf16
    --batches 1 16 --test-images 32 "$@")

if [[ $dry_run == 1 ]]; then
    echo "HF_HUB_CACHE=$out/hf/hub HF_HUB_OFFLINE=1 PYTHONPATH=$PWD/src ${command[*]}"
    exit 0
fi

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    >/dev/null 2>&1; then
    echo "gpu.sh: no CUDA GPU (torch sees none); nothing run" >&2
    exit 3
fi

mkdir -p "$out"
export HF_HUB_CACHE="$out/hf/hub" HF_HUB_OFFLINE=1 WANDB_MODE=offline
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${command[@]}"
