#!/usr/bin/env bash
# Issue 22's two GPU measurements in one prepared script, under 8 minutes on one H100 (benchmarks/gpu_round2.py):
# clean and PGD-20 error of --speed exact vs --speed fast (3 seeds each), and runs/hour of 1, 2, 4 runs at once.
#   bash benchmarks/gpu_round2.sh [OUT_DIR] [gpu_round2.py options]
#   bash benchmarks/gpu_round2.sh OUT_DIR --device cpu --quick --seeds 2   # its code paths on a CPU, in a minute
# Fashion-MNIST is read from .gpudata/ when present (its idx files carried to a machine with no network).
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-gpu-round2-out}"
if [ $# -gt 0 ]; then out_dir="$1"; shift; fi
data_args=()
if [ -d .gpudata ]; then data_args=(--data-dir .gpudata); fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 470 python3 benchmarks/gpu_round2.py --out "$out_dir" "${data_args[@]}" "$@"
