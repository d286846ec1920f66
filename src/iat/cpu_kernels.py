"""Which kernels this CPU runs, and the two choices that depend on it: channels_last and bf16.

PyTorch picks its CPU kernels per machine: ATen's vectorized code by `ATEN_CPU_CAPABILITY` (AVX2, AVX512,
...), oneDNN's convolutions by the instruction set it finds, capped by `ONEDNN_MAX_CPU_ISA`. Results are
bit-exact for the same torch and the same kernels, and differ by rounding across them (docs/reproducibility.md).

- channels_last on a CPU: only with AVX-512 kernels. There it is measured faster (1.12-1.13x per IAT step,
  benchmarks/README.md); with AVX2 kernels it is not (7.12 vs 7.40 s per step, within one round's noise),
  and oneDNN 3.12's AVX2 weight gradient of a 1x1 stride-2 convolution with fewer than 8 input channels
  corrupts the heap (a crash or a hang: benchmarks/onednn_avx2_repro.py). Other CPUs (ARM, DEFAULT) were
  not measured, so they keep the contiguous layout. CUDA GPUs always get channels_last.
- bf16 autocast on a CPU without bf16 instructions (avx512_bf16, amx_bf16, ARM's bf16) is emulated and
  measured 23x slower than fp32 (299 s vs 13 s for one IAT epoch): `--amp` says so at the start.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

# oneDNN's ISA names, lowest first (oneDNN's `dnnl_cpu_isa_t`); a cap below avx512_core means AVX2 kernels.
_ONEDNN_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
_ONEDNN_BELOW_BF16 = (*_ONEDNN_BELOW_AVX512, "AVX512_CORE", "AVX512_CORE_VNNI")
BF16_SLOWDOWN = "23x"  # measured: one IAT-Mixup epoch on 256 images, 299 s with --amp vs 13 s (AVX2 EPYC)


def _onednn_cap() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (/proc/cpuinfo); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return frozenset(value.split())
    return frozenset()


def kernel_level() -> str:
    """The kernels that run here: ATen's capability, lowered to AVX2 where oneDNN is capped below AVX-512."""
    level = torch.backends.cpu.get_cpu_capability()
    if level.startswith("AVX512") and _onednn_cap() in _ONEDNN_BELOW_AVX512:
        return "AVX2"
    return level


def cpu_model() -> str:
    """vendor family/model (x86) or the machine name: CPUs of one capability still round differently."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "vendor_id" in fields:
        return f"{fields['vendor_id']} {fields.get('cpu family', '?')}/{fields.get('model', '?')}"
    return platform.machine() or "unknown"


def channels_last_helps(device: torch.device) -> bool:
    """Whether channels_last is both safe and measured faster on `device` (the rule in this module's doc)."""
    return device.type == "cuda" or (device.type == "cpu" and kernel_level().startswith("AVX512"))


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (else autocast emulates it, far slower than fp32)."""
    flags = cpu_flags()
    if platform.machine() in ("aarch64", "arm64"):
        return "bf16" in flags
    has = bool({"avx512_bf16", "amx_bf16"} & flags)
    return has and kernel_level().startswith("AVX512") and _onednn_cap() not in _ONEDNN_BELOW_BF16
