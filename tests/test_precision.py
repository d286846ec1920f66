"""Precision is explicit: --amp on the CPU, the training attack in fp32 outside autocast by default,
evaluation never under autocast, TF32 a recorded setting, and config.json / eval.json say what ran."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import step_config

from iat import cpu_kernels
from iat.attacks import AttackBudget
from iat.config import TrainConfig
from iat.cpu_kernels import native_bf16
from iat.errors import UsageError
from iat.evaluate import evaluate, evaluate_run
from iat.fp32 import fp32_evaluation
from iat.rundir import files
from iat.training import precision as precision_module
from iat.training import train
from iat.training.precision import Precision, resolve_precision, set_tf32
from iat.training.state import RunState
from iat.training.step import Step, make_objective, make_update

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CPU = torch.device("cpu")

cfg_of = step_config  # tests/conftest.py


def forward_log(model: torch.nn.Module) -> list[tuple[bool, bool, torch.dtype]]:
    """(model.training, autocast on, logits dtype) of every forward of `model`."""
    seen = []
    model.register_forward_hook(
        lambda m, args, out: seen.append((m.training, torch.is_autocast_enabled("cpu"), out.dtype)))
    return seen


def one_step(cfg: TrainConfig) -> list[tuple[bool, bool, torch.dtype]]:
    state = RunState.create(cfg, CPU)
    loss_fn = make_objective(cfg, state.model).loss
    step = Step(state.model, state.optimizer, loss_fn, precision=resolve_precision(cfg, CPU))
    seen = forward_log(state.model)
    step(torch.rand(8, 1, 8, 8), torch.randint(10, (8,)))
    return seen


def test_amp_runs_the_update_passes_in_bf16_and_the_attack_in_fp32_outside_autocast():
    seen = one_step(cfg_of(amp=True))
    attack = [s for s in seen if not s[0]]  # the attack runs the model in eval mode (attack_bn eval)
    update = [s for s in seen if s[0]]
    assert len(attack) == 2 and all(s == (False, False, torch.float32) for s in attack)
    assert len(update) == 2 and all(s == (True, True, torch.bfloat16) for s in update)


def test_attack_precision_amp_runs_the_attack_under_autocast_too():
    seen = one_step(cfg_of(amp=True, attack_precision="amp"))
    assert all(s == (s[0], True, torch.bfloat16) for s in seen) and len(seen) == 4


def test_without_amp_everything_is_fp32():
    assert all(not on and dtype == torch.float32 for _, on, dtype in one_step(cfg_of()))


def test_amp_trains_on_the_cpu_and_records_what_ran(tmp_path):
    out = train(cfg_of(amp=True), tmp_path / "run", progress=False)
    config = json.loads((out / files.CONFIG).read_text())
    assert config["amp"] is True and config["amp_dtype"] == "bf16" and config["attack_precision"] == "fp32"
    assert config["precision"] == {"autocast": "bf16", "attack": "fp32", "tf32": False, "grad_scaler": False,
                                   "bf16_emulated": not native_bf16()}
    assert config["tf32"] is False and config["device_name"] == "cpu"
    assert (out / files.WEIGHTS).exists()


def test_attack_precision_amp_without_amp_says_it_does_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        assert resolve_precision(cfg_of(attack_precision="amp"), CPU) == Precision()
    assert "has no effect without --amp" in caplog.text


def test_fp16_needs_cuda_and_falls_back_to_bf16_on_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "native_bf16", lambda: True)
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        p = resolve_precision(cfg_of(amp=True, amp_dtype="fp16"), CPU)
    assert p == Precision(dtype=torch.bfloat16) and "fp16 needs CUDA" in caplog.text


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_a_cpu_without_bf16_instructions_says_it_is_emulated(monkeypatch, caplog, native):
    monkeypatch.setattr(precision_module, "native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        p = resolve_precision(cfg_of(amp=True), CPU)
    assert p.emulated is (not native) and p.record()["bf16_emulated"] is (not native)
    assert ("bf16 is emulated" in caplog.text) is (not native)
    assert "bf16_emulated" not in resolve_precision(cfg_of(), CPU).record()  # fp32 runs say nothing of bf16


def test_native_bf16_reads_the_cpu_flags_and_the_onednn_cap(monkeypatch):
    monkeypatch.setattr(cpu_kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu_kernels.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(cpu_kernels, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not cpu_kernels.native_bf16()  # AVX-512 without bf16 instructions (Skylake, Ice Lake)
    monkeypatch.setattr(cpu_kernels, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert cpu_kernels.native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below bf16: emulated again
    assert not cpu_kernels.native_bf16() and cpu_kernels.kernel_level() == "AVX2"


def test_a_gpu_without_bf16_gets_fp16_with_a_grad_scaler(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        p = resolve_precision(cfg_of(amp=True), torch.device("cuda"))
    assert p.dtype == torch.float16 and p.grad_scaler and "no native bf16" in caplog.text
    assert len(caplog.records) == 1


def test_tf32_is_an_explicit_setting_and_evaluation_turns_it_off():
    assert resolve_precision(cfg_of(tf32=True), torch.device("cuda")).tf32
    assert not resolve_precision(cfg_of(tf32=True), CPU).tf32  # no TF32 on a CPU
    assert not resolve_precision(cfg_of(), torch.device("cuda")).tf32  # off unless asked
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True)
        with fp32_evaluation() as ran:
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert ran == {"autocast": "fp32", "tf32": False}
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("device, asked, used", [("cuda", True, True), ("cuda", False, False), ("cpu", True, False)])
def test_cudnn_benchmark_is_a_recorded_cuda_setting_and_evaluation_turns_it_off(device, asked, used):
    cfg = cfg_of(cudnn_benchmark=asked)
    state = RunState.create(cfg, CPU)  # make_update sets the flags for `device`; it moves nothing
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = not used  # whatever was set before, the run's option decides
        _, run_uses = make_update(cfg, state, make_objective(cfg, state.model), device=torch.device(device))
        assert torch.backends.cudnn.benchmark is used and run_uses["cudnn_benchmark_used"] is used
        with fp32_evaluation():
            assert torch.backends.cudnn.benchmark is False  # the evaluation's batches take many shapes
        assert torch.backends.cudnn.benchmark is used  # restored
    finally:
        torch.backends.cudnn.benchmark = saved


def test_evaluation_never_runs_under_autocast():
    state = RunState.create(cfg_of(), CPU)
    seen = forward_log(state.model)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(10, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast does not reach the attacks
        evaluate(state.model, x, y, ["clean", "fgsm", "pgd2"], budget=AttackBudget(0.1, 0.025))
    assert seen and all(not on and dtype == torch.float32 for _, on, dtype in seen)


def test_eval_json_records_the_precision(tmp_path):
    out = train(cfg_of(method="erm"), tmp_path / "run", progress=False)
    report = evaluate_run(out, ["clean"], limit=20, device="cpu")
    assert report["precision"] == {"autocast": "fp32", "tf32": False}
    assert json.loads((out / files.EVAL).read_text())["precision"] == report["precision"]


def test_an_fp16_attack_is_refused_its_input_gradients_are_not_loss_scaled(monkeypatch):
    with pytest.raises(UsageError, match="fp16 without loss scaling"):
        cfg_of(amp=True, amp_dtype="fp16", attack_precision="amp")
    cfg_of(amp=True, amp_dtype="fp16")  # the fp32 attack with fp16 update passes: fine (the GradScaler scales those)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(UsageError, match="no native bf16"):  # bf16 asked, the GPU would fall back to fp16
        resolve_precision(cfg_of(amp=True, attack_precision="amp"), torch.device("cuda"))
