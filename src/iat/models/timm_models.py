"""Any timm model as `--arch timm:NAME` (the optional extra `iat[timm]`), built without pretrained weights.

Normalization stays inside (the data set's mean and std, as for iat's own networks), so attacks see images in
[0,1]. Mixing is possible at the input only (`mix_layers = (0,)`): a timm model does not say where its blocks
end, so Manifold Mixup, which mixes hidden states, is refused for it (TrainConfig.validate).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from iat.errors import UsageError
from iat.models.base import MixableNet, Mixer, Normalize

PREFIX = "timm:"
INSTALL = "pip install 'iat[timm]'"


def _timm():
    try:
        import timm
    except ImportError:
        raise UsageError(f"--arch timm:NAME needs timm, which is not installed: {INSTALL}") from None
    return timm


def check_timm_name(name: str) -> None:
    """Refuse a timm model name timm does not know, or timm missing, in one line."""
    timm = _timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:12]}*")[:5]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UsageError(f"unknown timm model {name!r}{hint}; timm.list_models() lists the {len(timm.list_models())} "
                         "it knows")


class TimmNet(MixableNet):
    """A timm model behind iat's model interface: images in [0,1] -> logits; `features` is the pooled
    representation before the classifier (timm's `forward_head(pre_logits=True)`)."""

    mix_layers: tuple[int, ...] = (0,)

    def __init__(self, normalize: Normalize, model: nn.Module, name: str):
        nn.Module.__init__(self)  # MixableNet's stages and head are the timm model's own
        self.normalize = normalize
        self.model = model
        self.name = name

    def features(self, x: torch.Tensor, mix: Mixer | None = None) -> torch.Tensor:
        if mix is not None:
            x = mix(x)
        return self.model.forward_head(self.model.forward_features(self.normalize(x)), pre_logits=True)

    def forward(self, x: torch.Tensor, mix: Mixer | None = None) -> torch.Tensor:
        if mix is not None and mix.layer not in self.mix_layers:
            raise ValueError(f"cannot mix at layer {mix.layer} of timm:{self.name}; valid layers: {self.mix_layers}")
        if mix is not None:
            x = mix(x)
        return self.model(self.normalize(x))


def timm_model(name: str, in_channels: int, num_classes: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> TimmNet:
    """`timm.create_model(name, pretrained=False, num_classes=..., in_chans=...)` with normalization inside."""
    check_timm_name(name)
    on_meta = torch.empty(0).device.type == "meta"
    # timm's constructors read values back (.item()), which tensors without data cannot do: a shapes-only build
    # (the meta device, used to check sizes before allocating) is made on the CPU and then moved
    with torch.device("cpu") if on_meta else contextlib.nullcontext():
        model = _timm().create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
        net = TimmNet(Normalize(mean, std), model, name)
    return net.to("meta") if on_meta else net
