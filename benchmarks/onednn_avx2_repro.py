"""Minimal reproduction of a native crash in oneDNN's AVX2 convolution kernels (torch 2.14.1, oneDNN 3.12).

The weight gradient of a 1x1, stride-2 convolution in channels_last layout with fewer than 8 input channels
corrupts the heap when oneDNN runs its AVX2 kernels: glibc aborts (`free(): invalid next size`, `double free
or corruption`) or the process segfaults, and with two threads it can hang in native code. The contiguous
layout, AVX-512 kernels, 3x3 convolutions and stride 1 are unaffected (benchmarks/cpu_layout_search.py).
PreActResNet18's shortcut convolutions are exactly this shape at `--width` 4 or less.

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/onednn_avx2_repro.py        # exit 134 or 139 (crash)
    python benchmarks/onednn_avx2_repro.py                                # prints ok on an AVX-512 CPU
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/onednn_avx2_repro.py --contiguous   # prints ok
"""

import sys

import torch
from torch import nn

torch.set_num_threads(1)  # with more threads the same bug can hang instead of crashing
layout = torch.contiguous_format if "--contiguous" in sys.argv else torch.channels_last
conv = nn.Conv2d(4, 8, kernel_size=1, stride=2, bias=False).to(memory_format=layout)
x = torch.randn(8, 4, 28, 28).contiguous(memory_format=layout)
for _ in range(3):
    conv(x).sum().backward()  # only the weight needs a gradient: that kernel is the faulty one
print("ok")
