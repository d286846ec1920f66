"""`--speed exact|fast`: one named setting instead of six flags to learn.

`exact` (the default) trains with the options as given: by default true fp32 and eager, the paper's arithmetic.
`fast` is the fastest setting measured (benchmarks/README.md: 10.7 ms per PreActResNet18 IAT step at batch 64 on
an H100, against 94 ms for the defaults): on CUDA, CUDA graphs + torch.compile + TF32 + bf16 autocast for the
update and the attack + cuDNN autotuning; on a CPU with bf16 instructions, bf16 autocast for the update and the
attack (2.6x per step, benchmarks/README.md); elsewhere it changes nothing and says so (emulated bf16 is slower).
Evaluation is strict fp32 whatever the speed (iat.fp32).

The default stays `exact`: no GPU session has yet compared `fast` with `exact` on clean and robust error over
several seeds, and a bf16 attack is a weaker attack (docs/speed.md).
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from iat.config import TrainConfig, flag
from iat.cpu_kernels import native_bf16

log = logging.getLogger("iat.train")

FAST_CUDA = dict(cuda_graphs=True, compile=True, tf32=True, amp=True, amp_dtype="bf16", attack_precision="amp",
                 cudnn_benchmark=True)
FAST_CPU = dict(amp=True, amp_dtype="bf16", attack_precision="amp")


def apply_speed(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """`cfg` with `--speed fast` spelled out as the options it stands for on `device` (unchanged for exact)."""
    if cfg.speed == "exact":
        return cfg
    if device.type == "cuda":
        fast = FAST_CUDA
    elif device.type == "cpu" and native_bf16():
        fast = FAST_CPU
    else:
        log.info("--speed fast: nothing faster on this %s (no bf16 instructions: emulated bf16 is slower); "
                 "training as with --speed exact", device.type)
        return cfg
    log.info("--speed fast: %s", " ".join(flag(k) if v is True else f"{flag(k)} {v}" for k, v in fast.items()))
    return dataclasses.replace(cfg, **fast)
