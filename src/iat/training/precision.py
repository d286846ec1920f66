"""What precision a run computes in, decided once from its config and recorded in config.json.

- `--amp`: the two weight-update passes (clean and adversarial loss) run under autocast, bf16 on
  CPU and CUDA. `--amp-dtype fp16` (CUDA only) adds a GradScaler; a CUDA GPU without native bf16
  gets fp16 + GradScaler with a one-line warning.
- `--attack-precision`: the inner training attack runs outside autocast (`fp32`, the default: the
  paper's PGD-7) or under it (`amp`: faster, but its input gradients are bf16/fp16, a weaker attack);
  that is the attack's own `autocast` setting (iat.attacks.core.Attack).
- `--tf32` / `--no-tf32`: TF32 matmuls and convolutions on CUDA while training; off by default, so fp32 is fp32.
Evaluation never runs under autocast, TF32 or cuDNN autotuning: `iat.fp32.fp32_evaluation`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from iat.config import TrainConfig
from iat.cpu_kernels import BF16_SLOWDOWN, native_bf16
from iat.errors import UsageError
from iat.fp32 import kept_flags

log = logging.getLogger("iat.train")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of the weight-update passes (None: fp32), the attack's, and TF32."""

    dtype: torch.dtype | None = None
    attack_autocast: bool = False  # the training attack under autocast too
    tf32: bool = False
    emulated: bool = False  # bf16 on a CPU without bf16 instructions: emulated, far slower than fp32

    @property
    def grad_scaler(self) -> bool:
        return self.dtype == torch.float16

    def record(self) -> dict:
        """What ran, for config.json."""
        name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        record = {"autocast": name, "attack": "amp" if self.attack_autocast else "fp32", "tf32": self.tf32,
                  "grad_scaler": self.grad_scaler}
        if self.dtype is not None:
            record["bf16_emulated"] = self.emulated
        return record


def resolve_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """The Precision a run of `cfg` uses on `device` (fp16 falls back to bf16 on the CPU, see validate)."""
    tf32 = cfg.tf32 and device.type == "cuda"
    if not cfg.amp:
        if cfg.attack_precision == "amp":
            log.warning("--attack-precision amp has no effect without --amp: the attack runs in fp32 as the rest")
        return Precision(tf32=tf32)
    dtype = _DTYPES[cfg.amp_dtype]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        if cfg.attack_precision == "amp":  # an fp16 attack: its input gradients are not loss-scaled and underflow
            raise UsageError("--attack-precision amp: this GPU has no native bf16, and an fp16 attack's input "
                             "gradients underflow (nothing loss-scales them); use --attack-precision fp32")
        log.warning("--amp: this GPU has no native bf16; using fp16 autocast with a GradScaler")
        dtype = torch.float16
    if device.type != "cuda" and dtype == torch.float16:
        log.warning("--amp-dtype fp16 needs CUDA; using bf16 autocast on %s", device.type)
        dtype = torch.bfloat16
    emulated = device.type == "cpu" and dtype == torch.bfloat16 and not native_bf16()
    if emulated:
        log.warning("--amp: this CPU has no bf16 instructions (avx512_bf16, amx_bf16), so bf16 is emulated: "
                    "measured %s slower than fp32 on such a CPU; drop --amp here", BF16_SLOWDOWN)
    return Precision(dtype=dtype, attack_autocast=cfg.attack_precision == "amp", tf32=tf32, emulated=emulated)


def set_tf32(on: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions (torch's defaults differ: matmul off, cuDNN on)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


@contextmanager
def restored_flags() -> Iterator[None]:
    """Put torch's process-wide flags back as they were on exit: a library call that trains (and sets TF32,
    cuDNN autotuning and dynamo's recompile limit for its run) leaves the caller's process as it found it."""
    recompile_limit = torch._dynamo.config.recompile_limit
    try:
        with kept_flags():
            yield
    finally:
        torch._dynamo.config.recompile_limit = recompile_limit
