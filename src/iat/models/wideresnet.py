"""WideResNet-28-10 (Zagoruyko & Komodakis 2016), the pre-activation variant used by Madry et al."""

from __future__ import annotations

from torch import nn

from iat.models.base import MixableNet, Normalize
from iat.models.preactresnet import PreActBlock
from iat.models.registry import register_model


def _group(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [PreActBlock(in_planes, planes, stride)]
    layers += [PreActBlock(planes, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def wide_resnet(in_channels, num_classes, mean, std, *, depth: int, widen: int) -> MixableNet:
    if (depth - 4) % 6 != 0:
        raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    stage1 = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), _group(widths[0], widths[1], n, 1)
    )
    stage2 = _group(widths[1], widths[2], n, 2)
    stage3 = nn.Sequential(
        _group(widths[2], widths[3], n, 2),
        nn.BatchNorm2d(widths[3]),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
    )
    return MixableNet(Normalize(mean, std), [stage1, stage2, stage3], nn.Linear(widths[3], num_classes))


@register_model("wrn28-10")
def wrn28_10(in_channels, num_classes, mean, std, *, depth: int = 28, widen: int = 10) -> MixableNet:
    """WRN-28-10: three groups of 4 blocks, widths 160/320/640 (`depth`, `widen` shrink it for smoke runs)."""
    return wide_resnet(in_channels, num_classes, mean, std, depth=depth, widen=widen)
