"""Which convolution shapes and layouts crash or hang this machine's CPU kernels? One subprocess per case.

Each case runs a convolution forward and backward (input and weight gradients) three times in a fresh
process with one thread and glibc's heap checks on (libc_malloc_debug, where it exists), so a heap overrun
that would pass silently aborts instead. A case that exits non-zero crashed; one that outlives --timeout
hung. Run it under each kernel level a machine can take, e.g.:

    python benchmarks/cpu_layout_search.py --json benchmarks/results/cpu_layout_search-default.json
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_layout_search.py \
        --json benchmarks/results/cpu_layout_search-avx2.json

Found on torch 2.14.1 (oneDNN 3.12): with oneDNN's AVX2 kernels, the weight gradient of a 1x1 stride-2
convolution in channels_last with 2-7 input channels (benchmarks/onednn_avx2_repro.py). That is why
`iat` uses channels_last on a CPU only with AVX-512 kernels (src/iat/cpu_kernels.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

CASE = """
import sys, torch
torch.set_num_threads(1)
cin, cout, k, stride, layout = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
conv = torch.nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False).to(memory_format=fmt)
x = torch.randn(8, cin, 28, 28).contiguous(memory_format=fmt).requires_grad_()
for _ in range(3):
    conv(x).sum().backward()
"""
MALLOC_DEBUG = Path("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def run_case(cin: int, cout: int, k: int, stride: int, layout: str, timeout: float) -> str:
    env = dict(os.environ)
    if MALLOC_DEBUG.exists():
        env.update(LD_PRELOAD=str(MALLOC_DEBUG), MALLOC_CHECK_="3")
    args = [sys.executable, "-c", CASE, *map(str, (cin, cout, k, stride)), layout]
    try:
        done = subprocess.run(args, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    return "ok" if done.returncode == 0 else f"crash ({done.returncode})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels-in", default="1,2,3,4,7,8,9,16")
    parser.add_argument("--channels-out", default="4,8,16")
    parser.add_argument("--kernels", default="1,3")
    parser.add_argument("--strides", default="1,2")
    parser.add_argument("--layouts", default="channels_last,contiguous")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as hung")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    grid = itertools.product(ints(args.channels_in), ints(args.channels_out), ints(args.kernels),
                             ints(args.strides), args.layouts.split(","))
    import torch

    results, failed = [], 0
    for cin, cout, k, stride, layout in grid:
        outcome = run_case(cin, cout, k, stride, layout, args.timeout)
        results.append(dict(cin=cin, cout=cout, kernel=k, stride=stride, layout=layout, outcome=outcome))
        if outcome != "ok":
            failed += 1
            print(f"{outcome:12s} cin={cin} cout={cout} kernel={k} stride={stride} {layout}", flush=True)
    where = {"torch": torch.__version__, "aten_capability": torch.backends.cpu.get_cpu_capability(),
             "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    print(f"{failed} of {len(results)} cases crashed or hung ({where})")
    if args.json:
        args.json.write_text(json.dumps({"where": where, "cases": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
