"""Property-based tests of the contract every command keeps: exit 0 or 2 (one line), never a traceback,
nothing written on a refusal, existing files unchanged.

Generated: `iat train` / `iat eval` option values (through the CLI's main() in this process, with the
expensive part stubbed out: what is tested is everything before it), config.json contents and
checkpoint contents. Small max_examples: the whole file runs in seconds.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iat.cli import main
from iat.errors import UsageError
from iat.rundir import files, tensors
from iat.rundir.read import load_run_model
from iat.training import train
from iat.training.resume import check_checkpoint
from iat.training.state import RunState

FAST = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

TRAIN_FLAGS = ["--seed", "--width", "--epochs", "--batch-size", "--lr", "--mixup-alpha", "--manifold-alpha",
               "--eps", "--step-size", "--attack-steps", "--train-size", "--momentum", "--weight-decay",
               "--milestones", "--lr-gamma", "--checkpoint-every"]

numberish = st.one_of(
    st.integers(-2**70, 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["8/255", "1/0", "0/0", "1e-300", "1e309", "-0", "0x10", "1_000", "", " ", "nan", "4,2",
                     "184461906879890", "100000", "1" * 5000, "2**70", "\udcff", "é"]),
    st.text(max_size=8),
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16, checkpoint_every=1)
    return train(cfg, tmp_path_factory.mktemp("props") / "run", progress=False)


def one_line_or_nothing(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("iat "), err


@FAST
@given(flag=st.sampled_from(TRAIN_FLAGS), value=numberish)
def test_train_options(flag, value, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("iat.cli.train.train", lambda cfg, out, **kw: calls.append(cfg) or Path(out))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = ["-q", "train", "--method", "mixup", "--dataset", "digits", "--arch", "cnn-small", "--width", "4",
                "--epochs", "2", "--out", str(out), flag, value]
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own refusal
            code = e.code
        one_line_or_nothing(code, capsys.readouterr().err)
        assert not out.exists()  # the stub writes nothing; a refusal must not have either
        assert (code == 0) == bool(calls)


@FAST
@given(attacks=st.sampled_from(["clean", "fgsm,pgd7", "pgd0", "pgd99999999999", "", ",", "autoattackx", "PGD7"]),
       option=st.sampled_from(["--eps", "--step-size", "--limit", "--restarts", "--batch-size"]), value=numberish)
def test_eval_options(tiny_run, attacks, option, value, monkeypatch, capsys):
    report = {"dataset": "digits", "n_examples": 1, "eps": 0.1, "step_size": 0.025, "results": {}}
    monkeypatch.setattr("iat.evaluate.evaluate_run", lambda *a, **k: report)
    before = sorted(p.name for p in tiny_run.iterdir())
    try:
        code = main(["-q", "eval", str(tiny_run), "--attacks", attacks, option, value])
    except SystemExit as e:
        code = e.code
    one_line_or_nothing(code, capsys.readouterr().err)
    assert sorted(p.name for p in tiny_run.iterdir()) == before


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**80, 2**80), st.floats(), st.text(max_size=6)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)


@FAST
@given(key=st.sampled_from(["epochs", "width", "seed", "lr", "eps", "arch", "dataset", "method", "milestones",
                            "batch_size", "attack_bn", "mixup_alpha", "train_size", "amp", "extra"]),
       value=json_values, raw=st.sampled_from([None, "[" * 50000, "1" * 5000, '{"arch": 1', "\xff"]))
def test_config_json_contents(tiny_run, tmp_path_factory, key, value, raw):
    run = tmp_path_factory.mktemp("cfg") / "run"
    shutil.copytree(tiny_run, run)
    if raw is None:
        config = json.loads((run / files.CONFIG).read_text())
        config[key] = value
        (run / files.CONFIG).write_text(json.dumps(config))
    else:
        (run / files.CONFIG).write_bytes(raw.encode("utf-8", "surrogateescape") if raw != "\xff" else b"\xff")
    try:
        load_run_model(run, "cpu")
    except UsageError as e:
        assert "\n" not in str(e) and str(run / files.CONFIG) in str(e) or "model.safetensors" in str(e), str(e)


@st.composite
def damaged_checkpoints(draw, ckpt: dict):
    ckpt = copy.deepcopy(ckpt)
    field = draw(st.sampled_from(["epoch", "step", "metrics", "running.loss_sum", "running.count", "running.seconds",
                                  "rng.python", "rng.numpy", "rng.torch", "rng.numpy_pos", "rng.python_gauss",
                                  "rng.numpy_gauss", "optimizer.state", "optimizer.param_groups", "model"]))
    value = draw(st.one_of(
        st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=4),
        st.lists(st.integers(0, 3), max_size=3),
        st.tuples(st.integers(0, 3), st.integers(0, 700)).map(lambda s: torch.zeros(s, dtype=torch.int64)),
        st.integers(0, 3000).map(lambda n: torch.zeros(n, dtype=torch.uint8)),
        st.just({}), st.just({0: {"momentum_buffer": torch.zeros(3)}})))
    *parents, last = field.split(".")
    target = ckpt
    for p in parents:
        target = target[p]
    target[last] = value
    return ckpt


@pytest.fixture(scope="module")
def good_checkpoint(tiny_run):
    return tensors.load_checkpoint(tiny_run / files.CHECKPOINT)


def test_checkpoint_contents(good_checkpoint, tmp_path):
    cfg = tiny_config("erm", epochs=1, train_size=32, batch_size=16, checkpoint_every=1)
    path = tmp_path / files.CHECKPOINT

    @FAST
    @given(ckpt=damaged_checkpoints(good_checkpoint))
    def check(ckpt):
        state = RunState.create(cfg, torch.device("cpu"))
        try:
            state.restore(check_checkpoint(cfg, path, ckpt), path, steps_per_epoch=2)
        except UsageError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)

    check()
