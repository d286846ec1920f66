"""A small CNN that trains on a CPU in minutes: three conv blocks, for 8x8 to 32x32 inputs."""

from __future__ import annotations

from torch import nn

from iat.models.base import MixableNet, Normalize
from iat.models.registry import register_model


def _block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@register_model("cnn-small")
def cnn_small(in_channels, num_classes, mean, std, *, width: int = 32) -> MixableNet:
    """conv(w) -> pool -> conv(2w) -> pool -> conv(4w) -> global average pool -> linear."""
    stage1 = _block(in_channels, width, pool=True)  # 28x28 -> 14x14, 8x8 -> 4x4
    stage2 = _block(width, 2 * width, pool=True)  # 14x14 -> 7x7, 4x4 -> 2x2
    stage3 = nn.Sequential(_block(2 * width, 4 * width, pool=False), nn.AdaptiveAvgPool2d(1))
    return MixableNet(Normalize(mean, std), [stage1, stage2, stage3], nn.Linear(4 * width, num_classes))
