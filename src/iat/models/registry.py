"""Models by name: `create_model("preactresnet18", in_channels=3, num_classes=10)`; `timm:NAME` is any timm
model (iat.models.timm_models)."""

from __future__ import annotations

from iat.errors import UsageError
from iat.models.base import MixableNet, ModelFactory

_MODELS: dict[str, ModelFactory] = {}
TIMM_PREFIX = "timm:"


def register_model(name: str):
    """Decorator: add a factory `f(in_channels, num_classes, mean, std, **kw) -> MixableNet`."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        _MODELS[name] = factory
        return factory

    return wrap


def model_names() -> list[str]:
    return sorted(_MODELS)


def is_timm(name: str) -> bool:
    return isinstance(name, str) and name.startswith(TIMM_PREFIX)


def check_model_name(name: str) -> None:
    """Refuse an architecture that is neither registered nor `timm:NAME` of a model timm knows."""
    if is_timm(name):
        from iat.models.timm_models import check_timm_name

        check_timm_name(name.removeprefix(TIMM_PREFIX))
    elif name not in _MODELS:
        raise UsageError(f"unknown architecture {name!r}; choose one of: {', '.join(model_names())}, "
                         "or timm:NAME for a timm model")


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
    check_model_name(name)
    mean = mean if mean is not None else (0.5,) * in_channels
    std = std if std is not None else (0.5,) * in_channels
    if len(mean) != in_channels or len(std) != in_channels:
        raise UsageError(f"mean/std need {in_channels} values, one per input channel")
    if is_timm(name):
        from iat.models.timm_models import timm_model

        if kwargs:
            raise UsageError(f"{name} takes no size options ({', '.join(kwargs)}); drop --width")
        return timm_model(name.removeprefix(TIMM_PREFIX), in_channels, num_classes, mean, std)
    return _MODELS[name](in_channels=in_channels, num_classes=num_classes, mean=mean, std=std, **kwargs)
