"""Every registered model: shapes, channels, classes, normalization inside, mixing at its layers."""

from __future__ import annotations

import pytest
import torch

from iat.errors import UsageError
from iat.mixing import MixDraw
from iat.models import create_model, model_names

SMALL = {"cnn-small": {"width": 4}, "mlp6": {"width": 16}, "preactresnet18": {"width": 4},
         "wrn28-10": {"depth": 10, "widen": 1}, "wrn34-10": {"depth": 10, "widen": 1},
         "wrn70-16": {"depth": 10, "widen": 1}}


def test_registry_names():
    assert model_names() == ["cnn-small", "mlp6", "preactresnet18", "wrn28-10", "wrn34-10", "wrn70-16"]
    with pytest.raises(UsageError, match="cnn-small"):
        create_model("resnet9000")


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("channels,size,classes", [(1, 8, 10), (1, 28, 7), (3, 32, 10)])
def test_shapes_channels_classes(name, channels, size, classes):
    kw = dict(SMALL[name])
    if name == "mlp6":
        kw["input_size"] = size
    model = create_model(name, in_channels=channels, num_classes=classes, **kw)
    x = torch.rand(3, channels, size, size)
    out = model(x)
    assert out.shape == (3, classes) and torch.isfinite(out).all()
    for layer in model.mix_layers:
        mixed = model(x, mix=MixDraw(layer, torch.tensor(0.5), torch.tensor([2, 0, 1])))
        assert mixed.shape == (3, classes)
    assert model.features(x).dim() == 2


@pytest.mark.parametrize("name", model_names())
def test_normalization_inside_the_model(name):
    """Shifting the stored mean by d is the same as shifting the input by -d."""
    kw = dict(SMALL[name], **({"input_size": 8} if name == "mlp6" else {}))
    torch.manual_seed(0)
    a = create_model(name, 1, 10, mean=(0.5,), std=(0.25,), **kw).eval()
    torch.manual_seed(0)
    b = create_model(name, 1, 10, mean=(0.4,), std=(0.25,), **kw).eval()
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(a(x), b(x - 0.1), atol=1e-5)


def test_paper_sizes():
    """PreActResNet18 has 11.2M parameters, WRN-28-10 36.5M, WRN-34-10 46.2M and WRN-70-16 267M, as published."""
    def n(m):
        return sum(p.numel() for p in m.parameters())

    assert round(n(create_model("preactresnet18", 3, 10)) / 1e6, 1) == 11.2
    assert round(n(create_model("wrn28-10", 3, 10)) / 1e6, 1) == 36.5
    with torch.device("meta"):  # shapes only: WRN-70-16's 267M weights are never allocated
        assert round(n(create_model("wrn34-10", 3, 10)) / 1e6, 1) == 46.2  # Madry et al., TRADES
        assert round(n(create_model("wrn70-16", 3, 10)) / 1e6) == 267  # Gowal et al. 2020, Rebuffi et al. 2021
    mlp = create_model("mlp6", 1, 10, input_size=28)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 6 and all(m.out_features == 512 for m in linears[:-1])


def test_mean_std_must_match_channels():
    with pytest.raises(UsageError):
        create_model("cnn-small", 3, 10, mean=(0.5,), std=(0.5,))
