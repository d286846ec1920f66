"""`--arch timm:NAME`: any timm model behind iat's model interface, built offline (pretrained=False) from timm's
tiny test models; Manifold Mixup and sizes the model cannot take are refused in one line."""

from __future__ import annotations

import sys

import pytest
import torch

from iat.config import TrainConfig
from iat.errors import UsageError
from iat.mixing import MixDraw
from iat.models import create_model
from iat.rundir.read import check_model_size

pytest.importorskip("timm", reason="timm not installed (pip install 'iat[timm]')")


def test_timm_model_takes_images_in_0_1_and_mixes_at_the_input_only():
    torch.manual_seed(0)
    a = create_model("timm:test_byobnet", 1, 7, mean=(0.5,), std=(0.25,)).eval()
    torch.manual_seed(0)
    b = create_model("timm:test_byobnet", 1, 7, mean=(0.4,), std=(0.25,)).eval()
    x = torch.rand(3, 1, 16, 16)
    out = a(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    assert torch.allclose(a(x), b(x - 0.1), atol=1e-5)  # normalization is inside the model
    assert a.mix_layers == (0,) and a.features(x).dim() == 2
    draw = MixDraw(0, torch.tensor(0.3), torch.tensor([2, 0, 1]))
    assert torch.allclose(a(x, mix=draw), a(0.3 * x + 0.7 * x[[2, 0, 1]]), atol=1e-5)
    with pytest.raises(ValueError, match="valid layers"):
        a(x, mix=MixDraw(1, torch.tensor(0.5), torch.tensor([2, 0, 1])))


def test_manifold_mixup_is_refused_naming_the_methods_that_work():
    with pytest.raises(UsageError) as e:
        TrainConfig(method="iat-manifold-mixup", dataset="digits", arch="timm:test_byobnet").validate()
    msg = str(e.value)
    works = msg.split("use one of: ")[1].split(", ")
    assert "\n" not in msg and {"erm", "mixup", "pgd", "iat-mixup"} <= set(works)
    assert not any("manifold" in m for m in works)


def test_a_size_the_model_cannot_take_is_refused_before_training():
    cfg = TrainConfig(method="pgd", dataset="digits", arch="timm:test_vit").validate()  # a ViT made for 160x160
    with pytest.raises(UsageError, match=r"timm:test_vit cannot take the 8x8 images of digits \(Input height"):
        check_model_size(cfg)
    check_model_size(TrainConfig(method="pgd", dataset="digits", arch="timm:test_byobnet").validate())


def test_unknown_name_width_and_missing_timm(monkeypatch):
    with pytest.raises(UsageError, match="unknown timm model 'no_such_net'"):
        TrainConfig(arch="timm:no_such_net").validate()
    with pytest.raises(UsageError, match="drop --width"):
        TrainConfig(arch="timm:test_byobnet", width=4).validate()
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(UsageError, match=r"pip install 'iat\[timm\]'"):
        TrainConfig(arch="timm:resnet18").validate()


def test_iat_mixup_trains_a_timm_model(tmp_path):
    from iat.rundir.read import load_run_model
    from iat.training import train

    cfg = TrainConfig(method="iat-mixup", dataset="digits", arch="timm:test_byobnet", epochs=1, batch_size=32,
                      train_size=64, eps=0.1, step_size=0.05, attack_steps=2, device="cpu")
    out = train(cfg, tmp_path / "run", progress=False)
    model = load_run_model(out)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)
