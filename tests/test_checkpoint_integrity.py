"""Checkpoints and final weights, field by field: anything that does not fit this run is one line naming it;
damaged final weights are rebuilt from a final checkpoint; what a resumed run records (provenance)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from reliability_helpers import cli_args, train_tiny_run

from iat import runio
from iat.cli import main
from iat.train import train


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped mid-epoch 2 by a checkpoint every 3 steps: (config, run dir) to copy from."""
    cfg = tiny_config("pgd", epochs=2, train_size=96, batch_size=16, attack_steps=1, checkpoint_every=3)
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(cfg, out, progress=False)
    (out / runio.WEIGHTS).unlink()  # the last checkpoint is at the end of epoch 2: make it resumable again
    ckpt = runio.load_checkpoint(out / runio.CHECKPOINT)
    return cfg, out, ckpt


def damage(ckpt: dict, field: str, value) -> dict:
    import copy

    ckpt = copy.deepcopy(ckpt)
    *parents, last = field.split(".", 1) if field.startswith("model.") else field.split(".")
    target = ckpt
    for p in parents:
        target = target[int(p) if isinstance(target, dict) and p.isdigit() and int(p) in target else p]
    target[last] = value
    return ckpt


@pytest.mark.parametrize("field, value, named", [
    ("step", 6, "step"),  # == steps per epoch: would resume into the next epoch with a 0.0 loss row
    ("running.loss_sum", "x", "running.loss_sum"),
    ("running.count", float("nan"), "running.count"),
    ("rng.torch", torch.zeros(3, dtype=torch.uint8), "rng.torch"),
    ("rng.python", torch.zeros(10, dtype=torch.int64), "rng.python"),
    ("rng.numpy_pos", 10**6, "rng.numpy_pos"),
    ("model.head.weight", torch.zeros(3), "model.head.weight"),
    ("metrics", [{}, {}, {}], "metrics"),
])
def test_a_checkpoint_field_that_does_not_fit_is_one_line_naming_it(tmp_path, interrupted, capsys, field,
                                                                      value, named):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    if field == "step":
        ckpt = damage(ckpt, "epoch", 1)
    if field == "model.head.weight":
        field = "model." + next(k for k in ckpt["model"] if k.endswith("weight"))
        named = field
    runio.save_checkpoint(out / runio.CHECKPOINT, damage(ckpt, field, value))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and named in err and str(out / runio.CHECKPOINT) in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_momentum_buffer_of_the_wrong_shape_is_one_line(tmp_path, interrupted, capsys):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    ckpt = damage(ckpt, "optimizer.state.0.momentum_buffer", torch.zeros(2, 2))
    runio.save_checkpoint(out / runio.CHECKPOINT, ckpt)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.state.0.momentum_buffer" in err, err


def test_nan_in_a_checkpoints_weights_is_refused(tmp_path, interrupted, capsys):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    name = next(k for k in ckpt["model"] if k.endswith("weight"))
    ckpt = damage(ckpt, f"model.{name}", torch.full_like(ckpt["model"][name], float("nan")))
    runio.save_checkpoint(out / runio.CHECKPOINT, ckpt)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN" in err, err


# ------------------------------------------------------------- a finished run with damaged weights


@pytest.mark.parametrize("damage", ["garbage", "nan"])
def test_resume_rebuilds_damaged_final_weights_from_the_final_checkpoint(tmp_path, damage, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    good = (out / runio.WEIGHTS).read_bytes()
    if damage == "garbage":
        (out / runio.WEIGHTS).write_bytes(b"\x00" * 40)
    else:
        state = runio.load_weights(out / runio.WEIGHTS)
        name = next(k for k in state if k.endswith("weight"))
        state[name] = torch.full_like(state[name], float("nan"))
        runio.save_weights(out / runio.WEIGHTS, state)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 0
    assert (out / runio.WEIGHTS).read_bytes() == good


def test_resume_with_damaged_weights_and_no_final_checkpoint_says_how_to_recover(tmp_path, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    (out / runio.WEIGHTS).write_bytes(b"\x00" * 40)
    (out / runio.CHECKPOINT).unlink()
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint.pt" in err and "restore" in err, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def test_a_non_utf8_checkpoint_path_is_read(tmp_path, tiny_run):
    weird = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff"))
    shutil.copytree(tiny_run, weird)
    assert runio.load_checkpoint(weird / runio.CHECKPOINT)["epoch"] == 1
