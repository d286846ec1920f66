"""Generated or extra training data (`--aux-data FILE.npz`), drawn into every batch as Gowal et al. (2021),
Rebuffi et al. (2021) and Wang et al. (2023, DM-Improves-AT) train.

The file is in the format of the published DDPM/EDM sets (DM-Improves-AT's 1m.npz ... 20m.npz): `image`, uint8
of shape (N, H, W, C), and `label`, integers in 0..classes-1. The images are kept as bytes and converted to
[0,1] floats a batch at a time (1M CIFAR images: 3 GB, not 12).

An epoch, as DM-Improves-AT's SemiSupervisedSampler defines it: ceil(n_train / batch_size) batches, n_train the
real training set; each batch holds floor(batch_size x fraction) auxiliary examples drawn uniformly with
replacement and the rest real ones, taken in order from the epoch's permutation of the real set (an epoch
therefore sees 1 - fraction of the real images). The auxiliary examples are augmented as the real ones.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from iat.data import DEFAULT_DATA_DIR, DataInfo, augment, to_float
from iat.data_placement import map_npz_member, npz_member_header, place, to_device
from iat.errors import UsageError

HASH_CHUNK = 65536  # images hashed at a time
DEFAULT_FRACTION = 0.7  # Gowal et al., Rebuffi et al. and DM-Improves-AT's unsup_fraction
EPOCH_DEFINITION = ("ceil(n_train / batch_size) batches of floor(batch_size x aux_fraction) auxiliary examples "
                    "(uniform, with replacement) and the rest real ones (DM-Improves-AT's SemiSupervisedSampler)")
FORMAT_FIX = ("(fix: save it as np.savez(FILE, image=uint8 array N x H x W x C, label=integer array N), the "
              "format of the published DDPM/EDM sets)")


def resolve_aux_path(path: str, data_dir: str | Path | None) -> Path:
    """`path` as given (absolute, or relative to the working directory), else inside --data-dir or
    ~/.cache/iat/data, where the data sets live."""
    candidates = [Path(path).expanduser()]
    if not Path(path).is_absolute():
        candidates += [Path(d) / path for d in ([data_dir] if data_dir else []) + [DEFAULT_DATA_DIR]]
    for p in candidates:
        if p.is_file():
            return p
    where = ", ".join(str(p) for p in candidates)
    raise UsageError(f"--aux-data {path}: no such file (looked in {where}); give the path of the .npz file")


def aux_per_batch(batch_size: int, fraction: float) -> int:
    """How many of a batch's examples are auxiliary: floor(batch_size x fraction), as DM-Improves-AT."""
    return int(batch_size * fraction)


@dataclass
class AuxData:
    """The auxiliary examples as bytes, where --data-placement keeps them (iat.data_placement), and how many of
    each batch they fill."""

    x: torch.Tensor  # uint8 (N, H, W, C), as in the file
    y: torch.Tensor  # int64 (N,)
    fraction: float
    path: str
    sha256: str  # of the images and labels: a resumed run refuses another file

    @classmethod
    def load(cls, path: str, fraction: float, info: DataInfo, data_dir: str | Path | None,
             device: torch.device, placement: str = "device") -> AuxData:
        """The file's examples on the training `device`, or in host memory or mapped from the file (`placement`)."""
        file = resolve_aux_path(path, data_dir)
        images, labels = read_npz(file, info, mapped=placement == "mmap")
        h = hashlib.sha256()
        for i in range(0, len(images), HASH_CHUNK):  # a chunk at a time: a mapped file is never read whole into memory
            h.update(np.ascontiguousarray(images[i : i + HASH_CHUNK]))
        h.update(labels.astype(np.int64).tobytes())
        x = torch.from_numpy(images if images.ndim == 4 else images[..., None])  # (N, H, W) -> (N, H, W, 1)
        y = torch.from_numpy(labels.astype(np.int64))
        return cls(place(x, placement, device), place(y, placement, device), fraction, str(file), h.hexdigest())

    def __len__(self) -> int:
        return len(self.x)

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Images `idx` as floats in [0,1], (n, C, H, W)."""
        return self.x[idx].permute(0, 3, 1, 2).contiguous().float().div_(255)

    def batches(self, x: torch.Tensor, y: torch.Tensor, info: DataInfo, order: torch.Tensor, start: int,
                batch_size: int, shard: Callable[[torch.Tensor], torch.Tensor] | None = None,
                device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """The augmented (x, y, share) batches of an epoch from batch `start` on: real examples (`x`, `y`, bytes or
        floats) in `order`, auxiliary ones drawn with replacement; with `shard` (torchrun), this rank's part of each;
        on `device` (default: x's), where the images are converted to floats and augmented.

        Kept in host memory or mapped (--data-placement host or mmap), the auxiliary examples are drawn from the
        CPU's generator (on a GPU, that of the device holding them) and gathered by the caller's thread: each draw
        must follow the step before it, so it cannot be gathered ahead.

        The draws come from torch's RNG right before their step, as augmentation's: a checkpoint between two
        steps holds the state the next batch draws from, so a resumed run draws the same batches.
        """
        n = len(x)
        n_aux = aux_per_batch(batch_size, self.fraction)
        n_real = batch_size - n_aux
        # The auxiliary slots are spread evenly over the global batch, so that each rank's contiguous part of it
        # (torchrun) holds its share of both kinds: k_real real examples from real slot r0 on, k_aux drawn ones
        # from auxiliary slot a0 on. Every rank draws all n_aux indices, so their generators stay in step.
        slots = torch.arange(batch_size)
        is_aux = (slots + 1) * n_aux // batch_size > slots * n_aux // batch_size
        mine = shard(slots) if shard is not None else slots
        a0, k_aux = int(is_aux[: int(mine[0])].sum()), int(is_aux[mine].sum())
        r0, k_real = int(mine[0]) - a0, len(mine) - k_aux
        offsets = torch.arange(r0, r0 + k_real, device=order.device)
        dev = device or x.device
        for step in range(start, steps_per_epoch(n, batch_size)):
            real = order[(step * n_real + offsets) % n]  # past the permutation's end (a tiny fraction): from its start
            drawn = torch.randint(len(self), (n_aux,), device=self.x.device)[a0 : a0 + k_aux]
            own = self.x[drawn].permute(0, 3, 1, 2).contiguous()  # (n, H, W, C) -> (n, C, H, W)
            batch = torch.cat([to_float(to_device(x[real], dev)), to_float(to_device(own, dev))])
            labels = torch.cat([to_device(y[real], dev), to_device(self.y[drawn], dev)])
            yield augment(batch, info.crop_pad, info.flip), labels, len(batch) / batch_size


def steps_per_epoch(n: int, batch_size: int) -> int:
    """ceil(n / batch_size): every batch is full (the auxiliary examples fill it), none is left over."""
    return -(-n // batch_size)


def image_bytes(path: str, data_dir: str | Path | None) -> int:
    """Bytes the images of auxiliary-data file `path` take, from its header alone (0 if unreadable: loading then
    says why in one line)."""
    header = npz_member_header(resolve_aux_path(path, data_dir), "image")
    return 0 if header is None else int(np.prod(header[0])) * header[1].itemsize


def read_npz(path: Path, info: DataInfo, mapped: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`image` and `label` of an auxiliary-data file, checked against the data set `info`; one-line errors.
    `mapped`: the images memory-mapped from the file (iat.data_placement), not read into memory."""
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UsageError(f"--aux-data {path} is not a readable .npz file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:100] if str(e) else ''}) {FORMAT_FIX}") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise UsageError(f"--aux-data {path} is a single .npy array, not an .npz holding image and label {FORMAT_FIX}")
    with f:
        missing = [k for k in ("image", "label") if k not in f.files]
        if missing:
            held = ", ".join(f.files) or "none"
            raise UsageError(f"--aux-data {path} has no {missing[0]!r} array (it holds: {held}) {FORMAT_FIX}")
        try:
            images = None if mapped else f["image"]
            labels = f["label"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise UsageError(f"--aux-data {path} is truncated/corrupt ({type(e).__name__}) {FORMAT_FIX}") from None
    if images is None:  # mapped: outside the try above, whose catch would hide why it cannot be
        images = map_npz_member(path, "image")
    c, s = info.in_channels, info.image_size
    want = f"N x {s} x {s} x {c}" + (f" (or N x {s} x {s})" if c == 1 else "")
    if images.dtype != np.uint8:
        raise UsageError(f"--aux-data {path}: image is {images.dtype}, not uint8 (0..255) {FORMAT_FIX}")
    shape_ok = (images.ndim == 4 and images.shape[1:] == (s, s, c)) or (c == 1 and images.ndim == 3
                                                                        and images.shape[1:] == (s, s))
    if not shape_ok:
        raise UsageError(f"--aux-data {path}: image has shape {images.shape}; {info.name} needs {want} "
                         f"(height x width x channels last) {FORMAT_FIX}")
    if len(images) == 0:
        raise UsageError(f"--aux-data {path} holds no images {FORMAT_FIX}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"--aux-data {path}: label is {labels.dtype} of shape {labels.shape}; it must be one integer "
                         f"class per image ({len(images)}) {FORMAT_FIX}")
    bad = np.flatnonzero((labels < 0) | (labels >= info.num_classes))
    if len(bad):
        i = int(bad[0])
        raise UsageError(f"--aux-data {path}: label {labels[i]} (example {i}) is outside the {info.num_classes} "
                         f"classes 0..{info.num_classes - 1} of {info.name} {FORMAT_FIX}")
    return images, labels
