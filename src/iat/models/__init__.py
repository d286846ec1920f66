"""Models by name (`create_model`, `model_names`) and the model a training config describes (`build_model`).

Importing the architecture modules registers their models.
"""

from __future__ import annotations

from iat.models import cnn, mlp, preactresnet, wideresnet  # noqa: F401  (registers the architectures)
from iat.models.base import MixableNet, Normalize
from iat.models.build import build_model
from iat.models.registry import create_model, model_names, register_model

__all__ = ["MixableNet", "Normalize", "build_model", "create_model", "model_names", "register_model"]
