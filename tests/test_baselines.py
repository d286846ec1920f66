"""The baselines TRADES, MART and IAT-TRADES: their losses against independent computations, their inner
attacks, and their options' refusals. (AWP and EMA: tests/test_weight_modifiers.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from iat.attacks import PGD, TRADESPGD, NoiseStartPGD, kl_loss
from iat.cli import main
from iat.methods import (
    METHODS,
    get_method,
    iat_trades_loss,
    make_loss_fn,
    make_mix,
    mart_loss,
    method_names,
    paper_method_names,
    trades_loss,
)
from iat.mixing import Mixup, NoMix, mixed_loss
from iat.models import create_model


def _batch():
    torch.manual_seed(0)
    model = create_model("cnn-small", 1, 10, width=8).eval()  # eval: every forward pass gives the same logits
    with torch.no_grad():
        model.head.weight.mul_(30)  # confident, varied predictions: an untrained net's are all near uniform
    x = torch.rand(12, 1, 8, 8)
    y = torch.randint(0, 10, (12,))
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    return model, x, x_adv, y


def _probs(model, x) -> list[list[float]]:
    with torch.no_grad():
        return torch.softmax(model(x).double(), 1).tolist()


def test_registry_keeps_the_papers_six_first_then_the_baselines():
    assert paper_method_names() == ["erm", "mixup", "manifold-mixup", "pgd", "iat-mixup", "iat-manifold-mixup"]
    assert method_names() == paper_method_names() + ["trades", "mart", "iat-trades"]
    assert [(METHODS[m].objective, METHODS[m].mix) for m in ("trades", "mart", "iat-trades")] == [
        ("trades", "none"), ("mart", "none"), ("trades", "mixup")]


def test_trades_loss_matches_a_loop_over_examples():
    model, x, x_adv, y = _batch()
    p, q = _probs(model, x), _probs(model, x_adv)
    ce = -sum(math.log(p[i][y[i]]) for i in range(len(y))) / len(y)
    kl = sum(p[i][k] * (math.log(p[i][k]) - math.log(q[i][k])) for i in range(len(y)) for k in range(10)) / len(y)
    for beta in (0.0, 1.0, 6.0):
        assert trades_loss(model, x, x_adv, y, beta).item() == pytest.approx(ce + beta * kl, rel=1e-5)
    assert kl > 1e-4  # the KL term is really exercised


def test_mart_loss_matches_a_loop_over_examples():
    model, x, x_adv, y = _batch()
    p, q = _probs(model, x), _probs(model, x_adv)
    bce = kl = 0.0
    for i, yi in enumerate(y.tolist()):
        wrong = max((k for k in range(10) if k != yi), key=lambda k: q[i][k])
        bce += -math.log(q[i][yi]) - math.log(1.0001 - q[i][wrong] + 1e-12)
        kl += sum(p[i][k] * (math.log(p[i][k]) - math.log(q[i][k] + 1e-12)) for k in range(10)) * (
            1.0000001 - p[i][yi])
    for beta in (0.0, 6.0):
        assert mart_loss(model, x, x_adv, y, beta).item() == pytest.approx((bce + beta * kl) / len(y), rel=1e-5)


def test_trades_loss_is_differentiable_through_the_clean_prediction_too():
    """The reference does not detach f(x) inside the KL: its gradient reaches the weights through both passes."""
    model, x, x_adv, y = _batch()
    w = next(model.parameters())
    (g_full,) = torch.autograd.grad(trades_loss(model, x, x_adv, y, 6.0) - trades_loss(model, x, x_adv, y, 0.0), w)
    logits = model(x).detach()
    kl_detached = torch.nn.functional.kl_div(torch.log_softmax(model(x_adv), 1), torch.softmax(logits, 1),
                                             reduction="sum") / len(x) * 6.0
    (g_detached,) = torch.autograd.grad(kl_detached, w)
    assert not torch.allclose(g_full, g_detached)


def test_trades_attack_climbs_the_kl_and_ignores_the_labels():
    model, x, _, y = _batch()
    with torch.no_grad():
        target = torch.softmax(model(x), 1)
    attack = TRADESPGD(model, eps=0.1, step_size=0.025, steps=10)
    torch.manual_seed(1)
    x_adv = attack(x, y)
    torch.manual_seed(1)
    start = attack.start(x)
    torch.manual_seed(1)
    assert torch.equal(attack(x, (y + 1) % 10), x_adv)  # the objective is KL to f(x): no label in it
    with torch.no_grad():
        assert kl_loss(model(x_adv), target) > 5 * kl_loss(model(start.clamp(0, 1)), target)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (start - x).abs().max() < 0.01  # the reference's start: x + 0.001 N(0, 1), not uniform in the ball


def test_mart_attack_climbs_cross_entropy_from_the_small_gaussian_start():
    model, x, _, y = _batch()
    attack = NoiseStartPGD(model, eps=0.1, step_size=0.025, steps=10)
    x_adv = attack(x, y)
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(x_adv), y) > ce(model(x), y) + 0.05
    assert "random_start" not in repr(attack) and "start_noise" in repr(attack)


def test_iat_trades_with_identity_mix_is_trades_and_with_mixup_is_its_docstring():
    model, x, _, y = _batch()
    attack = TRADESPGD(model, eps=0.1, step_size=0.025, steps=2)
    torch.manual_seed(2)
    iat_identity, _ = iat_trades_loss(model, x, y, mix=NoMix(), attack=attack, beta=6.0)
    torch.manual_seed(2)
    plain, _ = make_loss_fn(get_method("trades"), NoMix(), attack, 6.0)(model, x, y)
    assert torch.equal(iat_identity, plain)

    mix = Mixup(1.0)
    torch.manual_seed(3)
    loss, metrics = iat_trades_loss(model, x, y, mix=mix, attack=attack, beta=6.0)
    torch.manual_seed(3)  # replay by hand: attack, L_c with its own draw, one more draw for both KL passes
    x_adv = attack(x, y)
    l_c = mixed_loss(model, mix, x, y)
    d = mix.draw(len(x), x.device)
    kl = kl_loss(model(x_adv, mix=d), torch.softmax(model(x, mix=d), 1)) / len(x)
    assert loss.item() == pytest.approx((l_c + 6.0 * kl).item(), rel=1e-6)
    assert metrics["loss_adv"].item() == pytest.approx(kl.item(), rel=1e-6)


def test_each_baseline_trains_with_its_own_inner_attack(monkeypatch):
    from iat.config import TrainConfig, build_model
    from iat.training.step import make_objective

    kinds = {}
    for method in ("pgd", "trades", "mart", "iat-trades"):
        cfg = TrainConfig(method=method, dataset="digits", arch="cnn-small", width=4, device="cpu").validate()
        loss = make_objective(cfg, build_model(cfg)).loss
        kinds[method] = (type(loss.keywords["attack"]), loss.keywords.get("beta"))
    assert kinds == {"pgd": (PGD, None), "trades": (TRADESPGD, 6.0), "mart": (NoiseStartPGD, 6.0),
                     "iat-trades": (TRADESPGD, 6.0)}
    assert type(make_mix(get_method("iat-trades"), 1.0, 2.0)) is Mixup


TRAIN = ["train", "--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "1", "--device", "cpu",
         "-q"]


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "trades", "--beta", "-1"], "--beta -1.0 is outside [0, 1000]"),
    (["--method", "pgd", "--beta", "3"], "--beta 3 applies only to trades, mart and iat-trades"),
    (["--method", "mart", "--attack", "fgsm-rs"], "--attack fgsm-rs: --method mart crafts its examples"),
])
def test_bad_baseline_options_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    try:
        code = main([*TRAIN, *argv, "--out", str(out)])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not Path(out).exists()
