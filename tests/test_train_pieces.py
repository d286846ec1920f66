"""The training loop's pieces, each alone: run state, step, batches, checkpointer, signal guard."""

from __future__ import annotations

import errno
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from iat.config import TrainConfig
from iat.distributed import World
from iat.rundir import files, tensors
from iat.training import CheckpointWriteError, TrainingDiverged, TrainingInterrupted
from iat.training.checkpoint import Checkpointer
from iat.training.signals import SignalGuard
from iat.training.state import RunState
from iat.training.step import LossTally, Step, TrainData, make_objective

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CFG = TrainConfig(method="mixup", dataset="digits", arch="cnn-small", width=4, epochs=2, batch_size=32,
                  train_size=100, seed=1, device="cpu")
CPU = torch.device("cpu")


def test_batches_cover_an_epoch_from_any_step():
    data = TrainData.load(CFG, CPU)
    assert data.steps_per_epoch(32) == 4
    order = torch.arange(len(data))
    sizes = [len(y) for _, y, _ in data.batches(order, 0, 32)]
    assert sizes == [32, 32, 32, 4]
    (_, y, share), = data.batches(order, 3, 32)
    assert torch.equal(y, data.y[96:]) and share == 1.0
    # under torchrun, a rank's part of each batch and its share of it (the 4-example last batch: 2 of 4)
    shares = [(len(y), share) for _, y, share in data.batches(order, 0, 32, World(1, 3).shard)]
    assert shares == [(11, 11 / 32), (11, 11 / 32), (11, 11 / 32), (1, 1 / 4)]


def test_step_updates_once_and_counts_it():
    state = RunState.create(CFG, CPU)
    loss_fn = make_objective(CFG, state.model).loss
    before = [p.detach().clone() for p in state.model.parameters()]
    data = TrainData.load(CFG, CPU)
    x, y, _ = next(data.batches(torch.arange(len(data)), 0, 32))
    step, tally = Step(state.model, state.optimizer, loss_fn), LossTally(Path("x"))
    tally.add(state, step(x, y), len(x))
    tally.sync(state)  # the loss is summed on the device until then
    assert state.step == 1 and state.running["count"] == 32 and state.running["loss_sum"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, state.model.parameters()))


def test_a_non_finite_loss_stops_the_run_at_the_next_sync_naming_its_step():
    # The step does not sync, so the non-finite loss is found at the next sync (the loop syncs before
    # every checkpoint and at each epoch's end), which names the step where it happened.
    state = RunState.create(CFG, CPU)
    loss_fn = make_objective(CFG, state.model).loss
    calls = []

    def nan_at_2(model, x, y):
        calls.append(1)
        loss, metrics = loss_fn(model, x, y)
        return (loss * float("nan") if len(calls) == 2 else loss), metrics

    step, tally = Step(state.model, state.optimizer, nan_at_2), LossTally(Path("run"))
    for _ in range(3):
        tally.add(state, step(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), 4)
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 1, step 2; the last good checkpoint in run"):
        tally.sync(state)
    with pytest.raises(TrainingDiverged, match="weights became NaN"):  # and they are never checkpointed
        Checkpointer(Path("run")).save(state)


def test_a_checkpoint_restores_the_run_state_exactly(tmp_path):
    state = RunState.create(CFG, CPU)
    state.epoch, state.step, state.running["count"] = 0, 2, 64  # mid first epoch: no metrics row is due yet
    Checkpointer(tmp_path).save(state)
    expected = torch.rand(3)  # the RNG moves on after the checkpoint ...
    other = RunState.create(CFG, CPU)
    other.restore(tensors.load_checkpoint(tmp_path / files.CHECKPOINT), tmp_path / files.CHECKPOINT, 4)
    assert torch.equal(torch.rand(3), expected)  # ... and is back where it was
    assert (other.epoch, other.step, other.running["count"]) == (0, 2, 64)
    for a, b in zip(state.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_checkpointer_refuses_non_finite_weights_and_reports_a_full_disk(tmp_path, monkeypatch):
    state = RunState.create(CFG, CPU)
    with torch.no_grad():
        next(state.model.parameters()).fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite"):
        Checkpointer(tmp_path).save(state)
    assert not (tmp_path / files.CHECKPOINT).exists()

    def full(path, content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_jsonl", full)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*previous checkpoint is intact"):
        Checkpointer(tmp_path).save_metrics([])


def test_checkpoints_are_due_every_n_steps_of_the_run_but_not_at_an_epochs_end(tmp_path):
    state = RunState.create(CFG, CPU)
    due = []
    for epoch, step in [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2)]:
        state.epoch, state.step = epoch, step
        due.append(Checkpointer(tmp_path, 2).due(state, 4))
    assert due == [False, True, False, False, True]
    assert not Checkpointer(tmp_path, 0).due(state, 4)


def test_signal_guard_records_one_signal_raises_on_the_second_and_restores_handlers(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as e:
        with SignalGuard(tmp_path, lambda: (1, 5)) as guard:
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.signum == signal.SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)
    assert not e.value.saved and (e.value.epoch, e.value.step) == (1, 5)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_signal_guard_does_nothing_off_the_main_thread(tmp_path):
    seen = []

    def body():
        with SignalGuard(tmp_path, lambda: (0, 0)) as guard:
            seen.append(guard._previous)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [{}]


def test_a_gpu_run_without_graphs_is_told_the_measured_speed_options():
    from iat.training.loop import gpu_speed_hint

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    hint = gpu_speed_hint(cuda, {"cuda_graphs_used": False, "world_size": 1})
    assert hint and "--speed fast" in hint and "CUDA graphs" in hint and "Speed and precision" in hint
    assert gpu_speed_hint(cuda, {"cuda_graphs_used": True, "world_size": 1}) is None  # already graphed
    assert gpu_speed_hint(cuda, {"cuda_graphs_used": False, "world_size": 2}) is None  # torchrun: graphs cannot run
    assert gpu_speed_hint(cpu, {"cuda_graphs_used": False, "world_size": 1}) is None
