"""Data and weights that cannot be trusted are refused where they are loaded, with one line.

Each bad file is built here: idx files (gzipped or not) in MNIST's layout, a cut-off CIFAR pickle,
safetensors files holding NaN, inf or a negative BatchNorm variance.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from iat.data import load_data
from iat.errors import UsageError
from iat.rundir import tensors


def idx_bytes(array: np.ndarray, magic: bytes = b"\0\0\x08") -> bytes:
    return magic + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + \
        array.astype(np.uint8).tobytes()


def write_mnist(folder, images=None, labels=None, gz=False, split="t10k"):
    """Five random 28x28 images and labels, or the arrays (or raw bytes) given."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (5, 28, 28)) if images is None else images
    labels = rng.randint(0, 10, 5) if labels is None else labels
    suffix = ".gz" if gz else ""
    paths = []
    for stem, content in [("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)]:
        data = content if isinstance(content, bytes) else idx_bytes(np.asarray(content))
        path = folder / f"{split}-{stem}{suffix}"
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        paths.append(path)
    return paths


def refused(match, *args, **kw) -> str:
    with pytest.raises(UsageError, match=match) as e:
        load_data(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_zero_images(tmp_path):
    images, labels = write_mnist(tmp_path, np.zeros((0, 28, 28)), np.zeros(0))
    assert str(images) in refused("holds no images", "mnist", "test", tmp_path)


def test_label_outside_the_classes_is_named(tmp_path):
    _, labels = write_mnist(tmp_path, labels=np.array([1, 2, 10, 3, 4]))
    msg = refused(r"label 10 \(example 2\) is outside the 10 classes 0\.\.9", "mnist", "test", tmp_path)
    assert str(labels) in msg


def test_more_labels_than_images(tmp_path):
    write_mnist(tmp_path, labels=np.zeros(6))
    refused(r"5 images but labels of shape \(6,\)", "mnist", "test", tmp_path)


def test_wrong_image_size(tmp_path):
    write_mnist(tmp_path, images=np.zeros((5, 32, 32)))
    refused(r"images of shape \(32, 32\); mnist images are 1x28x28", "mnist", "test", tmp_path)


def test_wrong_number_of_dimensions_is_a_wrong_header(tmp_path):
    write_mnist(tmp_path, images=np.zeros((5, 28 * 28)))
    msg = refused("wrong idx header", "mnist", "test", tmp_path)
    assert "2 dimensions, expected 3" in msg and "truncated" not in msg


def test_wrong_magic_is_a_wrong_header_not_truncation(tmp_path):
    write_mnist(tmp_path, images=idx_bytes(np.zeros((5, 28, 28)), magic=b"\0\0\x0d"))  # float idx
    msg = refused("wrong idx header", "mnist", "test", tmp_path)
    assert "0x00000d03" in msg and "truncated" not in msg
    write_mnist(tmp_path, images=b"PK\x03\x04 a zip file, not idx" * 10)
    assert "truncated" not in refused("wrong idx header", "mnist", "test", tmp_path)


def test_extra_bytes_are_not_called_truncation(tmp_path):
    write_mnist(tmp_path, images=idx_bytes(np.zeros((5, 28, 28))) + b"\0" * 10)
    assert "truncated" not in refused("10 bytes more", "mnist", "test", tmp_path)


@pytest.mark.parametrize("cut", [2, 10, 1000])
def test_truncated_idx(tmp_path, cut):
    data = idx_bytes(np.zeros((5, 28, 28)))
    write_mnist(tmp_path, images=data[:cut])
    refused(r"is truncated/corrupt \(.*\) \(fix: ", "mnist", "test", tmp_path)


def test_truncated_and_corrupt_gz(tmp_path):
    images, _ = write_mnist(tmp_path, gz=True)
    good = images.read_bytes()
    images.write_bytes(good[: len(good) // 2])
    refused(rf"{images} is truncated/corrupt", "mnist", "test", tmp_path)
    images.write_bytes(good[:-8] + b"\xff" * 8)  # wrong CRC and length
    refused(rf"{images} is truncated/corrupt", "mnist", "test", tmp_path)
    images.write_bytes(b"\x1f\x8b" + b"\x00" * 40)  # a gzip magic, then garbage
    refused(rf"{images} is truncated/corrupt", "mnist", "test", tmp_path)
    images.write_bytes(b"not gzip at all")
    refused(rf"{images} is truncated/corrupt", "mnist", "test", tmp_path)


def test_good_files_load_unchanged_from_a_non_utf8_path(tmp_path):
    folder = tmp_path / os.fsdecode(b"data-\xff")
    folder.mkdir()
    write_mnist(folder, gz=True)
    x, y = load_data("mnist", "test", data_dir=folder)
    rng = np.random.RandomState(0)
    images, labels = rng.randint(0, 256, (5, 28, 28)), rng.randint(0, 10, 5)
    assert torch.equal(x, torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).float() / 255)
    assert y.tolist() == labels.tolist()


def test_limit_must_keep_something():
    refused("limit 0 keeps no examples", "digits", "test", limit=0)


def test_truncated_cifar_pickle(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        pickle.dump(batch, open(folder / name, "wb"))
    pickle.dump({"label_names": [str(i) for i in range(10)]}, open(folder / "batches.meta", "wb"))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    assert load_data("cifar10", "test", data_dir=tmp_path)[1].tolist() == [0, 1, 2, 3]
    data = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(data[: len(data) // 2])
    refused("cifar10 in .* is truncated/corrupt", "cifar10", "test", data_dir=tmp_path)
    pickle.dump({**batch, "labels": [0, 1, 2, 11]}, open(folder / "test_batch", "wb"))
    refused("label 11 \\(example 3\\)", "cifar10", "test", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------- weights


def bn_state() -> dict[str, torch.Tensor]:
    bn = torch.nn.BatchNorm2d(3)
    return {"conv.weight": torch.randn(3, 1, 3, 3), **{f"bn.{k}": v for k, v in bn.state_dict().items()}}


@pytest.mark.parametrize("name, value, match", [
    ("conv.weight", float("nan"), "NaN values in conv.weight"),
    ("bn.bias", float("inf"), "infinite values in bn.bias"),
    ("bn.running_var", -0.5, "negative BatchNorm variance in bn.running_var"),
])
def test_non_finite_weights_are_refused(tmp_path, name, value, match):
    state = bn_state()
    path = tmp_path / "model.safetensors"
    tensors.save_weights(path, state)
    assert all(torch.equal(v, state[k]) for k, v in tensors.load_weights(path).items())
    state[name].view(-1)[1] = value
    tensors.save_weights(path, state)
    with pytest.raises(UsageError, match=match) as e:
        tensors.load_weights(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_first_bad_tensor_is_named():
    state = {"a": torch.ones(2), "b": torch.tensor([float("nan")]), "c": torch.tensor([float("inf")])}
    with pytest.raises(UsageError, match="NaN values in b;"):
        tensors.check_finite_state(state, "x")
    tensors.check_finite_state({"n": torch.tensor(5), "w": torch.zeros(3)}, "x")  # integers are skipped


def test_weights_from_a_non_utf8_path_are_not_called_damaged(tmp_path):
    path = tmp_path / os.fsdecode(b"run-\xff") / "model.safetensors"
    path.parent.mkdir()
    tensors.save_weights(path, {"w": torch.arange(4.0)})
    assert torch.equal(tensors.load_weights(path)["w"], torch.arange(4.0))
