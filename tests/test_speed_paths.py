"""The speed paths, for correctness only (speed is measured in benchmarks/train_step.py):
the step makes no host read, channels_last and torch.compile train the same model, the mixing
draws are made on the batch's device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import step_config

from iat.config import TrainConfig
from iat.mixing import Mixup
from iat.rundir import files, tensors
from iat.training import train
from iat.training.state import RunState
from iat.training.step import LossTally, Step, TrainData, make_objective, make_update

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CPU = torch.device("cpu")

cfg_of = step_config  # tests/conftest.py


def weights(out: Path) -> dict[str, torch.Tensor]:
    return tensors.load_weights(out / files.WEIGHTS)


@pytest.mark.parametrize("method", ["iat-mixup", "iat-manifold-mixup", "erm"])
def test_the_step_reads_nothing_back_from_the_device(monkeypatch, method):
    """No .item(), bool(), int() or float() of a tensor inside a step: on a GPU each is a host sync."""
    cfg = cfg_of(method=method)
    state = RunState.create(cfg, CPU)
    loss_fn = make_objective(cfg, state.model).loss
    step, tally = Step(state.model, state.optimizer, loss_fn), LossTally(Path("x"))
    data = TrainData.load(cfg, CPU)
    x, y, _ = next(data.batches(torch.arange(len(data)), 0, 32))

    def host_read(*args, **kwargs):
        raise AssertionError("a host read inside the step")

    with monkeypatch.context() as m:
        for name in ("item", "__bool__", "__float__", "tolist"):
            m.setattr(torch.Tensor, name, host_read)
        m.setattr(torch.Tensor, "__int__", lambda t: (host_read() if t.device.type != "cpu" or t.dim() else
                                                      t.to(torch.int64).numpy().item()))  # the layer's CPU draw
        tally.add(state, step(x, y), len(x))
    assert tally.sync(state) > 0 and state.step == 1


def test_mixing_draws_are_made_on_the_batchs_device(monkeypatch):
    asked = []
    real_randperm, real_beta = torch.randperm, torch.distributions.Beta
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: asked.append(kw["device"]) or real_randperm(n))
    monkeypatch.setattr(torch.distributions, "Beta",
                        lambda a, b, **kw: asked.append(a.device) or real_beta(torch.ones(()), torch.ones(()), **kw))
    Mixup().draw(8, torch.device("meta"))
    assert [torch.device(d).type for d in asked] == ["meta", "meta"]


def test_mixing_draws_on_the_cpu_are_the_ones_drawn_before():
    torch.manual_seed(3)
    draw = Mixup(alpha=1.0, lam_per="example").draw(8, CPU)
    torch.manual_seed(3)
    beta = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))
    lam = beta.sample((8,))
    torch.randint(1, ())
    assert torch.equal(draw.lam, lam) and torch.equal(draw.perm, torch.randperm(8))


def test_channels_last_trains_the_same_model_up_to_rounding(tmp_path, channels_last_allowed):
    plain = train(cfg_of(channels_last=False), tmp_path / "plain", progress=False)
    cl = train(cfg_of(), tmp_path / "cl", progress=False)  # the default, where the CPU's kernels allow it
    assert json.loads((cl / files.CONFIG).read_text())["channels_last_used"] is True
    assert json.loads((plain / files.CONFIG).read_text())["channels_last_used"] is False
    a, b = weights(plain), weights(cl)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_channels_last_puts_conv_weights_in_that_layout(channels_last_allowed):
    cfg = cfg_of()
    state = RunState.create(cfg, CPU)
    _, run_uses = make_update(cfg, state, make_objective(cfg, state.model), device=CPU)
    convs = [p for p in state.model.parameters() if p.dim() == 4]
    assert run_uses["channels_last_used"] and convs
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_channels_last_leaves_mlps_alone():
    cfg = cfg_of(arch="mlp6", width=8)
    state = RunState.create(cfg, CPU)
    assert not make_update(cfg, state, make_objective(cfg, state.model), device=CPU)[1]["channels_last_used"]


def compile_works() -> bool:
    try:
        torch.compile(lambda t: t * 2 + 1)(torch.ones(2))
        return True
    except Exception:  # no C++ compiler, unsupported platform, ...
        return False


@pytest.mark.slow
def test_compile_trains_a_tiny_model_on_the_cpu(tmp_path):
    if not compile_works():
        pytest.skip("torch.compile is not available here")
    torch._dynamo.reset()
    cfg = cfg_of(arch="mlp6", width=8, method="iat-mixup")
    plain = train(cfg, tmp_path / "plain", progress=False)
    compiled = train(TrainConfig(**{**cfg.__dict__, "compile": True}), tmp_path / "compiled", progress=False)
    assert json.loads((compiled / files.CONFIG).read_text())["compile"] is True
    a, b = weights(plain), weights(compiled)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    torch._dynamo.reset()


def test_a_compile_failure_is_one_line_and_the_run_continues_without_it(tmp_path, monkeypatch, capsys):
    """No C++ compiler (CPU) or no Triton (GPU): `iat train --compile` says so in one line, exit 1."""
    from iat.cli import main

    def no_compiler(graph_module, example_inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n\nmore lines")

    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real_compile(self, backend=no_compiler))
    torch._dynamo.reset()
    run = tmp_path / "run"
    argv = ["-q", "train", "--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--width", "8", "--epochs", "1",
            "--train-size", "64", "--out", str(run)]
    assert main([*argv, "--compile"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--compile failed" in err and "No working C++ compiler" in err, err
    torch._dynamo.reset()
    assert main([*argv, "--resume"]) == 0 and (run / files.WEIGHTS).exists()  # as the message says


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_step_makes_no_host_sync():
    cfg = cfg_of(device="cuda", arch="preactresnet18", width=8)
    device = torch.device("cuda")
    state = RunState.create(cfg, device)
    update, _ = make_update(cfg, state, make_objective(cfg, state.model), device=device)
    tally = LossTally(Path("x"))
    data = TrainData.load(cfg, device)
    batches = list(data.batches(torch.arange(len(data), device=device), 0, 32))
    tally.add(state, update(*batches[0][:2]), 32)  # warm-up: cuDNN picks its algorithms
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y, _ in batches[1:]:
            tally.add(state, update(x, y), len(x))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert tally.sync(state) > 0


def test_channels_last_is_on_by_default_and_no_channels_last_turns_it_off():
    from iat.cli import build_parser
    from iat.cli.train import config_from_args

    base = ["train", "--method", "erm", "--dataset", "digits", "--arch", "cnn-small", "--out", "unused"]
    assert config_from_args(build_parser().parse_args(base)).channels_last is True
    assert config_from_args(build_parser().parse_args([*base, "--no-channels-last"])).channels_last is False
    assert config_from_args(build_parser().parse_args([*base, "--channels-last"])).channels_last is True
