"""Models by name: `create_model("preactresnet18", in_channels=3, num_classes=10)`."""

from __future__ import annotations

from iat.errors import UsageError
from iat.models.base import MixableNet, ModelFactory

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str):
    """Decorator: add a factory `f(in_channels, num_classes, mean, std, **kw) -> MixableNet`."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        _MODELS[name] = factory
        return factory

    return wrap


def model_names() -> list[str]:
    return sorted(_MODELS)


def create_model(
    name: str,
    in_channels: int = 3,
    num_classes: int = 10,
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    **kwargs,
) -> MixableNet:
    """Build a registered model; `mean`/`std` (per channel, images in [0,1]) go inside the network."""
    if name not in _MODELS:
        raise UsageError(f"unknown architecture {name!r}; choose one of: {', '.join(model_names())}")
    mean = mean if mean is not None else (0.5,) * in_channels
    std = std if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise UsageError(f"mean/std need {in_channels} values, one per input channel")
    return _MODELS[name](in_channels=in_channels, num_classes=num_classes, mean=mean, std=std, **kwargs)
