"""The checkpoint keeps the RNG state of the training device only (issue 13.1), with torch.cuda mocked:
a run resumes on a node with fewer GPUs, old all-devices checkpoints still resume, and a resume on
another device says so in one warning line."""

from __future__ import annotations

import logging

import pytest
import torch

from iat.training import state as run_state
from iat.training.state import rng_state, set_rng_state


class FakeCuda:
    """torch.cuda with `count` GPUs, each with its own RNG state (a byte tensor)."""

    def __init__(self, count: int, name: str = "NVIDIA H100"):
        self.states = [torch.full((8,), i, dtype=torch.uint8) for i in range(count)]
        self.name, self.set_calls = name, []

    def install(self, monkeypatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(cuda, "current_device", lambda: 0)
        monkeypatch.setattr(cuda, "get_device_name", lambda device=None: self.name)
        monkeypatch.setattr(cuda, "get_rng_state", lambda device="cuda": self.states[self.index(device)].clone())
        monkeypatch.setattr(cuda, "set_rng_state", self.set_rng_state)

        def refuse(*args, **kwargs):
            raise AssertionError("the state of every visible GPU must not be saved or restored")
        monkeypatch.setattr(cuda, "get_rng_state_all", refuse)
        monkeypatch.setattr(cuda, "set_rng_state_all", refuse)

    @staticmethod
    def index(device) -> int:
        device = torch.device(device)
        return device.index if device.index is not None else 0

    def set_rng_state(self, state, device="cuda") -> None:
        i = self.index(device)
        if i >= len(self.states):
            raise RuntimeError(f"invalid device ordinal {i}")
        self.set_calls.append(i)
        self.states[i] = state.clone()


def test_only_the_training_devices_state_is_saved(monkeypatch):
    FakeCuda(4).install(monkeypatch)
    saved = rng_state(torch.device("cuda:2"))
    assert torch.equal(saved["cuda"], torch.full((8,), 2, dtype=torch.uint8))
    assert saved["device_name"] == "cuda: NVIDIA H100"


def test_a_cpu_run_saves_no_cuda_state(monkeypatch):
    FakeCuda(2).install(monkeypatch)
    saved = rng_state(torch.device("cpu"))
    assert "cuda" not in saved and saved["device_name"] == "cpu"


def test_a_run_saved_on_gpu_3_of_8_resumes_on_a_one_gpu_node(monkeypatch):
    eight = FakeCuda(8)
    eight.install(monkeypatch)
    saved = rng_state(torch.device("cuda:3"))
    one = FakeCuda(1)
    one.install(monkeypatch)
    set_rng_state(saved, torch.device("cuda:0"))
    assert one.set_calls == [0] and torch.equal(one.states[0], torch.full((8,), 3, dtype=torch.uint8))


def test_an_old_all_devices_checkpoint_resumes_on_a_node_with_fewer_gpus(monkeypatch):
    old = rng_state(torch.device("cpu"))
    old["cuda"] = [torch.full((8,), 10 + i, dtype=torch.uint8) for i in range(4)]  # the old format
    two = FakeCuda(2)
    two.install(monkeypatch)
    set_rng_state(old, torch.device("cuda:1"))
    assert two.set_calls == [1] and torch.equal(two.states[1], torch.full((8,), 11, dtype=torch.uint8))
    set_rng_state(old, torch.device("cuda"))  # cuda (no index): the current device, 0
    assert two.set_calls == [1, 0]
    old["cuda"] = old["cuda"][:1]
    set_rng_state(old, torch.device("cuda:1"))  # no entry for the training device: nothing to restore
    assert two.set_calls == [1, 0]


def test_a_cpu_run_restores_no_cuda_state(monkeypatch):
    fake = FakeCuda(2)
    fake.install(monkeypatch)
    saved = rng_state(torch.device("cuda:0"))
    set_rng_state(saved, torch.device("cpu"))
    assert fake.set_calls == []


@pytest.mark.parametrize("saved_on, resumed_on, warns", [
    ("cuda:0", "cuda:0", False), ("cuda:0", "cpu", True), ("cpu", "cuda:0", True), ("cpu", "cpu", False)])
def test_a_resume_on_another_device_warns_in_one_line(monkeypatch, caplog, saved_on, resumed_on, warns):
    FakeCuda(1).install(monkeypatch)
    saved = rng_state(torch.device(saved_on))
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        set_rng_state(saved, torch.device(resumed_on))
    assert len(caplog.records) == int(warns)
    if warns:
        assert "\n" not in caplog.text.strip() and "not bit-identical" in caplog.text


def test_another_gpu_model_warns(monkeypatch, caplog):
    FakeCuda(1, "NVIDIA A100").install(monkeypatch)
    saved = rng_state(torch.device("cuda:0"))
    FakeCuda(1, "NVIDIA H100").install(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        set_rng_state(saved, torch.device("cuda:0"))
    assert "NVIDIA A100" in caplog.text and "NVIDIA H100" in caplog.text


def test_the_cpu_state_round_trips():
    saved = rng_state(torch.device("cpu"))
    a = torch.rand(3)
    set_rng_state(saved, torch.device("cpu"))
    assert torch.equal(torch.rand(3), a) and run_state.device_name(None) == "cpu"
