"""The paper's 6-layer fully-connected network with 512 hidden units (Section 4.4, Figure 1)."""

from __future__ import annotations

from torch import nn

from iat.models.base import MixableNet, Normalize
from iat.models.registry import register_model


def _hidden(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU())


@register_model("mlp6")
def mlp6(in_channels, num_classes, mean, std, *, width: int = 512, depth: int = 6, input_size: int = 28):
    """`depth` weight layers in all: depth-1 hidden layers of `width` units and a linear classifier.

    Mixing layers: 0 = input, 1 = after the first hidden layer, 2 = after the second.
    `input_size` is the image side (28 for (Fashion-)MNIST, 8 for digits, 32 for CIFAR/SVHN).
    """
    n_in = in_channels * input_size * input_size
    stage1 = nn.Sequential(nn.Flatten(), _hidden(n_in, width))  # (N,C,H,W) -> (N, width)
    stage2 = _hidden(width, width)
    stage3 = nn.Sequential(*[_hidden(width, width) for _ in range(depth - 3)])
    return MixableNet(Normalize(mean, std), [stage1, stage2, stage3], nn.Linear(width, num_classes))
