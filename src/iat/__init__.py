"""iat: Interpolated Adversarial Training (Lamb, Verma, Kannala & Bengio, 2019) in PyTorch.

    import iat
    cfg = iat.TrainConfig(method="iat-mixup", dataset="digits", arch="cnn-small", epochs=2)  # every CLI option
    iat.train(cfg, RUN_DIR)                                  # the same run as `iat train ... --out RUN_DIR`
    model = iat.load_model(RUN_DIR)                          # eval mode; images in [0,1] -> logits
    x, y = iat.load_data("fashion-mnist", split="test")      # float in [0,1], int64 labels
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from iat.version import __version__

# torch is imported on first use (hence the imports inside the functions and `__getattr__`), so that
# `import iat` stays cheap and the CLI's OMP_WAIT_POLICY setting comes before torch's first import.
if TYPE_CHECKING:
    from torch import nn

    from iat.config import TrainConfig


def train(cfg: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """The same run as `iat train` with `cfg`'s options and `--out out`; return the run directory.

    What the command adds to the training loop (iat.training.train): the model-size check before anything is
    allocated and the lock on `out` (a second writer is refused). torch's process-wide flags the run sets (TF32,
    cuDNN autotuning) are put back as they were: a script goes on after it. The command also tunes glibc's
    allocator for its process (iat.cpu_memory.keep_freed_memory(): about a tenth faster on the CPU, and it cannot
    be undone), which a library call leaves to its caller. Bad input raises
    iat.errors.UsageError; a diverged run or a full disk, iat.training.TrainingError.
    """
    from iat.training import train_run

    return train_run(cfg, out, resume=resume, progress=progress)


def load_model(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a run directory, in eval mode, on `device`."""
    from iat.rundir.read import load_run_model

    return load_run_model(run_dir, device)


def load_data(name: str, split: str = "train", data_dir: str | Path | None = None, limit: int | None = None):
    """Images (N, C, H, W) as floats in [0,1] and int64 labels; see iat.data for sources."""
    from iat.data import load_data as _load

    return _load(name, split, data_dir, limit)


def __getattr__(name: str):
    """`iat.TrainConfig`, on first use."""
    if name == "TrainConfig":
        from iat.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'iat' has no attribute {name!r}")


__all__ = ["TrainConfig", "__version__", "load_data", "load_model", "train"]
