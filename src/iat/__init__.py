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

    from iat import train
    from iat.config import TrainConfig


def load_model(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a run directory, in eval mode, on `device`."""
    from iat.rundir.read import load_run_model

    return load_run_model(run_dir, device)


def load_data(name: str, split: str = "train", data_dir: str | Path | None = None, limit: int | None = None):
    """Images (N, C, H, W) as floats in [0,1] and int64 labels; see iat.data for sources."""
    from iat.data import load_data as _load

    return _load(name, split, data_dir, limit)


def __getattr__(name: str):
    """`iat.TrainConfig` and `iat.train(cfg, out)` (the package iat.train, which takes the call), on first use."""
    if name == "TrainConfig":
        from iat.config import TrainConfig

        return TrainConfig
    if name == "train":
        import iat.train  # binds iat.train on this module: later lookups do not come here

        return iat.train
    raise AttributeError(f"module 'iat' has no attribute {name!r}")


__all__ = ["TrainConfig", "__version__", "load_data", "load_model", "train"]
