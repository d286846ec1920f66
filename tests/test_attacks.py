"""Attack invariants: inside the eps-ball and [0,1], no side effects, stronger never weaker."""

from __future__ import annotations

import pytest
import torch
from conftest import DIGITS_EPS, DIGITS_STEP

from iat.attacks import FGSM, PGD, AttackBudget, make_attack, parse_attack_name
from iat.errors import UsageError
from iat.evaluate import evaluate
from iat.rundir.read import load_run_model

ATTACKS = {
    "fgsm": lambda m, eps: FGSM(m, eps=eps),
    "pgd1": lambda m, eps: PGD(m, eps=eps, step_size=max(eps / 4, 0.01), steps=1),
    "pgd7": lambda m, eps: PGD(m, eps=eps, step_size=max(eps / 4, 0.01), steps=7),
    "pgd7-nostart": lambda m, eps: PGD(m, eps=eps, step_size=max(eps / 4, 0.01), steps=7, random_start=False),
    "pgd7-bntrain": lambda m, eps: PGD(m, eps=eps, step_size=max(eps / 4, 0.01), steps=7, bn_mode="train"),
}



@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("eps", [0.0, 8 / 255, 0.3])
def test_result_inside_eps_ball_and_unit_box(name, eps, model, batch):
    x, y = batch
    x_adv = ATTACKS[name](model, eps)(x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.isfinite(x_adv).all()


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_moves_the_input(name, model, batch):
    x, y = batch
    x_adv = ATTACKS[name](model, 0.1)(x, y)
    assert (x_adv - x).abs().max() > 0.05  # a no-op "attack" would pass the ball test above


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("training", [True, False])
def test_model_mode_parameters_and_buffers_restored(name, training, model, batch):
    x, y = batch
    model.train(training)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    frozen_first = next(model.parameters())
    frozen_first.requires_grad_(False)  # a caller's frozen layer stays frozen, the others stay trainable
    flags = [p.requires_grad for p in model.parameters()]
    try:
        ATTACKS[name](model, 0.1)(x, y)
        assert [p.requires_grad for p in model.parameters()] == flags
    finally:
        frozen_first.requires_grad_(True)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters()), "an attack gave a parameter a gradient"


def test_existing_parameter_grads_untouched(model, batch):
    x, y = batch
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    PGD(model, eps=0.1, step_size=0.025, steps=3)(x, y)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_bn_mode_decides_batchnorm_statistics(model, batch):
    """In 'train' mode an attack sees batch statistics, so its result differs from 'eval' mode."""
    x, y = batch
    model.train()
    for m in model.modules():  # make running statistics far from the batch's
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
    a = PGD(model, eps=0.1, step_size=0.025, steps=3, random_start=False, bn_mode="eval")(x, y)
    b = PGD(model, eps=0.1, step_size=0.025, steps=3, random_start=False, bn_mode="train")(x, y)
    assert not torch.equal(a, b)


def test_refuses_inputs_outside_unit_box(model, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        PGD(model, eps=0.1, step_size=0.025, steps=1)(x * 2 - 1, y)


@pytest.mark.parametrize("kwargs", [dict(eps=8, step_size=0.1, steps=1), dict(eps=0.1, step_size=0.1, steps=0),
                                    dict(eps=0.1, step_size=0.0, steps=3),
                                    dict(eps=0.1, step_size=0.1, steps=1, bn_mode="x")])
def test_bad_hyperparameters_refused(kwargs, model):
    with pytest.raises(ValueError):
        PGD(model, **kwargs)


def test_gradient_is_followed():
    """On a linear model the PGD optimum is known: every pixel moves by eps against the true class."""
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x, y = torch.full((1, 1, 2, 2), 0.5), torch.tensor([0])
    x_adv = PGD(lin, eps=0.1, step_size=0.05, steps=5)(x, y)
    w = lin[1].weight
    expected = x.flatten() + 0.1 * (w[1] - w[0]).sign()
    assert torch.allclose(x_adv.flatten(), expected, atol=1e-6)


def test_attack_names():
    assert parse_attack_name("pgd1000") == ("pgd", 1000)
    assert parse_attack_name("FGSM") == ("fgsm", 1)
    for bad in ["pgd", "pgd0", "pgdx", "cw", ""]:
        with pytest.raises(UsageError):
            parse_attack_name(bad)
    assert "steps=20" in repr(make_attack("pgd20", torch.nn.Identity(), AttackBudget(0.1, 0.025)))


def test_stronger_attacks_never_do_better_on_trained_models(trained_runs):
    """clean <= FGSM <= PGD-7 <= PGD-20 error, and larger eps never lowers the error."""
    from iat.data import load_data

    x, y = load_data("digits", "test")
    for method, run in trained_runs.items():
        model = load_run_model(run)
        r = evaluate(model, x, y, ["clean", "fgsm", "pgd7", "pgd20"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP))
        e = {k: v["error"] for k, v in r.items()}
        noise = 1.0  # percentage points: two random starts can differ on a few of 500 examples
        assert e["clean"] <= e["fgsm"] <= e["pgd7"] + noise <= e["pgd20"] + 2 * noise, (method, e)
        assert e["pgd20"] > e["clean"] + 5, f"{method}: PGD barely beats clean ({e})"
        small = evaluate(model, x, y, ["pgd20"], budget=AttackBudget(DIGITS_EPS / 2, DIGITS_STEP / 2))["pgd20"]
        large = evaluate(model, x, y, ["pgd20"], budget=AttackBudget(2 * DIGITS_EPS, DIGITS_STEP * 2))["pgd20"]
        small, large = small["error"], large["error"]
        assert small <= e["pgd20"] + noise <= large + 2 * noise, (method, small, e["pgd20"], large)


def test_the_attack_classes_order_as_the_engine_does(trained_runs):
    """The classes training uses, each run on its own (final points, no worst case over steps, which makes
    clean <= FGSM and PGD-7 <= PGD-20 hold by construction in the evaluation engine): clean <= FGSM <= PGD-7
    <= PGD-20 error up to random-start noise, on every trained model."""
    from iat.attacks.worstcase import predict
    from iat.data import load_data

    x, y = load_data("digits", "test")
    noise = 1.5  # points of 500 examples: a different random start per attack
    for method, run in trained_runs.items():
        model = load_run_model(run)

        def error(x_adv, model=model):
            return 100.0 * float((predict(model, x_adv) != y).float().mean())

        torch.manual_seed(0)
        e = [error(x), error(FGSM(model, DIGITS_EPS)(x, y)),
             error(PGD(model, DIGITS_EPS, DIGITS_STEP, 7)(x, y)), error(PGD(model, DIGITS_EPS, DIGITS_STEP, 20)(x, y))]
        assert all(a <= b + noise for a, b in zip(e, e[1:])), (method, e)
        assert e[3] > e[0] + 5, (method, e)


def test_evaluate_restores_mode_and_is_seeded(trained_runs):
    from iat.data import load_data

    x, y = load_data("digits", "test", limit=100)
    model = load_run_model(trained_runs["erm"]).train()
    a = evaluate(model, x, y, ["pgd7"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP), seed=3)
    b = evaluate(model, x, y, ["pgd7"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP), seed=3)
    assert model.training and a == b


def test_shorter_pgd_read_off_the_longer_run_equals_its_own_run(trained_runs):
    from iat.data import load_data

    x, y = load_data("digits", "test", limit=200)
    model = load_run_model(trained_runs["pgd"])
    together = evaluate(model, x, y, ["pgd3", "pgd10"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP), seed=1)
    budget = AttackBudget(DIGITS_EPS, DIGITS_STEP)
    alone = {a: evaluate(model, x, y, [a], budget=budget, seed=1)[a] for a in ("pgd3", "pgd10")}
    assert together == alone
    assert together["pgd3"]["error"] <= together["pgd10"]["error"]
