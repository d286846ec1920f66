"""Data sets as tensors in [0,1]; torchvision's formats read from small files made here."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision
import torchvision.datasets.cifar
import torchvision.datasets.svhn

from iat.data import DEBIAN_FASHION_MNIST, augment, dataset_info, dataset_names, found_locally, load_data
from iat.errors import UsageError


def test_digits_split():
    x, y = load_data("digits", "train")
    xt, yt = load_data("digits", "test")
    assert x.shape == (1297, 1, 8, 8) and xt.shape == (500, 1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() == 1 and set(y.tolist()) == set(range(10))
    assert load_data("digits", "train", limit=10)[0].shape[0] == 10


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian():
    x, y = load_data("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and y.bincount().tolist() == [1000] * 10
    assert 0 <= x.min() and x.max() <= 1


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files_from_data_dir(tmp_path, compress):
    rng = np.random.RandomState(0)
    imgs, labels = rng.randint(0, 256, (5, 28, 28)), rng.randint(0, 10, 5)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", imgs, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = load_data("mnist", "test", data_dir=tmp_path)
    assert torch.equal((x * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(imgs.astype(np.uint8)))
    assert y.tolist() == labels.tolist()


def test_found_locally_needs_both_splits_where_load_data_looks(tmp_path):
    assert not found_locally("mnist", tmp_path)
    for prefix in ("t10k", "train"):
        assert not found_locally("mnist", tmp_path)  # the test split alone is not enough
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.zeros((5, 28, 28)), False)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(5), True)
    assert found_locally("mnist", tmp_path) and found_locally("fashion-mnist-32", tmp_path)


def test_truncated_idx_file_is_a_usage_error(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28)), False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5), False)
    data = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(UsageError, match="truncated"):
        load_data("mnist", "test", data_dir=tmp_path)


def test_cifar10_in_torchvision_format(tmp_path, monkeypatch):
    """A tiny cifar-10-batches-py; torchvision's md5 checks are the only thing bypassed."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = {"data": rng.randint(0, 256, (4, 3072)).astype(np.uint8), "labels": list(rng.randint(0, 10, 4))}
        pickle.dump(batch, open(folder / name, "wb"))
    pickle.dump({"label_names": [str(i) for i in range(10)]}, open(folder / "batches.meta", "wb"))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    x, y = load_data("cifar10", "train", data_dir=tmp_path)
    assert x.shape == (20, 3, 32, 32) and y.shape == (20,)
    raw = pickle.load(open(folder / "data_batch_1", "rb"))["data"][0].reshape(3, 32, 32)
    assert torch.equal((x[0] * 255).round().to(torch.uint8), torch.from_numpy(raw))


def test_svhn_in_torchvision_format(tmp_path, monkeypatch):
    from scipy.io import savemat

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (32, 32, 3, 6)).astype(np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[10], [1], [2], [3], [4], [5]])})
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda *a, **k: True)
    x, y = load_data("svhn", "test", data_dir=tmp_path)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4, 5]  # SVHN's label 10 is digit 0


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist"])
def test_missing_dataset_says_how_to_get_it(tmp_path, name):
    with pytest.raises(UsageError, match="--data-dir"):
        load_data(name, "test", data_dir=tmp_path)


def test_unknown_names():
    with pytest.raises(UsageError, match="cifar10"):
        dataset_info("imagenet")
    with pytest.raises(UsageError, match="train"):
        load_data("digits", "validation")
    assert dataset_names() == ["digits", "mnist", "fashion-mnist", "fashion-mnist-32", "cifar10", "svhn", "cifar100",
                               "tiny-imagenet"]


@pytest.mark.skipif(not found_locally("fashion-mnist"), reason="Fashion-MNIST not found (`make data`)")
def test_fashion_mnist_32_is_fashion_mnist_with_a_black_border():
    small, y = load_data("fashion-mnist", "test", limit=50)
    big, y32 = load_data("fashion-mnist-32", "test", limit=50)
    assert big.shape == (50, 1, 32, 32) and torch.equal(y, y32)
    assert torch.equal(big[:, :, 2:30, 2:30], small) and big[:, :, :2].abs().sum() == 0


def test_random_crop_is_a_shifted_window():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment(x, crop_pad=2, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)  # some example moved


def test_flip_flips_about_half():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 4, 4)
    out = augment(x, crop_pad=0, flip=True)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(400)]
    kept = [torch.equal(out[i], x[i]) for i in range(400)]
    assert all(f or k for f, k in zip(flipped, kept)) and 150 < sum(flipped) < 250
    assert torch.equal(augment(x, 0, False), x)


def test_download_only_when_asked(tmp_path, monkeypatch):
    """Absent data: an error saying how to get it, unless download=True hands the job to torchvision."""
    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            self.data = torch.zeros(3, 28, 28, dtype=torch.uint8)
            self.targets = torch.tensor([1, 2, 3])

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    monkeypatch.setattr("iat.data.DEFAULT_DATA_DIR", tmp_path / "cache")
    with pytest.raises(UsageError, match="--download"):
        load_data("fashion-mnist", "test", data_dir=tmp_path)
    assert calls == []
    x, y = load_data("fashion-mnist", "test", data_dir=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)] and x.shape == (3, 1, 28, 28) and y.tolist() == [1, 2, 3]
