"""The attack engine's shared pieces: the budget, the projection and step, and `frozen`."""

from __future__ import annotations

import pytest
import torch

from iat.attacks import PGD, AttackBudget, frozen
from iat.attacks.core import project, signed_step, uniform_start
from iat.errors import UsageError
from iat.models import create_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("cnn-small", in_channels=1, num_classes=10, width=8)


def test_budget_checks_its_values_once():
    b = AttackBudget(8 / 255, 2 / 255, steps=7)
    assert (b.eps, b.step_size, b.steps, b.restarts) == (8 / 255, 2 / 255, 7, 1)
    assert AttackBudget.at(0.1).step_size == 0.1 / 4 and AttackBudget.fgsm(0.1).step_size == 0.1
    assert b.with_steps(20).steps == 20 and b.steps == 7
    for bad in [dict(eps=8, step_size=0.1), dict(eps=-0.1, step_size=0.1), dict(eps=0.1, step_size=float("nan")),
                dict(eps=0.1, step_size=0.1, steps=0), dict(eps=0.1, step_size=0.1, restarts=0)]:
        with pytest.raises(UsageError):
            AttackBudget(**bad)
    with pytest.raises(UsageError, match="8/255"):
        AttackBudget(8, 2)
    with pytest.raises(AttributeError):
        b.eps = 0.5  # frozen: a budget cannot change on its way through the layers


def test_step_and_projection_stay_in_the_ball_and_the_box():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 4, 4)
    start = uniform_start(x, 0.1)
    assert (start - x).abs().max() <= 0.1 + 1e-7 and start.min() >= 0 and start.max() <= 1
    step = signed_step(start, torch.randn_like(x), 0.5, x, 0.1)
    assert (step - x).abs().max() <= 0.1 + 1e-7 and step.min() >= 0 and step.max() <= 1
    assert torch.equal(project(x + 1, x, 0.1), (x + 0.1).clamp(0, 1))


def test_the_random_start_fills_the_whole_ball():
    """Uniform on [-eps, eps] per pixel (away from the box): it reaches the ball's edge and is centred."""
    torch.manual_seed(0)
    x = torch.full((64, 1, 16, 16), 0.5)
    offset = (uniform_start(x, 0.1) - x).flatten()
    assert offset.abs().max() > 0.099 and abs(offset.mean()) < 0.002
    assert abs(offset.abs().mean() - 0.05) < 0.002  # E|U(-eps, eps)| = eps/2: not a narrower or a two-point law


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("training", [True, False])
def test_frozen_restores_mode_flags_and_buffers(model, mode, training):
    model.train(training)
    next(model.parameters()).requires_grad_(False)  # already frozen by the caller: it must stay so
    flags = [p.requires_grad for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    with frozen(model, mode):
        assert model.training is (mode == "train")
        assert not any(p.requires_grad for p in model.parameters())
        model(torch.rand(8, 1, 8, 8))  # in train mode this moves BatchNorm's running statistics
    assert model.training is training and [p.requires_grad for p in model.parameters()] == flags
    if mode == "train":
        assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))


def test_frozen_restores_on_error(model):
    model.train()
    with pytest.raises(RuntimeError), frozen(model, "eval"):
        raise RuntimeError("attack failed")
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_pgd_is_a_loop_of_start_and_step(model):
    """PGD's result is `start` followed by `steps` signed steps: the pieces, composed by hand."""
    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    attack = PGD(model, 0.1, 0.025, 3)
    torch.manual_seed(1)
    got = attack(x, y)
    torch.manual_seed(1)
    model.eval()
    x_adv = uniform_start(x, 0.1)
    for _ in range(3):
        x_adv = signed_step(x_adv, attack.input_grad(x_adv, y), 0.025, x, 0.1)
    assert torch.equal(got, x_adv)
