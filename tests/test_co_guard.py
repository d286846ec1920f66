"""The catastrophic-overfitting guard: fires on a planted collapse, stays quiet on an honest run,
keeps the last good checkpoint, and never changes what is trained."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from iat.cli import main
from iat.distributed import World
from iat.rundir import files, tensors
from iat.training import TrainingError, train
from iat.training import guard as guard_mod
from iat.training.checkpoint import Checkpointer
from iat.training.guard import CatastrophicOverfitting, collapsed, guard_on
from iat.training.state import RunState
from iat.training.step import TrainData

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / files.METRICS).read_text().splitlines()]


def test_the_rule():
    assert collapsed(0.02, 0.45)  # the classic: from 45% to about zero within an epoch
    assert not collapsed(0.40, 0.45)  # an honest wobble
    assert not collapsed(0.12, 0.80)  # a large drop, but not to near zero
    assert not collapsed(0.01, 0.10)  # never robust: within the noise of 256 images
    assert collapsed(0.05, 0.30) and not collapsed(0.07, 0.30)  # below a fifth of the best


def test_on_when():
    assert guard_on(tiny_config("pgd", attack="fgsm-rs")) and guard_on(tiny_config("iat-mixup", attack="n-fgsm"))
    assert not guard_on(tiny_config("pgd"))  # auto: PGD-7 training does not overfit catastrophically
    assert guard_on(tiny_config("pgd", co_guard="on"))
    assert not guard_on(tiny_config("pgd", attack="fgsm-rs", co_guard="off"))
    assert not guard_on(tiny_config("erm")) and not guard_on(tiny_config("pgd", attack="fgsm-rs", eps=0.0))


def test_planted_collapse_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, caplog):
    accuracies = iter([(0.9, 0.40), (0.9, 0.50), (0.95, 0.02), (0.95, 0.6)])
    monkeypatch.setattr(guard_mod, "measure", lambda *a, **k: next(accuracies))
    out = tmp_path / "run"
    with pytest.raises(CatastrophicOverfitting, match="catastrophic overfitting at epoch 3") as e:
        train(tiny_config("pgd", attack="fgsm-rs", epochs=4, train_size=128), out, progress=False)
    assert isinstance(e.value, TrainingError) and "\n" not in str(e.value)
    assert "50.0%" in str(e.value) and "2.0%" in str(e.value)
    assert tensors.load_checkpoint(out / files.CHECKPOINT)["epoch"] == 2  # epoch 3's was never written
    assert not (out / files.WEIGHTS).exists()
    got = rows(out)
    assert [r["guard_pgd_acc"] for r in got] == [0.4, 0.5, 0.02]
    assert got[-1]["catastrophic_overfitting"] is True and "catastrophic_overfitting" not in got[1]
    assert any("!!! catastrophic overfitting" in r.message for r in caplog.records)

    # The user who wants the run anyway resumes it without the guard, from the last good checkpoint.
    train(tiny_config("pgd", attack="fgsm-rs", epochs=4, train_size=128, co_guard="off"), out, resume=True,
          progress=False)
    assert (out / files.WEIGHTS).is_file() and [r["epoch"] for r in rows(out)] == [1, 2, 3, 4]


def test_cli_says_it_in_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    accuracies = iter([(0.9, 0.5), (0.9, 0.0)])
    monkeypatch.setattr(guard_mod, "measure", lambda *a, **k: next(accuracies))
    code = main(["train", "--method", "iat-mixup", "--attack", "n-fgsm", "--dataset", "digits", "--arch", "cnn-small",
                 "--width", "8", "--epochs", "2", "--train-size", "128", "--eps", "0.1", "--device", "cpu",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and "catastrophic overfitting at epoch 2" in err[-1] and "Traceback" not in "".join(err)


def test_honest_run_stays_quiet(tmp_path):
    run = train(tiny_config("iat-mixup", attack="fgsm-rs", epochs=4), tmp_path / "run", progress=False)
    got = rows(run)
    assert (run / files.WEIGHTS).is_file() and len(got) == 4
    assert not any(r.get("catastrophic_overfitting") for r in got)
    assert all(0 <= r["guard_pgd_acc"] <= r["guard_clean_acc"] <= 1 for r in got)
    assert got[-1]["guard_pgd_acc"] > 0.2  # it measures something real: a robust model on digits


def test_guard_does_not_change_the_trained_weights(tmp_path):
    """It draws from its own generator and restores torch's RNG: guarded and unguarded runs are bit-equal."""
    a = train(tiny_config("pgd", co_guard="on", epochs=2, train_size=256), tmp_path / "on", progress=False)
    b = train(tiny_config("pgd", co_guard="off", epochs=2, train_size=256), tmp_path / "off", progress=False)
    assert (a / files.WEIGHTS).read_bytes() == (b / files.WEIGHTS).read_bytes()
    assert "guard_pgd_acc" in rows(a)[0] and "guard_pgd_acc" not in rows(b)[0]


def test_under_torchrun_every_rank_decides_on_rank_zeros_measurement(tmp_path, monkeypatch):
    """The ranks' BatchNorm statistics differ, so each would measure its own accuracy; rank 0 measures and
    broadcasts (World.on_main), so every rank takes the same decision and writes the same row."""
    broadcast = iter([(0.95, 0.02), None])  # rank 0's guard numbers (a collapse), then its metrics write

    class RankOne(World):
        def on_main(self, fn):
            return next(broadcast)

    monkeypatch.setattr(guard_mod, "measure", lambda *a, **k: pytest.fail("rank 1 measured on its own"))
    cfg = tiny_config("pgd", attack="fgsm-rs", train_size=128)
    state = RunState.create(cfg, torch.device("cpu"), RankOne(1, 2))
    state.metrics = [{"epoch": 1, "guard_pgd_acc": 0.5}, {"epoch": 2}]
    with pytest.raises(CatastrophicOverfitting, match="fell to 2.0% from a best of 50.0%"):
        guard_mod.check_overfitting(state, TrainData.load(cfg, torch.device("cpu")),
                                    Checkpointer(tmp_path, 0, state.world))
    assert state.metrics[-1]["guard_pgd_acc"] == 0.02 and state.metrics[-1]["catastrophic_overfitting"]
