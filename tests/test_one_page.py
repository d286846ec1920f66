"""examples/iat_in_one_page.py, Algorithm 1 in plain PyTorch, trains the weights `iat train` trains, bit for bit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from iat.config import TrainConfig, build_model
from iat.data import load_data
from iat.rundir import files, tensors
from iat.training.loop import train

PAGE = Path(__file__).parents[1] / "examples" / "iat_in_one_page.py"


def load_page():
    spec = importlib.util.spec_from_file_location("iat_in_one_page", PAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_one_page_step_trains_the_weights_iat_train_trains(tmp_path, one_thread):
    cfg = TrainConfig(method="iat-mixup", dataset="digits", arch="mlp6", width=8, epochs=2, batch_size=64,
                      train_size=256, lr=0.1, eps=0.1, step_size=0.025, attack_steps=3, seed=0, device="cpu")
    out = train(cfg, tmp_path / "run", progress=False)
    x, y = load_data("digits", "train", limit=256)
    page = load_page().train(lambda: build_model(cfg), x, y, seed=0, epochs=2, batch_size=64, lr=0.1,
                             milestones=cfg.resolved_milestones(), gamma=cfg.lr_gamma, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay, eps=0.1, step_size=0.025, steps=3, alpha=cfg.mixup_alpha)
    ours = tensors.load_weights(out / files.WEIGHTS)
    theirs = page.state_dict()
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"the page and iat train differ in {different}"


def test_the_benchmarks_locuslab_style_attack_trains_the_same_weights(one_thread):
    """benchmarks/ time iat against `iat_step(..., attack_param_grads=True)` too: its attack computes the
    parameters' gradients and drops them (the cost of locuslab's loss.backward()), and changes nothing else."""
    page = load_page()
    cfg = TrainConfig(method="iat-mixup", dataset="digits", arch="mlp6", width=8, device="cpu")
    x, y = load_data("digits", "train", limit=64)
    trained = []
    for attack_param_grads in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            page.iat_step(model, opt, x, y, eps=0.1, step_size=0.025, steps=3, attack_param_grads=attack_param_grads)
        trained.append(model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
