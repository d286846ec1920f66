#!/usr/bin/env bash
# Issue 22's two GPU measurements in one prepared script, under 8 minutes on one H100 (benchmarks/gpu_round2.py):
# clean and PGD-20 error of --speed exact vs --speed fast (3 seeds each), and runs/hour of 1, 2, 4 runs at once.
#   bash benchmarks/gpu_round2.sh [OUT_DIR] [gpu_round2.py options]
#   bash benchmarks/gpu_round2.sh OUT_DIR --device cpu --quick --seeds 2   # its code paths on a CPU, in a minute
# The set-up (Fashion-MNIST from .gpudata/, PYTHONPATH, the 470 s limit) is gpu_check.sh's.
GPU_SCRIPT=gpu_round2.py exec bash "$(dirname "$0")/gpu_check.sh" "$@"
