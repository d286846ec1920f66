"""The model a training configuration describes: the architecture, sized for its data set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iat.data import dataset_info
from iat.models.base import MixableNet
from iat.models.registry import create_model

if TYPE_CHECKING:  # iat.config imports iat.models (the architecture names): only the type comes from there
    from iat.config import TrainConfig


def build_model(cfg: TrainConfig) -> MixableNet:
    """The model a config describes (no weights loaded)."""
    info = dataset_info(cfg.dataset)
    kwargs = {}
    if cfg.width is not None:
        kwargs["widen" if cfg.arch == "wrn28-10" else "width"] = cfg.width
    if cfg.arch == "mlp6":
        kwargs["input_size"] = info.image_size
    return create_model(cfg.arch, info.in_channels, info.num_classes, mean=info.mean, std=info.std, **kwargs)
