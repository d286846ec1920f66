"""PreActResNet18 (He et al. 2016, "Identity Mappings in Deep Residual Networks"), CIFAR variant."""

from __future__ import annotations

from torch import nn

from iat.models.base import MixableNet, Normalize
from iat.models.registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = self.bn1(x).relu()
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.bn2(out).relu())
        return out + shortcut


def _layer(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [PreActBlock(in_planes, planes, stride)]
    layers += [PreActBlock(planes, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@register_model("preactresnet18")
def preactresnet18(in_channels, num_classes, mean, std, *, width: int = 64) -> MixableNet:
    """Four stages of two pre-activation blocks; `width` is the first stage's channels (paper: 64)."""
    w = width
    stage1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), _layer(w, w, 2, 1))
    stage2 = _layer(w, 2 * w, 2, 2)
    stage3 = nn.Sequential(
        _layer(2 * w, 4 * w, 2, 2),
        _layer(4 * w, 8 * w, 2, 2),
        nn.BatchNorm2d(8 * w),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
    )
    return MixableNet(Normalize(mean, std), [stage1, stage2, stage3], nn.Linear(8 * w, num_classes))
