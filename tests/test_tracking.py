"""--log: what the trackers' own readers find in a run directory, after an uninterrupted and a killed run."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from iat import runio
from iat.cli import main
from iat.train.loop import POSTFIX_EVERY

# 1297 digits training images in batches of 32: 41 steps per epoch, so the progress cadence (20) and the
# epoch ends fall on different steps, and a resume point (checkpoint every 25 steps) lies between them.
ARGS = ["--method", "erm", "--dataset", "digits", "--arch", "cnn-small", "--width", "4", "--epochs", "2",
        "--batch-size", "32", "--seed", "0", "--device", "cpu", "--checkpoint-every", "25"]
STEPS_PER_EPOCH, EPOCHS = 41, 2


def expected_steps() -> list[int]:
    return [e * STEPS_PER_EPOCH + s for e in range(EPOCHS) for s in range(1, STEPS_PER_EPOCH + 1)
            if s % POSTFIX_EVERY == 0]


def iat_train(out: Path, *more: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IAT_TEST_")}
    return subprocess.run([sys.executable, "-m", "iat", "-q", "train", *ARGS, "--out", str(out), *more],
                          env={**clean, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=180)


def killed_then_resumed(out: Path, log: str) -> None:
    """Train with --log, SIGKILLed while writing its fourth checkpoint (at step 75; checkpoints at 25, 41 (the
    epoch's end), 50, 75), then resumed to the end. The killed attempt logged step 61 after the checkpoint the
    run resumes from (50): the resumed run logs it again, and the reader must see it once."""
    killed = iat_train(out, "--log", log, IAT_TEST_KILL_IN_WRITE="checkpoint.pt:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / runio.WEIGHTS).exists()
    finished = iat_train(out, "--log", log, "--resume")
    assert finished.returncode == 0, finished.stderr


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_resumed_run_logs_each_step_once_and_eval_results(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    killed_then_resumed(out, "tensorboard")
    assert main(["-q", "eval", str(out), "--attacks", "clean", "--limit", "50"]) == 0

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == expected_steps()  # in order, none twice, none lost
    assert all(e.value > 0 for e in loss)
    metrics = [json.loads(line) for line in (out / runio.METRICS).read_text().splitlines()]
    lr_by_epoch = [metrics[(e.step - 1) // STEPS_PER_EPOCH]["lr"] for e in loss]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx(lr_by_epoch, rel=1e-6)
    epoch_loss = events.Scalars("epoch/train_loss")
    assert [e.step for e in epoch_loss] == [STEPS_PER_EPOCH * (i + 1) for i in range(EPOCHS)]
    assert [e.value for e in epoch_loss] == pytest.approx([m["train_loss"] for m in metrics], rel=1e-6)
    evaluated = events.Scalars("eval/clean_error")
    eval_json = json.loads((out / runio.EVAL).read_text())
    assert [(e.step, e.value) for e in evaluated] == [
        (STEPS_PER_EPOCH * EPOCHS, pytest.approx(eval_json["results"]["clean"]["error"]))]
    assert "config/text_summary" in events.Tags()["tensors"]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")
def test_mlflow_file_store_resumed_run_is_one_run_with_each_step_once(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    out = tmp_path / "run"
    killed_then_resumed(out, "mlflow")
    state = json.loads((out / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("iat").experiment_id])
    assert [r.info.run_id for r in runs] == [state["mlflow_run_id"]]  # the resumed run continued the same one
    assert runs[0].data.params["method"] == "erm" and runs[0].data.params["epochs"] == "2"
    steps = [m.step for m in client.get_metric_history(state["mlflow_run_id"], "train/loss")]
    assert sorted(steps) == expected_steps()
    epochs = client.get_metric_history(state["mlflow_run_id"], "epoch/train_loss")
    assert sorted(m.step for m in epochs) == [STEPS_PER_EPOCH * (i + 1) for i in range(EPOCHS)]


@pytest.mark.parametrize("log, fragment", [("tensorboard,nosuch", "'nosuch' is not a tracker"),
                                           ("wandb", "pip install 'iat[wandb]'"), (",", "--log is empty")])
def test_bad_log_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, log, fragment):
    import iat.tracking

    monkeypatch.setitem(iat.tracking.PACKAGES, "wandb", "iat_no_such_package")  # wandb as if not installed
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "train", *ARGS, "--out", "run", "--log", log]) == 2
    err = capsys.readouterr().err
    assert err.startswith("iat train: error: ") and err.count("\n") == 1 and fragment in err, err
    assert list(tmp_path.iterdir()) == []
    assert iat.tracking.ENV not in os.environ
