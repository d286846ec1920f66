"""Data sets as tensors: images float in [0,1], shape (N, C, H, W); labels int64.

Small data sets live whole on the training device and are augmented a batch at a time
(`augment`), which on a CPU or GPU is far faster than per-sample Python transforms.

Where each data set comes from:
- digits: scikit-learn's 8x8 digits (ships with scikit-learn; no download), a fixed 1297/500 split.
- fashion-mnist: `--data-dir`, else Debian's package dataset-fashion-mnist
  (/usr/share/datasets/fashion-mnist), else torchvision's download.
- mnist: `--data-dir` (torchvision's layout or the raw idx files), else torchvision's download.
- cifar10, cifar100, svhn (with `svhn_extra`, SVHN's 531,131-image extra split added to its training split):
  torchvision's data sets in `--data-dir` (default ~/.cache/iat/data); downloaded only when you ask
  (`download=True`).
- tiny-imagenet (the official folder layout) and imagefolder:PATH (a user's class folders): iat.data_folders.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from iat.data_info import DEFAULT_DATA_DIR, IMAGEFOLDER, DataInfo
from iat.errors import UsageError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")


DATASETS: dict[str, DataInfo] = {
    d.name: d
    for d in [
        DataInfo("digits", 1, 8, 10, (0.3,), (0.38,), 0, False),
        DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,), 0, False),
        DataInfo("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,), 0, False),
        # Fashion-MNIST zero-padded to 32x32 (2 pixels a side): CIFAR-shaped inputs for the convolutional
        # nets, for GPU checks and benchmarks without a download (the padding is black, like the background)
        DataInfo("fashion-mnist-32", 1, 32, 10, (0.2190,), (0.3318,), 0, False),
        DataInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True),
        DataInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), 4, False),
        # CIFAR-100's training-set statistics; crop and flip as for CIFAR-10 (DM-Improves-AT, TRADES)
        DataInfo("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4, True),
        # 64x64 (--image-size resizes); RandomCrop(64, padding=4) and flips, as DM-Improves-AT trains it
        DataInfo("tiny-imagenet", 3, 64, 200, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 4, True),
    ]
}
RESIZABLE = ("tiny-imagenet",)  # fixed-name data sets that --image-size resizes (imagefolder:PATH too)


def dataset_names() -> list[str]:
    return list(DATASETS)


def dataset_choices() -> list[str]:
    """The names `--dataset` takes: the data sets above and the pattern imagefolder:PATH."""
    return [*DATASETS, IMAGEFOLDER + "PATH"]


def dataset_info(name: str, image_size: int | None = None) -> DataInfo:
    """What a model needs to know of data set `name`; `image_size` (--image-size) resizes the folder data sets.

    For imagefolder:PATH this reads PATH/train's class folders (and, without `image_size`, one image's size).
    """
    if isinstance(name, str) and name.startswith(IMAGEFOLDER):
        from iat.data_folders import imagefolder_info

        return imagefolder_info(name, image_size)
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}, or imagefolder:PATH "
                         "for your own images")
    info = DATASETS[name]
    if image_size is not None and name in RESIZABLE:
        info = dataclasses.replace(info, image_size=image_size)
    return info


# ---------------------------------------------------------------------------------------- readers


IDX_FIX = "(fix: replace it with a good copy, or delete it and add --download to `iat train`)"


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An MNIST-style idx file of `ndim` dimensions (gzipped or not) as a read-only numpy array,
    cached per process. A damaged file raises UsageError saying which way it is damaged."""
    stat = path.stat()
    return _read_idx_cached(path.resolve(), ndim, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: Path, ndim: int, mtime_ns: int, size: int) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # a cut-off or damaged gzip stream
        raise UsageError(f"{path} is truncated/corrupt ({_first_line(e)}) {IDX_FIX}") from None
    except OSError as e:
        raise UsageError(f"{path} cannot be read ({e.strerror or e})") from None
    return parse_idx(raw, path, ndim)


def parse_idx(raw: bytes, path: Path | str, ndim: int | None = None) -> np.ndarray:
    """The bytes of an unsigned-byte idx file as a read-only array; `ndim` is the dimension count
    expected (None: any). Raises UsageError: a wrong header and a cut-off file are told apart."""
    if len(raw) < 4:
        raise UsageError(f"{path} is truncated/corrupt ({len(raw)} bytes, shorter than an idx header) {IDX_FIX}")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise UsageError(f"{path} has a wrong idx header (starts 0x{raw[:4].hex()}, not 0x000008NN of an "
                         f"unsigned-byte idx file): not an idx file, or the wrong one {IDX_FIX}")
    if raw[3] == 0 or (ndim is not None and raw[3] != ndim):
        want = f"{ndim}" if ndim is not None else "at least 1"
        raise UsageError(f"{path} has a wrong idx header ({raw[3]} dimensions, expected {want}): "
                         f"the wrong file? {IDX_FIX}")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise UsageError(f"{path} is truncated/corrupt (the file ends inside its header) {IDX_FIX}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    expected, found = math.prod(dims), len(raw) - header
    if found < expected:
        raise UsageError(f"{path} is truncated/corrupt (its header promises {expected} values of shape "
                         f"{tuple(dims)}, the file holds {found}) {IDX_FIX}")
    if found > expected:
        raise UsageError(f"{path} has a wrong idx header or is corrupt ({found - expected} bytes more than the "
                         f"header's shape {tuple(dims)} holds) {IDX_FIX}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:120]


def _find_idx(folder: Path, stem: str) -> Path | None:
    for sub in ("", "raw", "FashionMNIST/raw", "MNIST/raw"):
        for suffix in ("", ".gz"):
            p = folder / sub / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _idx_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The split's (images, labels) idx files in `folder`, or None if either is missing."""
    prefix = "train" if split == "train" else "t10k"
    images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    return None if images is None or labels is None else (images, labels)


def _idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, str]] | None:
    files = _idx_files(folder, split)
    if files is None:
        return None
    images, labels = files
    return _read_idx(images, 3), _read_idx(labels, 1), (str(images), str(labels))


def _mnist_folders(name: str, data_dir: Path | None) -> list[Path]:
    """Where MNIST or Fashion-MNIST's idx files are looked for, in order."""
    folders = [Path(data_dir)] if data_dir is not None else []
    if name == "fashion-mnist" and data_dir is None:
        folders.append(DEBIAN_FASHION_MNIST)
    return folders + [DEFAULT_DATA_DIR]


def found_locally(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether `load_data(name, ...)` finds MNIST or Fashion-MNIST (both splits) without a download:
    in `data_dir`, Debian's package (Fashion-MNIST) or ~/.cache/iat/data, where `make data` puts them."""
    base = name.removesuffix("-32")
    return all(any(_idx_files(folder, split) for folder in _mnist_folders(base, data_dir))
               for split in ("train", "test"))


def _load_mnist_like(name: str, split: str, data_dir: Path | None, download: bool):
    folders = _mnist_folders(name, data_dir)
    for folder in folders:
        pair = _idx_pair(Path(folder), split)
        if pair is not None:
            return pair
    if download:
        import torchvision

        cls = torchvision.datasets.FashionMNIST if name == "fashion-mnist" else torchvision.datasets.MNIST
        root = data_dir or DEFAULT_DATA_DIR
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as e:  # no network, a proxy, a full disk: all end the same way for the user
            raise UsageError(f"{name}: download into {root} failed ({type(e).__name__}); {_how_to_get(name)}") from None
        return ds.data.numpy(), ds.targets.numpy(), (str(root),) * 2
    searched = ", ".join(str(f) for f in folders)
    raise UsageError(f"{name} not found (looked in {searched}); {_how_to_get(name)}")


def _how_to_get(name: str) -> str:
    if name == "fashion-mnist":
        return ("install it with `apt-get install dataset-fashion-mnist`, pass --data-dir DIR holding the idx "
                "files, or add --download (iat train)")
    if name == "mnist":
        return "pass --data-dir DIR holding MNIST's idx files, or add --download (iat train)"
    return "add --download to `iat train` (torchvision fetches it into --data-dir DIR), or pass --data-dir DIR"


def _load_torchvision(name: str, split: str, data_dir: Path | None, download: bool, svhn_extra: bool = False):
    import torchvision

    root = Path(data_dir or DEFAULT_DATA_DIR)
    try:
        if name in ("cifar10", "cifar100"):
            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            ds = cls(str(root), train=split == "train", download=download)
            images, labels = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)  # (N,H,W,C) -> (N,C,H,W)
        else:
            parts = [split, "extra"] if svhn_extra and split == "train" else [split]
            sets = [torchvision.datasets.SVHN(str(root), split=s, download=download) for s in parts]
            images = np.concatenate([ds.data for ds in sets]) if len(sets) > 1 else sets[0].data
            labels = np.concatenate([np.asarray(ds.labels) for ds in sets])
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise UsageError(f"{name} not found or corrupted in {root} ({_first_line(e)}); {_how_to_get(name)}") from None
    except Exception as e:  # a cut-off pickle or .mat file: EOFError, UnpicklingError, ValueError, ...
        raise UsageError(f"{name} in {root} is truncated/corrupt ({type(e).__name__}: {_first_line(e)}) "
                         f"(fix: delete its files and add --download to `iat train`)") from None
    return images, labels, (str(root),) * 2


def _load_digits(split: str):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)  # 0..16 -> 0..255
    order = np.random.RandomState(0).permutation(len(images))
    idx = order[:1297] if split == "train" else order[1297:]
    return images[idx], digits.target[idx], ("scikit-learn's digits",) * 2


def load_data(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
    *,
    image_size: int | None = None,
    svhn_extra: bool = False,
    as_bytes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as a float tensor in [0,1] of shape (N, C, H, W) and int64 labels of shape (N,); with `as_bytes`,
    the images as read, uint8 0..255 (a quarter of the memory: `to_float` converts a batch, to the same floats).

    `limit` keeps the first N examples (quick runs and benchmarks); `image_size` resizes and center-crops the
    folder data sets (tiny-imagenet, imagefolder:PATH); `svhn_extra` adds SVHN's extra split to its training split.
    """
    info = dataset_info(name, image_size)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    data_dir = Path(data_dir) if data_dir is not None else None
    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir} is not a directory")
    if limit is not None and limit < 1:
        raise UsageError(f"limit {limit} keeps no examples; give a positive number (or None for all)")
    if name == "digits":
        images, labels, source = _load_digits(split)
    elif name in ("mnist", "fashion-mnist"):
        images, labels, source = _load_mnist_like(name, split, data_dir, download)
    elif name == "fashion-mnist-32":
        images, labels, source = _load_mnist_like("fashion-mnist", split, data_dir, download)
        images = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2)))
    elif name == "tiny-imagenet" or name.startswith(IMAGEFOLDER):
        from iat.data_folders import load_folder

        images, labels, source = load_folder(name, split, data_dir, image_size)
    else:
        images, labels, source = _load_torchvision(name, split, data_dir, download, svhn_extra)
    images, labels = np.asarray(images), np.asarray(labels)
    check_arrays(info, split, images, labels, source)
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    y = torch.from_numpy(labels.astype(np.int64))
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return (x, y) if as_bytes else (to_float(x), y)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images 0..255 as floats in [0,1], as `load_data` converts them: stored bytes and a batch converted on
    use train on the same floats, bit for bit. Floats pass through."""
    return x if x.is_floating_point() else x.float().div_(255)


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of images in [0,1] (as the bytes they were read from) and labels: which data a run trained on,
    whatever directory it came from, so a resumed run can tell that --data-dir now points at other data."""
    h = hashlib.sha256()
    if x.dtype == torch.uint8:  # the bytes themselves (x/255*255 rounds back to them)
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()
    h.update(x.detach().cpu().mul(255).round_().to(torch.uint8).contiguous().numpy().tobytes())
    h.update(y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def check_arrays(info: DataInfo, split: str, images: np.ndarray, labels: np.ndarray,
                 source: tuple[str, str]) -> None:
    """Refuse a data set that would train or score nonsense: no images, counts or shapes that do not
    match, pixel values that are not bytes, labels outside 0..num_classes-1.

    `source` names where the images and the labels came from (files or folders), for the message.
    """
    where = f"{info.name} {split} data ({source[0]})"
    fix = "(fix: replace the files with good copies, or pass --data-dir DIR holding them)"
    size = (info.image_size, info.image_size)
    shape = tuple(images.shape)
    ok = (shape[1:] == size if info.in_channels == 1 and images.ndim == 3
          else images.ndim == 4 and shape[1:] == (info.in_channels, *size))
    if not ok:
        raise UsageError(f"{where} holds images of shape {shape[1:]}; {info.name} images are "
                         f"{info.in_channels}x{info.image_size}x{info.image_size} {fix}")
    if images.dtype != np.uint8:
        raise UsageError(f"{where} holds {images.dtype} pixels, not bytes (0..255) {fix}")
    if len(images) == 0:
        raise UsageError(f"{where} holds no images {fix}")
    labels_where = where if source[1] == source[0] else f"{info.name} {split} labels ({source[1]})"
    if labels.ndim != 1 or len(labels) != len(images):
        raise UsageError(f"{labels_where}: {len(images)} images but labels of shape {tuple(labels.shape)}; "
                         f"the files do not belong together {fix}")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise UsageError(f"{labels_where} holds {labels.dtype} labels, not class numbers {fix}")
    bad = np.flatnonzero((labels < 0) | (labels >= info.num_classes) | (labels != np.floor(labels))
                         if np.issubdtype(labels.dtype, np.floating) else
                         (labels < 0) | (labels >= info.num_classes))
    if len(bad):
        i = int(bad[0])
        raise UsageError(f"{labels_where}: label {labels[i].item()!r} (example {i}) is outside the {info.num_classes} "
                         f"classes 0..{info.num_classes - 1} {fix}")


# ----------------------------------------------------------------------------------- augmentation


def augment(x: torch.Tensor, crop_pad: int = 0, flip: bool = False) -> torch.Tensor:
    """Random crop after zero padding by `crop_pad`, and random horizontal flips, for a whole batch."""
    n, _, h, w = x.shape
    if crop_pad > 0:
        padded = torch.nn.functional.pad(x, (crop_pad,) * 4)  # (N, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * crop_pad + 1, (n, 1), device=x.device)
        dx = torch.randint(0, 2 * crop_pad + 1, (n, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chans, rows, cols]  # (N, C, H, W)
    if flip:
        flipped = torch.rand(n, device=x.device) < 0.5
        x = torch.where(flipped.view(n, 1, 1, 1), x.flip(3), x)
    return x
