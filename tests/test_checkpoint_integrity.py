"""Checkpoints and final weights, field by field: anything that does not fit this run is one line naming it;
damaged final weights are rebuilt from a final checkpoint; what a resumed run records (provenance)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from reliability_helpers import cli_args, train_tiny_run

from iat.cli import main
from iat.rundir import files, tensors
from iat.training import train


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped mid-epoch 2 by a checkpoint every 3 steps: (config, run dir) to copy from."""
    cfg = tiny_config("pgd", epochs=2, train_size=96, batch_size=16, attack_steps=1, checkpoint_every=3)
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(cfg, out, progress=False)
    (out / files.WEIGHTS).unlink()  # the last checkpoint is at the end of epoch 2: make it resumable again
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
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
    tensors.save_checkpoint(out / files.CHECKPOINT, damage(ckpt, field, value))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and named in err and str(out / files.CHECKPOINT) in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_momentum_buffer_of_the_wrong_shape_is_one_line(tmp_path, interrupted, capsys):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    ckpt = damage(ckpt, "optimizer.state.0.momentum_buffer", torch.zeros(2, 2))
    tensors.save_checkpoint(out / files.CHECKPOINT, ckpt)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optimizer.state.0.momentum_buffer" in err, err


def test_nan_in_a_checkpoints_weights_is_refused(tmp_path, interrupted, capsys):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    name = next(k for k in ckpt["model"] if k.endswith("weight"))
    ckpt = damage(ckpt, f"model.{name}", torch.full_like(ckpt["model"][name], float("nan")))
    tensors.save_checkpoint(out / files.CHECKPOINT, ckpt)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN" in err, err


# ------------------------------------------------------------- a finished run with damaged weights


@pytest.mark.parametrize("damage", ["garbage", "nan"])
def test_resume_rebuilds_damaged_final_weights_from_the_final_checkpoint(tmp_path, damage, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    good = (out / files.WEIGHTS).read_bytes()
    if damage == "garbage":
        (out / files.WEIGHTS).write_bytes(b"\x00" * 40)
    else:
        state = tensors.load_weights(out / files.WEIGHTS)
        name = next(k for k in state if k.endswith("weight"))
        state[name] = torch.full_like(state[name], float("nan"))
        tensors.save_weights(out / files.WEIGHTS, state)
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 0
    assert (out / files.WEIGHTS).read_bytes() == good


def test_resume_with_damaged_weights_and_no_final_checkpoint_says_how_to_recover(tmp_path, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    (out / files.WEIGHTS).write_bytes(b"\x00" * 40)
    (out / files.CHECKPOINT).unlink()
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoint.pt" in err and "restore" in err, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def test_a_non_utf8_checkpoint_path_is_read(tmp_path, tiny_run):
    weird = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff"))
    shutil.copytree(tiny_run, weird)
    assert tensors.load_checkpoint(weird / files.CHECKPOINT)["epoch"] == 1


# ----------------------------------------------------------- metrics rows, config.json's `resumes`


def row(epoch: int) -> dict:
    return {"epoch": epoch, "lr": 0.1, "train_loss": 1.5, "seconds": 0.5}


@pytest.mark.parametrize("epoch, step, rows, named", [
    (1, 3, [], "metrics"),  # mid-epoch 2 with epoch 1's row lost: the finished run would lack it
    (2, 0, [{**row(1), "train_loss": "low"}, row(2)], "metrics row 1"),
    (2, 0, [row(2), row(1)], "metrics row 1"),  # out of order
    (2, 0, [row(1), {**row(2), "lr": float("inf")}], "metrics row 2"),
])
def test_metrics_rows_that_are_not_one_per_finished_epoch_are_refused(tmp_path, interrupted, capsys, epoch, step,
                                                                      rows, named):
    cfg, src, ckpt = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    tensors.save_checkpoint(out / files.CHECKPOINT, {**ckpt, "epoch": epoch, "step": step, "metrics": rows})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{named} " in err and str(out / files.CHECKPOINT) in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("resumes", [
    "compile=false",
    [{"epoch": 1, "step": 0, "changed": {"lr": 1.0}}],  # not a speed option: it would change the maths
    [{"epoch": "1", "step": 0, "changed": {}}],
    [["epoch", 1]],
])
def test_a_hand_edited_resumes_entry_is_one_line(tmp_path, interrupted, capsys, resumes):
    cfg, src, _ = interrupted
    out = tmp_path / "run"
    shutil.copytree(src, out)
    files.write_json(out / files.CONFIG, {**files.read_json(out / files.CONFIG), "resumes": resumes})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`resumes`" in err and "Traceback" not in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_resume_with_nothing_to_resume_records_the_options_it_runs_with(tmp_path):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16, channels_last=False)
    out = train(cfg, tmp_path / "run", progress=False)
    for name in (files.CHECKPOINT, files.METRICS, files.WEIGHTS):  # as if killed before its first checkpoint
        (out / name).unlink()
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 0  # channels_last: the default
    config = files.read_json(out / files.CONFIG)
    assert config["channels_last"] is True and "resumes" not in config


# ------------------------------------------------------ final weights that do not fit the model


@pytest.mark.parametrize("damage", ["float64", "renamed", "extra"])
def test_final_weights_that_do_not_fit_the_model_are_rebuilt_not_complete(tmp_path, damage):
    from iat.training import is_complete

    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    good = (out / files.WEIGHTS).read_bytes()
    state = tensors.load_weights(out / files.WEIGHTS)
    name = next(k for k in state if k.endswith("bias"))
    if damage == "float64":
        state[name] = state[name].double()
    elif damage == "renamed":
        state[name + "_"] = state.pop(name)
    else:
        state["stray"] = torch.zeros(3)
    tensors.save_weights(out / files.WEIGHTS, state)
    assert not is_complete(cfg, out)  # reproduce retrains (rebuilds) it instead of calling it "already trained"
    assert main(["-q", "train", *cli_args(cfg), "--out", str(out), "--resume"]) == 0
    assert (out / files.WEIGHTS).read_bytes() == good


# ---------------------------------------------------------------------------- the data resumed on


def write_idx_train(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    folder.mkdir()
    for stem, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        header = b"\0\0\x08" + bytes([array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (folder / stem).write_bytes(header + array.astype(np.uint8).tobytes())
    return folder


def test_resuming_on_other_data_of_the_same_size_is_refused(tmp_path, capsys):
    rng = np.random.RandomState(0)
    images, labels = rng.randint(0, 256, (32, 28, 28)), rng.randint(0, 10, 32)
    first = write_idx_train(tmp_path / "a", images, labels)
    other = write_idx_train(tmp_path / "b", images, (labels + 1) % 10)  # another copy: same size, other labels
    args = ["--method", "erm", "--dataset", "mnist", "--arch", "cnn-small", "--width", "4", "--epochs", "1",
            "--train-size", "32", "--batch-size", "16", "--device", "cpu"]
    out = tmp_path / "run"
    assert main(["-q", "train", *args, "--data-dir", str(first), "--out", str(out)]) == 0
    (out / files.WEIGHTS).unlink()  # the final checkpoint stays: resuming trains nothing, writes the weights
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["-q", "train", *args, "--data-dir", str(other), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training data differ" in err and f"--data-dir {first}" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["-q", "train", *args, "--data-dir", str(first), "--out", str(out), "--resume"]) == 0
