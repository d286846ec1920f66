"""AWP (--awp) and the weight average (--ema) on any method: their arithmetic against hand computations, runs
without them unchanged, bit-exact resume after kill -9, `iat eval --weights`, and their refusals."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import step_config

from iat.cli import main
from iat.config import build_model
from iat.rundir import files, tensors
from iat.training import train
from iat.training.ema import EMA, EMA_WEIGHTS
from iat.training.state import RunState
from iat.training.step import Step, make_objective


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ema_equals_its_closed_form_over_hand_made_steps():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.2)
    expected = 1.0
    for t, w in enumerate([3.0, -1.0, 5.0, 2.0]):
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
        d = min(0.2, (1 + t) / (10 + t))  # 0.1, 0.1818..., 0.2, 0.2: the warm-up, then the decay
        expected = d * expected + (1 - d) * w
        assert ema.params["weight"][0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert ema.updates == 4


def test_an_awp_update_is_the_optimizer_step_at_the_perturbed_point_with_no_trace_left():
    cfg = step_config(method="pgd", awp=0.05, weight_decay=0.01)
    state = RunState.create(cfg, torch.device("cpu"))
    objective = make_objective(cfg, state.model)
    step = Step(state.model, state.optimizer, objective.loss, awp=objective.awp)
    state.start_epoch()
    torch.manual_seed(7)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    w0 = {n: p.detach().clone() for n, p in state.model.named_parameters()}
    start = {k: v.clone() for k, v in state.model.state_dict().items()}

    # by hand, on a copy: the attack, the perturbation, the loss at the perturbed point, one SGD step from w0
    twin = build_model(cfg)
    twin.load_state_dict(state.model.state_dict())
    twin.train()
    attack = objective.loss.keywords["attack"]
    attack.model = twin
    torch.manual_seed(11)
    x_adv = attack(x, y)
    weights = [n for n, p in twin.named_parameters() if p.dim() > 1 and n.endswith("weight")]
    params = dict(twin.named_parameters())
    grads = torch.autograd.grad(F.cross_entropy(twin(x_adv), y), [params[n] for n in weights])
    twin.load_state_dict(start)  # the ascent pass leaves BatchNorm as it was
    delta = {n: 0.05 * w0[n].norm() / g.norm() * g for n, g in zip(weights, grads)}
    with torch.no_grad():
        for n in weights:
            params[n].add_(delta[n])
    loss = (F.cross_entropy(twin(x), y) + F.cross_entropy(twin(x_adv), y)) / 2  # pgd: Algorithm 1, Mix = identity
    g_at_perturbed = torch.autograd.grad(loss, list(params.values()))
    lr, wd = cfg.lr, cfg.weight_decay
    expected = {n: w0[n] - lr * (g + wd * params[n].detach()) for n, g in zip(params, g_at_perturbed)}

    attack.model = state.model
    torch.manual_seed(11)
    step(x, y)
    for n, p in state.model.named_parameters():
        assert torch.allclose(p, expected[n], atol=1e-6), n
    for n in delta:  # the perturbation is large enough that leaving it (or skipping it) would show
        assert delta[n].abs().max() > 1e-3 and not torch.allclose(expected[n] + delta[n], expected[n], atol=1e-6)
    assert objective.awp._delta is None  # removed after the step


def _digest(out: Path) -> str:
    return sha(out / files.WEIGHTS)


def test_ema_and_an_awp_that_never_starts_train_the_same_weights_as_plain_runs(tmp_path):
    plain = train(step_config(method="trades", epochs=2), tmp_path / "plain", progress=False)
    with_ema = train(step_config(method="trades", epochs=2, ema=0.9), tmp_path / "ema", progress=False)
    awp_later = train(step_config(method="trades", epochs=2, awp=0.01, awp_warmup=2), tmp_path / "awp-later",
                      progress=False)
    awp_now = train(step_config(method="trades", epochs=2, awp=0.01), tmp_path / "awp", progress=False)
    assert _digest(with_ema) == _digest(plain) == _digest(awp_later)
    assert _digest(awp_now) != _digest(plain)
    assert (with_ema / EMA_WEIGHTS).is_file() and not (plain / EMA_WEIGHTS).exists()
    assert sha(with_ema / EMA_WEIGHTS) != _digest(with_ema)


def test_the_averaged_model_has_batchnorm_statistics_of_its_own(tmp_path):
    out = train(step_config(method="erm", epochs=2, ema=0.9), tmp_path / "run", progress=False)
    last, ema = tensors.load_weights(out / files.WEIGHTS), tensors.load_weights(out / EMA_WEIGHTS)
    means = [k for k in last if k.endswith("running_mean")]
    assert means and all(not torch.equal(last[k], ema[k]) for k in means)
    assert all(ema[k.replace("running_mean", "num_batches_tracked")] == 2 for k in means)  # 64 images, batch 32


ARGS = ["--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "2", "--train-size", "96",
        "--batch-size", "32", "--attack-steps", "2", "--eps", "0.1", "--step-size", "0.025", "--device", "cpu",
        "--checkpoint-every", "2", "-q"]


def _iat_train(out: Path, *more: str, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_TEST_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **({"IAT_TEST_KILL_IN_WRITE": kill} if kill else {}))
    return subprocess.run([sys.executable, "-m", "iat", "train", *ARGS, "--out", str(out), *more], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("method, modifiers", [
    ("trades", ["--awp", "0.01", "--ema", "0.9"]),
    pytest.param("mart", ["--awp", "0.01", "--awp-warmup", "1", "--ema", "0.9"], marks=pytest.mark.slow),
    pytest.param("iat-trades", ["--awp", "0.005", "--ema", "0.99"], marks=pytest.mark.slow),
])
def test_kill_9_mid_run_then_resume_is_bit_exact(tmp_path, method, modifiers):
    more = ["--method", method, *modifiers]
    reference = _iat_train(tmp_path / "ref", *more)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "killed"
    killed = _iat_train(out, *more, kill="checkpoint.pt:3")  # SIGKILL while writing the 3rd checkpoint (epoch 2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = _iat_train(out, *more, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for name in (files.WEIGHTS, EMA_WEIGHTS):
        assert sha(out / name) == sha(tmp_path / "ref" / name), name


def test_eval_takes_the_averaged_weights_by_default_and_records_both(tmp_path, capsys):
    out = train(step_config(method="erm", epochs=1, ema=0.9), tmp_path / "run", progress=False)
    assert main(["eval", str(out), "--attacks", "clean", "--limit", "50", "--device", "cpu", "-q"]) == 0
    report = json.loads((out / files.EVAL).read_text())
    assert report["weights"] == "ema" and set(report["results_by_weights"]) == {"last", "ema"}
    assert sorted(e["weights"] for e in report["history"]) == ["ema", "last"]
    assert main(["eval", str(out), "--attacks", "clean", "--limit", "50", "--device", "cpu", "-q",
                 "--weights", "last"]) == 0
    report = json.loads((out / files.EVAL).read_text())
    assert report["weights"] == "last" and len(report["history"]) == 2  # the same entry, measured again


TRAIN = ["train", "--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "1", "--device", "cpu",
         "-q"]


@pytest.mark.parametrize("argv, fragment", [
    (["--method", "erm", "--awp", "0.01"], "--method erm trains without an attack"),
    (["--method", "pgd", "--ema", "1"], "--ema 1 would keep the initial weights forever"),
    (["--method", "pgd", "--ema", "1.5"], "--ema 1.5 is outside [0, 1)"),
    (["--method", "pgd", "--awp", "-0.1"], "--awp -0.1 is outside [0, 1]"),
    (["--method", "pgd", "--awp-warmup", "3"], "--awp-warmup 3 applies only with --awp"),
    (["--method", "pgd", "--awp", "0.01", "--cuda-graphs"], "--awp with --cuda-graphs"),
])
def test_bad_modifier_options_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    try:
        code = main([*TRAIN, *argv, "--out", str(out)])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert not out.exists()


def test_eval_of_averaged_weights_a_run_does_not_have_is_one_line(tmp_path, capsys):
    out = train(step_config(method="erm", epochs=1), tmp_path / "run", progress=False)
    assert main(["eval", str(out), "--attacks", "clean", "--weights", "ema", "--device", "cpu", "-q"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not trained with --ema" in lines[0], lines
    assert not (out / files.EVAL).exists()
