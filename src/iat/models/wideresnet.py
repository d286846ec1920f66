"""WideResNets (Zagoruyko & Komodakis 2016), the pre-activation variant used by Madry et al.: WRN-28-10 (the
paper's), and WRN-34-10 and WRN-70-16, the networks RobustBench's CIFAR leaderboards rank."""

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


# `depth` and `widen` shrink each one for smoke runs and tests (--width sets `widen`).


@register_model("wrn28-10")
def wrn28_10(in_channels, num_classes, mean, std, *, depth: int = 28, widen: int = 10) -> MixableNet:
    """WRN-28-10: three groups of 4 blocks, widths 160/320/640; 36.5M parameters."""
    return wide_resnet(in_channels, num_classes, mean, std, depth=depth, widen=widen)


@register_model("wrn34-10")
def wrn34_10(in_channels, num_classes, mean, std, *, depth: int = 34, widen: int = 10) -> MixableNet:
    """WRN-34-10 (Madry et al. 2018; TRADES): three groups of 5 blocks, widths 160/320/640; 46.2M parameters."""
    return wide_resnet(in_channels, num_classes, mean, std, depth=depth, widen=widen)


@register_model("wrn70-16")
def wrn70_16(in_channels, num_classes, mean, std, *, depth: int = 70, widen: int = 16) -> MixableNet:
    """WRN-70-16 (Gowal et al. 2020; Rebuffi et al. 2021): three groups of 11 blocks, widths 256/512/1024;
    267M parameters."""
    return wide_resnet(in_channels, num_classes, mean, std, depth=depth, widen=widen)
