#!/usr/bin/env bash
# The GPU check, one prepared script: under 8 minutes on one H100 (see benchmarks/gpu_check.py): the FLOP count
# of one step, the step speeds (each variant under its own torch flags, the plain loop under PyTorch's stock ones),
# the profile of one compiled graphed step (top 10 kernels), the sync check, the CUDA tests, short real runs.
# Its own estimates: about 6 minutes of work (sections start only within a 6.5-minute budget), stopped at 7.8.
#   bash benchmarks/gpu_check.sh [OUT_DIR] [gpu_check.py options]
#   bash benchmarks/gpu_check.sh OUT_DIR --device cpu --quick --profile   # its code paths on a CPU, in seconds
# Fashion-MNIST is read from .gpudata/ when present (a copy of its idx files carried to a machine with no
# network), else from iat's usual places. Figures go to OUT_DIR/gpu_check.{json,md}.
set -uo pipefail
cd "$(dirname "$0")/.."
script="${GPU_SCRIPT:-gpu_check.py}"  # gpu_round2.sh runs benchmarks/gpu_round2.py the same way
out_dir="${OUT:-${script%.py}-out}"
if [ $# -gt 0 ]; then out_dir="$1"; shift; fi
data_args=()
if [ -d .gpudata ]; then data_args=(--data-dir .gpudata); fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "gpu_check: needs Python >= 3.10" >&2; exit 2; }
exec timeout 470 python3 "benchmarks/$script" --out "$out_dir" "${data_args[@]}" "$@"
