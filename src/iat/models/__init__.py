"""Models by name (`create_model`, `model_names`), as timm's registry: a leaf that knows nothing of training
(`iat.config.build_model` builds the model a training config describes). `timm:NAME` is any timm model.

Importing the architecture modules registers their models.
"""

from __future__ import annotations

from iat.models import cnn, mlp, preactresnet, wideresnet  # noqa: F401  (registers the architectures)
from iat.models.base import MixableNet, Normalize
from iat.models.registry import check_model_name, create_model, is_timm, model_names, register_model

__all__ = ["MixableNet", "Normalize", "check_model_name", "create_model", "is_timm", "model_names", "register_model"]
