"""Reliability, round 2 (issue 11): BatchNorm-mode attacks, locks, damaged weights and checkpoints,
eval.json merging, signals. Each test is tiny (digits, a few steps)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from iat import runio
from iat.attacks import PGD
from iat.cli import main
from iat.methods import method_names
from iat.train import train


@pytest.mark.parametrize("attack_bn", ["eval", "train"])
@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_in_both_attack_bn_modes(tmp_path, method, attack_bn):
    cfg = tiny_config(method, epochs=1, train_size=32, batch_size=16, attack_steps=1, attack_bn=attack_bn)
    out = train(cfg, tmp_path / "run", progress=False)
    assert (out / "model.safetensors").is_file()


def test_train_mode_attack_leaves_buffers_untouched_and_unversioned():
    cfg = tiny_config("pgd")
    from iat.models import build_model

    model = build_model(cfg).train()
    before = {k: (v.clone(), v._version) for k, v in model.named_buffers()}
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    PGD(model, 0.1, 0.025, 2, bn_mode="train")(x, y)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k][0]) and v._version == before[k][1], k


# ------------------------------------------------------------------------ one writer per directory

SRC = str(Path(runio.__file__).parents[1])
TINY_TRAIN = ["--method", "erm", "--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "1",
              "--train-size", "64", "--batch-size", "32", "--device", "cpu"]


def iat_process(*argv: str, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "iat", "-q", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_trains_into_one_out_the_second_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    first = iat_process("train", *TINY_TRAIN, "--out", str(out), env={"IAT_TEST_WRITE_DELAY": "2"})
    try:
        wait_for(lambda: (out / runio.LOCK).is_file() and (out / runio.LOCK).read_text().count("\n") >= 2)
        second = iat_process("train", *TINY_TRAIN, "--out", str(out))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.count("\n") == 1 and f"in use by process {first.pid}" in err and "iat train" in err
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert (out / runio.WEIGHTS).is_file() and not (out / runio.LOCK).exists()


def test_eval_on_a_run_being_written_is_refused(tmp_path, trained_runs):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["erm"], run)
    code = "import sys, time\nfrom iat import runio\nwith runio.lock_dir(sys.argv[1]):\n" \
           "    print('locked', flush=True); time.sleep(60)\n"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in run.iterdir())
        second = iat_process("eval", str(run), "--attacks", "clean", "--limit", "10")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2 and err.count("\n") == 1 and f"process {proc.pid}" in err, err
        assert sorted(p.name for p in run.iterdir()) == before
    finally:
        proc.kill()
        proc.wait()


def test_train_into_an_empty_dir_holding_only_a_stale_lock_file(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / runio.LOCK).write_text("999999\niat train\n")  # a killed holder's: the kernel released its lock
    assert main(["-q", "train", *TINY_TRAIN, "--out", str(out)]) == 0
    assert (out / runio.WEIGHTS).is_file()
