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

from iat.cli import main
from iat.rundir import files
from iat.training.loop import POSTFIX_EVERY

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


INSTALLED = [name for name in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(name) is not None]


def needs(name: str):
    return pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed")


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    """A run logged to every installed tracker, SIGKILLed while writing its fourth checkpoint (at step 75;
    checkpoints at 25, 41 (the epoch's end), 50, 75), resumed to the end, then evaluated. The killed attempt
    logged step 61 after the checkpoint the run resumes from (50); the resumed run logs it again."""
    if not INSTALLED:
        pytest.skip("no tracker is installed")
    out = tmp_path_factory.mktemp("tracked") / "run"
    log, env = ",".join(INSTALLED), {"MLFLOW_TRACKING_URI": "", "WANDB_MODE": "offline"}
    killed = iat_train(out, "--log", log, IAT_TEST_KILL_IN_WRITE="checkpoint.pt:4", **env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / files.WEIGHTS).exists()
    finished = iat_train(out, "--log", log, "--resume", **env)
    assert finished.returncode == 0, finished.stderr
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert main(["-q", "eval", str(out), "--attacks", "clean", "--limit", "50"]) == 0
    return out


def epoch_ends() -> list[int]:
    return [STEPS_PER_EPOCH * (i + 1) for i in range(EPOCHS)]


@needs("tensorboard")
def test_tensorboard_reader_sees_each_step_once_epochs_and_eval(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = logged_run
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == expected_steps()  # in order, none twice, none lost
    assert all(e.value > 0 for e in loss)
    metrics = [json.loads(line) for line in (out / files.METRICS).read_text().splitlines()]
    lr_by_epoch = [metrics[(e.step - 1) // STEPS_PER_EPOCH]["lr"] for e in loss]
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx(lr_by_epoch, rel=1e-6)
    epoch_loss = events.Scalars("epoch/train_loss")
    assert [e.step for e in epoch_loss] == epoch_ends()
    assert [e.value for e in epoch_loss] == pytest.approx([m["train_loss"] for m in metrics], rel=1e-6)
    evaluated = events.Scalars("eval/clean_error")
    eval_json = json.loads((out / files.EVAL).read_text())
    assert [(e.step, e.value) for e in evaluated] == [
        (STEPS_PER_EPOCH * EPOCHS, pytest.approx(eval_json["results"]["clean"]["error"]))]
    assert "config/text_summary" in events.Tags()["tensors"]


@needs("mlflow")
def test_mlflow_file_store_holds_one_run_with_each_step_once(logged_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only when asked
    state = json.loads((logged_run / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=(logged_run / "mlruns").resolve().as_uri())
    runs = client.search_runs([client.get_experiment_by_name("iat").experiment_id])
    assert [r.info.run_id for r in runs] == [state["mlflow_run_id"]]  # the resumed run continued the same one
    assert runs[0].data.params["method"] == "erm" and runs[0].data.params["epochs"] == "2"
    assert runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(state["mlflow_run_id"], "train/loss")]
    assert sorted(steps) == expected_steps()
    epochs = client.get_metric_history(state["mlflow_run_id"], "epoch/train_loss")
    assert sorted(m.step for m in epochs) == epoch_ends()
    assert [m.step for m in client.get_metric_history(state["mlflow_run_id"], "eval/clean_error")] == [epoch_ends()[-1]]


def wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb): a 7-byte header, then LevelDB's log format (32 KiB blocks
    of chunks, each with a 7-byte header: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@needs("wandb")
def test_wandb_offline_runs_share_one_id_and_log_steps_config_and_eval(logged_run):
    state = json.loads((logged_run / "tracking.json").read_text())
    files = sorted((logged_run / "wandb").glob(f"offline-run-*/run-{state['wandb_id']}.wandb"))
    assert len(files) == 3  # the killed attempt, the resumed one, `iat eval`'s
    steps, config = [], {}
    for f in files:
        for r in wandb_records(f):
            if r.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                steps += [(f, r.history.step.num)] if "train/loss" in items else []
                if "eval/clean_error" in items:
                    assert r.history.step.num == epoch_ends()[-1]
            elif r.WhichOneof("record_type") in ("run", "config"):  # the config comes with the run record
                updates = r.run.config.update if r.HasField("run") else r.config.update
                config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in updates})
    # the resumed attempt logs from its checkpoint (50) on; what the killed one had logged reaches its file only
    # as far as W&B's own service wrote it before the kill
    assert [s for f, s in steps if f == files[1]] == [s for s in expected_steps() if s > 50]
    assert {s for f, s in steps if f == files[0]} <= set(expected_steps())
    assert config["method"] == "erm" and config["epochs"] == 2


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


@needs("tensorboard")
def test_experiment_figures_are_logged_as_images(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import iat.tracking

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "tradeoff.png")
    plt.close(fig)
    monkeypatch.setenv(iat.tracking.ENV, "tensorboard")
    iat.tracking.log_experiment(tmp_path, {"experiment": "demo"})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    [image] = events.Images("figures/tradeoff")
    assert (image.width, image.height) == (100, 75)
