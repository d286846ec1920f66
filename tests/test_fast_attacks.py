"""The single-step training attacks (fgsm-rs, n-fgsm): radius, box, no side effects, strength, training."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DIGITS_EPS, tiny_config

from iat.attacks import FGSMRS, NFGSM, PGD, training_attack
from iat.data import load_data
from iat.errors import UsageError
from iat.rundir.read import load_run_model
from iat.training import train

# name -> (the attack at eps, its documented radius as a multiple of eps)
SINGLE_STEP = {
    "fgsm-rs": (lambda m, eps, bn="eval": FGSMRS(m, eps, bn_mode=bn), 1.0),
    "n-fgsm": (lambda m, eps, bn="eval": NFGSM(m, eps, bn_mode=bn), 3.0),  # noise 2 eps + step eps, not projected
}

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.parametrize("name", SINGLE_STEP)
@pytest.mark.parametrize("eps", [0.0, 8 / 255, 0.1, 0.3])
def test_inside_documented_radius_and_unit_box(name, eps, model, batch):
    x, y = batch
    make, radius = SINGLE_STEP[name]
    x_adv = make(model, eps)(x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad and torch.isfinite(x_adv).all()
    assert (x_adv - x).abs().max() <= radius * eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_n_fgsm_is_not_projected_to_eps(model, batch):
    """The point of N-FGSM: its perturbation goes beyond eps (up to 3 eps); FGSM-RS's never does."""
    x, y = batch
    assert (NFGSM(model, 0.1)(x, y) - x).abs().max() > 0.15
    assert (FGSMRS(model, 0.1)(x, y) - x).abs().max() <= 0.1 + 1e-6


def test_hyperparameters_are_the_papers_and_in_the_repr(model):
    assert FGSMRS(model, 0.1).alpha == pytest.approx(0.125)
    n = NFGSM(model, 0.1)
    assert (n.noise, n.alpha) == (pytest.approx(0.2), pytest.approx(0.1))
    assert repr(FGSMRS(model, 0.1)) == "FGSMRS(eps=0.1, bn_mode='eval', alpha=0.125)"
    assert repr(NFGSM(model, 0.1)) == "NFGSM(eps=0.1, bn_mode='eval', noise=0.2, alpha=0.1)"


@pytest.mark.parametrize("name", SINGLE_STEP)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bn", ["eval", "train"])
def test_model_mode_parameters_and_buffers_restored(name, training, bn, model, batch):
    x, y = batch
    model.train(training)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    SINGLE_STEP[name][0](model, 0.1, bn)(x, y)
    assert all(m.training is training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), f"{k} changed"
    assert all(p.grad is None for p in model.parameters()), "an attack gave a parameter a gradient"


@pytest.mark.parametrize("name", SINGLE_STEP)
def test_no_weaker_than_no_attack_on_a_trained_model(name, trained_runs):
    x, y = load_data("digits", "test")
    for run in trained_runs.values():
        model = load_run_model(run)
        with torch.no_grad():
            clean = (model(x).argmax(1) != y).float().mean().item()
        torch.manual_seed(0)
        x_adv = SINGLE_STEP[name][0](model, DIGITS_EPS)(x, y)
        with torch.no_grad():
            attacked = (model(x_adv).argmax(1) != y).float().mean().item()
        assert attacked >= clean + 0.02, (run.name, clean, attacked)


def test_training_attack_factory():
    m = torch.nn.Identity()
    budget = dict(eps=0.1, step_size=0.025, steps=3)
    assert isinstance(training_attack("pgd", m, **budget), PGD)
    assert isinstance(training_attack("fgsm-rs", m, **budget), FGSMRS)
    assert isinstance(training_attack("n-fgsm", m, **budget), NFGSM)
    pgd = training_attack("pgd", m, **budget, autocast=True)
    assert pgd.autocast and not pgd.check_range  # the attack's own settings, the same call as in evaluation


@pytest.mark.parametrize("option", [dict(attack="fgsm-rs"), dict(co_guard="on")])
def test_attack_options_refused_for_a_method_without_an_attack(option, tmp_path):
    with pytest.raises(UsageError, match="applies only to adversarial methods"):
        train(tiny_config("mixup", epochs=1, train_size=128, **option), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_unknown_attack_refused():
    with pytest.raises(UsageError, match="--attack 'fgsm'"):
        tiny_config("pgd", attack="fgsm").validate()


@pytest.mark.parametrize("method", ["pgd", "iat-mixup"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm-rs", "n-fgsm"])
def test_training_with_each_attack_runs_and_records_it(method, attack, tmp_path):
    run = train(tiny_config(method, attack=attack, epochs=2, train_size=256), tmp_path / "run", progress=False)
    assert json.loads((run / "config.json").read_text())["attack"] == attack
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
    assert (run / "model.safetensors").is_file()
    assert all(("guard_pgd_acc" in r) == (attack != "pgd") for r in rows)  # the guard: auto
