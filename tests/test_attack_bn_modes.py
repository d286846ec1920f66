"""Attacks in BatchNorm's train mode (--attack-bn train) and eval mode, for every method: tiny digits runs."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from iat.attacks import PGD
from iat.methods import method_names
from iat.training import train


@pytest.mark.parametrize("attack_bn", ["eval", "train"])
@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_in_both_attack_bn_modes(tmp_path, method, attack_bn):
    cfg = tiny_config(method, epochs=1, train_size=32, batch_size=16, attack_steps=1, attack_bn=attack_bn)
    out = train(cfg, tmp_path / "run", progress=False)
    assert (out / "model.safetensors").is_file()


def test_train_mode_attack_leaves_buffers_untouched_and_unversioned():
    cfg = tiny_config("pgd")
    from iat.config import build_model

    model = build_model(cfg).train()
    before = {k: (v.clone(), v._version) for k, v in model.named_buffers()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    PGD(model, 0.1, 0.025, 2, bn_mode="train")(x, y)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k][0]) and v._version == before[k][1], k
