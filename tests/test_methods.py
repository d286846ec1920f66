"""The six training methods; Algorithm 1's objective; PGD training buys robustness."""

from __future__ import annotations

import torch
from conftest import DIGITS_EPS, DIGITS_STEP

from iat.attacks import PGD, AttackBudget
from iat.data import load_data
from iat.evaluate import evaluate
from iat.methods import (
    METHODS,
    get_method,
    interpolated_adversarial_loss,
    make_loss_fn,
    make_mix,
    standard_loss,
)
from iat.mixing import ManifoldMixup, Mixup, NoMix, mixed_loss
from iat.models import create_model
from iat.rundir.read import load_run_model


def test_the_six_methods_of_the_tables():
    assert [m for m, spec in METHODS.items() if spec.paper] == ["erm", "mixup", "manifold-mixup", "pgd", "iat-mixup",
                                                                 "iat-manifold-mixup"]
    kinds = {name: (type(make_mix(spec, 1.0, 2.0)), spec.adversarial) for name, spec in METHODS.items() if spec.paper}
    assert kinds == {
        "erm": (NoMix, False), "mixup": (Mixup, False), "manifold-mixup": (ManifoldMixup, False),
        "pgd": (NoMix, True), "iat-mixup": (Mixup, True), "iat-manifold-mixup": (ManifoldMixup, True),
    }
    assert make_mix(get_method("mixup"), 1.0, 2.0).alpha == 1.0
    assert make_mix(get_method("iat-manifold-mixup"), 1.0, 2.0).alpha == 2.0


def _setup():
    torch.manual_seed(0)
    model = create_model("cnn-small", 1, 10, width=8).train()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    return model, x, y, PGD(model, eps=0.1, step_size=0.025, steps=3)


def test_iat_objective_is_mean_of_clean_and_adversarial_mixed_losses():
    for mix in (Mixup(1.0), ManifoldMixup(2.0), NoMix()):
        model, x, y, attack = _setup()
        state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics move
        torch.manual_seed(1)
        loss, metrics = interpolated_adversarial_loss(model, x, y, mix=mix, attack=attack)
        model.load_state_dict(state)
        torch.manual_seed(1)  # replay the same randomness by hand
        l_clean = mixed_loss(model, mix, x, y)
        x_adv = attack(x, y)
        l_adv = mixed_loss(model, mix, x_adv, y)
        assert torch.allclose(loss, (l_clean + l_adv) / 2)
        assert metrics["loss_clean"] == l_clean.item() and metrics["loss_adv"] == l_adv.item()


def test_adversarial_examples_use_unmixed_batch_and_original_labels():
    """The attack receives the batch exactly as sampled, with its own labels."""
    model, x, y, attack = _setup()
    received = []

    class Spy:
        def __call__(self, xx, yy):
            received.append((xx.clone(), yy.clone()))
            return attack(xx, yy)

    interpolated_adversarial_loss(model, x, y, mix=Mixup(1.0), attack=Spy())
    assert torch.equal(received[0][0], x) and torch.equal(received[0][1], y)


def test_loss_fn_contract_returns_loss_and_metrics():
    model, x, y, attack = _setup()
    for name, spec in METHODS.items():
        fn = make_loss_fn(spec, make_mix(spec, 1.0, 2.0), attack if spec.adversarial else None)
        loss, metrics = fn(model, x, y)
        assert loss.dim() == 0 and loss.requires_grad and ("loss_clean" in metrics or name == "mart"), name
        assert ("loss_adv" in metrics) == spec.adversarial
    loss, _ = standard_loss(model, x, y, mix=NoMix())
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(model(x), y))


def test_pgd_training_gives_clearly_lower_pgd_error_than_erm(trained_runs):
    x, y = load_data("digits", "test")
    err = {m: evaluate(load_run_model(r), x, y, ["clean", "pgd20"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP))
           for m, r in trained_runs.items()}
    assert err["pgd"]["pgd20"]["error"] < err["erm"]["pgd20"]["error"] - 15, err
    # clean errors count as PGD errors, so >= holds by construction: PGD must find clearly more
    assert err["pgd"]["pgd20"]["error"] > err["pgd"]["clean"]["error"] + 10, err
