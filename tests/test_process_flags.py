"""A library call that trains leaves torch's process-wide numeric flags as it found them (a notebook that calls
`iat.train` keeps its own TF32 and cuDNN settings afterwards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import step_config

import iat
from iat.training.loop import train

FLAGS = ("matmul_tf32", "cudnn_tf32", "cudnn_benchmark")


def read_flags() -> dict:
    return dict(zip(FLAGS, (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                            torch.backends.cudnn.benchmark)))


@pytest.fixture
def callers_flags():
    """Flags no run of ours would choose (a run sets TF32 and autotuning off on the CPU)."""
    saved = read_flags()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = True
    yield read_flags()
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
     torch.backends.cudnn.benchmark) = (saved[k] for k in FLAGS)


def test_train_restores_the_callers_flags(tmp_path, callers_flags, monkeypatch):
    seen = {}
    import iat.training.loop as loop_module

    make_update = loop_module.make_update

    def spy(*args, **kwargs):  # the run itself sets its own flags
        made = make_update(*args, **kwargs)
        seen.update(read_flags())
        return made

    monkeypatch.setattr(loop_module, "make_update", spy)
    train(step_config(), tmp_path / "run", progress=False)
    assert seen["matmul_tf32"] is False and seen["cudnn_benchmark"] is False  # the run's, while it ran
    assert read_flags() == callers_flags  # and the caller's again after it


def test_compile_raises_dynamos_recompile_limit_for_the_run_only():
    """Manifold Mixup's layers x modes x shapes exceed dynamo's default 8 variants, past which it silently runs
    eagerly; the run raises the limit, and train()'s restored_flags puts the caller's back."""
    from iat.config import build_model
    from iat.training.model_prep import RECOMPILE_LIMIT, prepare_model
    from iat.training.precision import restored_flags

    before = torch._dynamo.config.recompile_limit
    model = build_model(step_config(method="iat-manifold-mixup"))
    with restored_flags():
        prepare_model(model, channels_last=False, compile=True, device=torch.device("cpu"))
        assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT > 3 * 2 * 2 * 2
    assert torch._dynamo.config.recompile_limit == before


# ------------------------------------------------------------------ every evaluation path is strict fp32


@pytest.fixture
def forwards_seen():
    """Every module forward in the test records the flags it ran under."""
    seen = []

    def record(module, args):
        seen.append((torch.is_autocast_enabled("cpu"), torch.backends.cuda.matmul.allow_tf32,
                     torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    yield seen
    handle.remove()


def evaluation_paths(runs: dict[str, Path]) -> dict:
    from iat.evaluate import evaluate_run
    from iat.robustness.masking import audit
    from iat.robustness.sweep import sweep_eps, sweep_steps
    from iat.robustness.transfer import transfer_matrix
    from iat.training import guard

    erm, pgd = str(runs["erm"]), str(runs["pgd"])
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    model = iat.load_model(pgd)  # outside the path: loading may run a check forward of its own
    return {
        "eval": lambda: evaluate_run(erm, ["clean", "pgd2"], limit=16, device="cpu"),
        "sweep eps": lambda: sweep_eps([erm], [0.05], steps=2, limit=16, device="cpu"),
        "sweep steps": lambda: sweep_steps([erm], [1, 2], limit=16, device="cpu"),
        "transfer": lambda: transfer_matrix([erm, pgd], [0.1], steps=2, limit=16, device="cpu"),
        "audit": lambda: audit(pgd, steps=2, steps_list=(1, 2), limit=16, device="cpu"),
        "guard": lambda: guard.measure(model, x, y, 0.1, seed=0),
    }


@pytest.mark.parametrize("path", ["eval", "sweep eps", "sweep steps", "transfer", "audit", "guard"])
def test_every_evaluation_path_runs_in_strict_fp32_whatever_the_caller_set(trained_runs, callers_flags,
                                                                            forwards_seen, path):
    run = evaluation_paths(trained_runs)[path]
    forwards_seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a caller (or a run in this process) might leave it
        run()
    assert forwards_seen, "the spy saw no forward"
    assert set(forwards_seen) == {(False, False, False, False)}, f"{path} evaluated outside fp32"
    assert read_flags() == callers_flags


def test_a_callers_matmul_precision_survives_a_run(tmp_path):
    """torch.set_float32_matmul_precision("medium") before train(): the run's TF32 off is the legacy flag, and
    putting that flag back alone leaves a mix of the two APIs that torch refuses to read; after the run it reads
    "medium" again."""
    torch.set_float32_matmul_precision("medium")
    try:
        train(step_config(), tmp_path / "run", progress=False)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")  # torch's default


def test_a_library_call_leaves_glibcs_allocator_alone(tmp_path):
    """glibc's malloc thresholds (iat.cpu_memory) cannot be read back or undone: the `iat` command sets them for
    its own process, a library call to iat.train never does (checked in a fresh interpreter)."""
    script = (
        "import sys, iat, iat.cpu_memory\n"
        "cfg = iat.TrainConfig(method='erm', dataset='digits', arch='mlp6', width=8, epochs=1, train_size=64,"
        " batch_size=32, device='cpu')\n"
        "iat.train(cfg, sys.argv[1], progress=False)\n"
        "print(iat.cpu_memory.keep_freed_memory.cache_info().currsize)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "0"  # keep_freed_memory was never called
