"""Images kept as bytes and converted per batch; --data-placement device, host and mmap train the same weights."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import numpy as np
import pytest
import torch

from iat import data_placement
from iat.config import TrainConfig
from iat.data import load_data
from iat.errors import UsageError
from iat.rundir import files
from iat.training import step as step_module
from iat.training import train
from iat.training.step import TrainData

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CPU = torch.device("cpu")
CFG = TrainConfig(method="iat-mixup", dataset="digits", arch="cnn-small", width=4, epochs=2, batch_size=32,
                  train_size=100, eps=0.1, step_size=0.025, attack_steps=2, seed=3, device="cpu")


def test_images_are_stored_as_bytes_and_converted_to_load_datas_floats(tmp_path):
    data = TrainData.load(CFG, CPU)
    assert data.x.dtype == torch.uint8 and data.x.element_size() == 1  # a quarter of float32's memory
    x, y = load_data("digits", "train", limit=100)
    idx = torch.tensor([5, 0, 99, 42])
    images, labels = data.images(idx)
    assert images.dtype == torch.float32 and torch.equal(images, x[idx]) and torch.equal(labels, y[idx])


def test_streamed_placements_hold_the_bytes_off_the_device_and_batch_them_alike(tmp_path):
    cfg = dataclasses.replace(CFG, data_dir=str(tmp_path))
    device = TrainData.load(cfg, CPU)
    host = TrainData.load(dataclasses.replace(cfg, data_placement="host"), CPU)
    mapped = TrainData.load(dataclasses.replace(cfg, data_placement="mmap"), CPU)
    assert (device.placement, host.placement, mapped.placement) == ("device", "host", "mmap")
    assert not device.streamed and host.streamed and mapped.streamed
    assert len(list((tmp_path / "mmap").glob("train-*.npy"))) == 1  # written once, mapped from disk
    assert device.info.fingerprint == host.info.fingerprint == mapped.info.fingerprint
    order = torch.randperm(100)
    runs = []
    for data in (device, host, mapped):
        torch.manual_seed(0)  # augmentation draws: the same stream for each placement
        runs.append(list(data.batches(order, 1, 32)))
    for other in runs[1:]:
        assert len(other) == len(runs[0]) == 3
        for (xa, ya, sa), (xb, yb, sb) in zip(runs[0], other):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and sa == sb


def digest(run) -> str:
    return hashlib.sha256((run / files.WEIGHTS).read_bytes()).hexdigest()


def test_device_host_and_mmap_placements_train_bit_identical_weights(tmp_path):
    digests = {}
    for placement in ("device", "host", "mmap"):
        cfg = dataclasses.replace(CFG, data_placement=placement, data_dir=str(tmp_path))
        digests[placement] = digest(train(cfg, tmp_path / "runs" / placement, progress=False))
    assert digests["host"] == digests["device"] == digests["mmap"]


def write_aux(path, n=40, compressed=False):
    rng = np.random.default_rng(0)
    save = np.savez_compressed if compressed else np.savez
    save(path, image=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), label=rng.integers(0, 10, n))
    return path


def test_aux_data_trains_alike_in_place_and_mapped_from_an_uncompressed_npz(tmp_path):
    aux = write_aux(tmp_path / "aux.npz")
    digests = {}
    for placement in ("device", "host", "mmap"):
        cfg = dataclasses.replace(CFG, aux_data=str(aux), aux_fraction=0.5, epochs=1, data_placement=placement,
                                  data_dir=str(tmp_path))
        data = TrainData.load(cfg, CPU)
        assert data.aux.x.dtype == torch.uint8 and data.placement == placement
        digests[placement] = digest(train(cfg, tmp_path / "runs" / placement, progress=False))
    assert digests["host"] == digests["device"] == digests["mmap"]


def test_a_compressed_aux_file_cannot_be_mapped_and_says_how_to_save_it(tmp_path):
    aux = write_aux(tmp_path / "aux.npz", compressed=True)
    cfg = dataclasses.replace(CFG, aux_data=str(aux), data_placement="mmap", data_dir=str(tmp_path))
    with pytest.raises(UsageError, match=r"compressed .*np\.savez, or use --data-placement host") as e:
        TrainData.load(cfg, CPU)
    assert "\n" not in str(e.value)


def test_a_set_neither_the_device_nor_the_host_holds_is_refused_in_one_line_before_it_moves(monkeypatch):
    monkeypatch.setattr(data_placement, "host_available", lambda: 5_000)  # digits' 100 images: 6,400 bytes + labels
    moved = []
    monkeypatch.setattr(step_module, "place", lambda *a: moved.append(a))
    for asked, why in [("auto", "neither the cpu .* nor host memory .*--data-placement mmap"),
                       ("device", "--data-placement device: .* more than .*use --data-placement host or mmap"),
                       ("host", "--data-placement host: .* more than .*use --data-placement mmap")]:
        with pytest.raises(UsageError, match=why) as e:
            TrainData.load(dataclasses.replace(CFG, data_placement=asked), CPU)
        assert "\n" not in str(e.value) and "take 7.20 kB" in str(e.value)  # 100 x 64 bytes + 100 int64 labels
    assert not moved


def test_auto_keeps_the_set_on_a_gpu_when_half_its_free_memory_holds_it(monkeypatch):
    gpu = torch.device("cuda")
    monkeypatch.setattr(data_placement, "host_available", lambda: 64 * 10**9)
    monkeypatch.setattr(data_placement, "device_available", lambda device: 80 * 10**9)
    assert data_placement.choose_placement("auto", 39 * 10**9, gpu) == "device"
    assert data_placement.choose_placement("auto", 41 * 10**9, gpu) == "host"  # over half the free 80 GB
    with pytest.raises(UsageError, match="61.00 GB .*neither the cuda"):
        data_placement.choose_placement("auto", 61 * 10**9, gpu)  # 20M generated CIFAR images
    assert data_placement.choose_placement("mmap", 61 * 10**9, gpu) == "mmap"


def test_prefetching_runs_ahead_in_a_thread_raises_its_errors_and_stops_when_closed():
    seen = []

    def items():
        for i in range(100):
            seen.append((i, threading.current_thread().name))
            if i == 3 and fail:
                raise ValueError("bad batch 3")
            yield i

    fail = True
    with pytest.raises(ValueError, match="bad batch 3"):
        list(data_placement.prefetched(items()))
    assert {name for _, name in seen} == {"iat-prefetch"}
    fail, seen[:] = False, []
    stream = data_placement.prefetched(items())
    assert [next(stream), next(stream)] == [0, 1]
    stream.close()  # a signal ends the epoch early: the producer stops, one or two items ahead at most
    assert len(seen) <= 4 and not any(t.name == "iat-prefetch" for t in threading.enumerate())
