"""Property-based tests: whatever bytes an idx file holds, loading it gives the array its header
describes or a one-line UsageError, never another exception.

Headers are generated near the valid ones (random magic, dimension counts, sizes, cut-off or padded
data, gzip streams cut anywhere), where a reader's mistakes live.
"""

from __future__ import annotations

import gzip
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iat.data import load_data, parse_idx
from iat.errors import UsageError

# Small enough for the whole file to run in a few seconds on a busy machine; no example database.
FAST = settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def idx_files(draw, max_ndim: int = 4, max_dim: int = 6):
    """(bytes, the array they hold or None if they are not a valid idx file)."""
    ndim = draw(st.integers(0, max_ndim))
    dims = draw(st.lists(st.integers(0, max_dim), min_size=ndim, max_size=ndim))
    magic = draw(st.one_of(st.just(b"\0\0\x08"), st.binary(min_size=3, max_size=3)))
    values = np.frombuffer(draw(st.binary(min_size=math.prod(dims), max_size=math.prod(dims))), np.uint8)
    data = magic + bytes([ndim]) + b"".join(struct.pack(">I", d) for d in dims) + values.tobytes()
    change = draw(st.sampled_from(["none", "cut", "pad"]))
    if change == "cut":
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    elif change == "pad":
        data += draw(st.binary(min_size=1, max_size=8))
    valid = magic == b"\0\0\x08" and ndim > 0 and change == "none"
    return data, values.reshape(dims) if valid else None


def one_line_error(e: UsageError) -> None:
    assert str(e) and "\n" not in str(e)


@FAST
@given(idx_files())
def test_parse_idx_returns_the_array_or_one_line(file):
    data, expected = file
    try:
        array = parse_idx(data, "f")
    except UsageError as e:
        one_line_error(e)
        assert expected is None
        return
    assert expected is not None and array.shape == expected.shape and np.array_equal(array, expected)


@FAST
@given(st.binary(max_size=64))
def test_parse_idx_of_any_bytes(data):
    try:
        parse_idx(data, "f", ndim=3)
    except UsageError as e:
        one_line_error(e)


@st.composite
def mnist_folders(draw):
    """Image and label files near MNIST's: sizes and counts sometimes wrong, labels sometimes out of
    range, files sometimes gzipped and cut short."""
    n = draw(st.integers(0, 3))
    side = draw(st.sampled_from([28, 28, 28, 27]))
    n_labels = draw(st.sampled_from([n, n, n + 1]))
    images = np.zeros((n, side, side), np.uint8)
    labels = np.array(draw(st.lists(st.integers(0, 12), min_size=n_labels, max_size=n_labels)), np.uint8)
    files, cut = {}, False
    for stem, array in [("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)]:
        data = b"\0\0\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + \
            array.tobytes()
        if draw(st.booleans()):
            data = gzip.compress(data, mtime=0)
            stem += ".gz"
        if draw(st.integers(0, 3)) == 0:
            data, cut = data[: draw(st.integers(0, len(data) - 1))], True
        files[stem] = data
    valid = n > 0 and side == 28 and n_labels == n and bool(all(labels < 10)) and not cut
    return files, images, labels, valid


@FAST
@given(mnist_folders())
def test_load_data_loads_or_refuses_in_one_line(folder):
    files, images, labels, valid = folder
    with tempfile.TemporaryDirectory() as tmp:  # a new path for each example: no cached reads
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        try:
            x, y = load_data("mnist", "test", data_dir=tmp)
        except UsageError as e:
            one_line_error(e)
            assert not valid, str(e)
            return
    assert valid
    assert x.shape == (len(images), 1, 28, 28) and y.tolist() == labels.tolist()


@FAST
@given(st.data())
def test_a_damaged_gzip_loads_unchanged_or_refuses_in_one_line(data):
    images, labels = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28), np.array([3, 7], np.uint8)
    files = {}
    for stem, array in [("t10k-images-idx3-ubyte.gz", images), ("t10k-labels-idx1-ubyte.gz", labels)]:
        raw = b"\0\0\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + \
            array.tobytes()
        files[stem] = bytearray(gzip.compress(raw, mtime=0))
    damaged = files[data.draw(st.sampled_from(sorted(files)))]
    at = data.draw(st.integers(0, len(damaged) - 1))
    damaged[at] ^= data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(bytes(content))
        try:
            x, y = load_data("mnist", "test", data_dir=tmp)
        except UsageError as e:
            one_line_error(e)
            return
    assert torch.equal(x, torch.from_numpy(images).unsqueeze(1).float() / 255) and y.tolist() == [3, 7]
