"""Folders of image files as data sets: Tiny-ImageNet in its official layout, and imagefolder:PATH for a user's
own images. Both are decoded once into a cache file beside the data, so a second run starts in seconds.

imagefolder:PATH reads torchvision's ImageFolder layout: PATH/train/CLASS/*.png (any depth, any of torchvision's
image extensions) for training, PATH/val/CLASS/... (else PATH/test/CLASS/...) for testing. Classes are the
training folder's class folders in sorted order (torchvision's `find_classes`); a class folder in val/test that
train lacks is refused, since the model would have no output for it. Images are converted to RGB (torchvision's
`default_loader`). With `image_size` each is resized (shorter side) and center-cropped to that square
(torchvision's Resize(N) + CenterCrop(N)); without it all must have one size.

tiny-imagenet reads tiny-imagenet-200/ as distributed: train/WNID/images/*.JPEG, wnids.txt, and
val/images/*.JPEG labelled by val/val_annotations.txt (its test/ has no labels, so `split="test"` is val, as
DM-Improves-AT and RobustBench evaluate); a val/ already sorted into WNID folders works too.

The cache, PATH/.iat-cache/SPLIT-SIZE.npz, records a sha256 of the file list (names, sizes, modification times),
the classes and the size: a changed folder decodes afresh. A folder that cannot be written is decoded each time.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from iat.data_info import DEFAULT_DATA_DIR, IMAGEFOLDER, DataInfo
from iat.errors import UsageError

log = logging.getLogger(__name__)

# torchvision's and timm's ImageNet statistics: a user's photos are closer to ImageNet than to any other set here
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_DIR = ".iat-cache"
CACHE_VERSION = 1  # bump when decoding changes: older caches are then decoded afresh
TINY = "tiny-imagenet-200"
LAYOUT_FIX = "(fix: one folder per class holding its images, as PATH/train/CLASS/IMAGE.png and PATH/val/CLASS/...)"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


# ------------------------------------------------------------------------------------------ layout


def _folder_root(name: str) -> Path:
    root = Path(name[len(IMAGEFOLDER):]).expanduser()
    if not name[len(IMAGEFOLDER):]:
        raise UsageError("--dataset imagefolder: needs a path: imagefolder:PATH, PATH holding train/ and val/")
    if not (root / "train").is_dir():
        raise UsageError(f"--dataset {name}: {root / 'train'} is not a directory {LAYOUT_FIX}")
    return root


def _classes(folder: Path) -> list[str]:
    from torchvision.datasets.folder import find_classes

    try:
        return find_classes(str(folder))[0]
    except FileNotFoundError:
        raise UsageError(f"{folder} holds no class folders, so no images {LAYOUT_FIX}") from None
    except OSError as e:
        raise UsageError(f"{folder} cannot be read ({e.strerror or e})") from None


def _listing(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, label) of every image under folder/CLASS/ (torchvision's `make_dataset`), in its order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:  # "Found no valid file for the classes a, b. Supported extensions are: ..."
        raise UsageError(f"{folder}: {_first_line(e)} (fix: put images in each class folder, or remove the "
                         "empty ones)") from None


def _test_folder(root: Path) -> Path:
    for sub in ("val", "test"):
        if (root / sub).is_dir():
            return root / sub
    raise UsageError(f"{root} has no val/ or test/ folder to test on {LAYOUT_FIX}")


def _check_subset(test_folder: Path, train_folder: Path, test_classes: list[str], train: dict[str, int]) -> None:
    extra = [c for c in test_classes if c not in train]
    if extra:
        raise UsageError(f"{test_folder / extra[0]} is a class folder that {train_folder} lacks: the model has no "
                         f"output for it (fix: add {train_folder / extra[0]} with training images, or remove it)")


def _imagefolder_files(name: str, split: str) -> tuple[Path, list[str], list[tuple[str, int]]]:
    root = _folder_root(name)
    classes = _classes(root / "train")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    if split == "train":
        return root, classes, _listing(root / "train", class_to_idx)
    folder = _test_folder(root)
    _check_subset(folder, root / "train", _classes(folder), class_to_idx)
    return root, classes, _listing(folder, {c: class_to_idx[c] for c in _classes(folder)})


def tiny_imagenet_root(data_dir: str | Path | None) -> Path:
    """tiny-imagenet-200/ in --data-dir (or --data-dir itself), else in ~/.cache/iat/data."""
    for base in ([Path(data_dir)] if data_dir is not None else []) + [DEFAULT_DATA_DIR]:
        for root in (base / TINY, base):
            if (root / "wnids.txt").is_file() and (root / "train").is_dir():
                return root
    where = data_dir if data_dir is not None else DEFAULT_DATA_DIR
    raise UsageError(f"tiny-imagenet not found in {where} (no {TINY}/wnids.txt and train/); unzip "
                     f"{TINY}.zip from http://cs231n.stanford.edu/{TINY}.zip there, or pass --data-dir DIR holding it")


def _tiny_imagenet_files(data_dir: str | Path | None, split: str) -> tuple[Path, list[str], list[tuple[str, int]]]:
    root = tiny_imagenet_root(data_dir)
    classes = _classes(root / "train")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    if split == "train":
        return root, classes, _listing(root / "train", class_to_idx)
    val = root / "val"
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():  # val/ already sorted into WNID folders
        _check_subset(val, root / "train", _classes(val), class_to_idx)
        return root, classes, _listing(val, {c: class_to_idx[c] for c in _classes(val)})
    files = []
    for n, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_to_idx:
            what = f"class {fields[1]!r}, which train/ lacks" if len(fields) >= 2 else "no tab-separated class"
            raise UsageError(f"{annotations} line {n}: {what} (fix: restore the file from {TINY}.zip)")
        path = val / "images" / fields[0]
        if not path.is_file():
            raise UsageError(f"{annotations} line {n} names {path}, which does not exist (fix: restore val/images)")
        files.append((str(path), class_to_idx[fields[1]]))
    if not files:
        raise UsageError(f"{annotations} lists no images (fix: restore it from {TINY}.zip)")
    return root, classes, files


# ----------------------------------------------------------------------------------------- decoding


def _decode(path: str, size: int | None) -> np.ndarray:
    """One image as (H, W, 3) bytes: RGB, resized (shorter side) and center-cropped to `size` if given."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # also decodes the whole file: a cut-off one fails here
            if size is not None:
                im = TF.center_crop(TF.resize(im, size), size)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UsageError(f"{path} is not a readable image ({type(e).__name__}: {_first_line(e)}) "
                         "(fix: replace or delete it)") from None


def _decode_all(files: list[tuple[str, int]], size: int | None) -> np.ndarray:
    """All images as (N, 3, H, W) bytes; without `size` they must share one size."""
    first = _decode(files[0][0], size)
    images = np.empty((len(files), 3, *first.shape[:2]), dtype=np.uint8)

    def put(i: int) -> None:
        img = first if i == 0 else _decode(files[i][0], size)
        if img.shape != first.shape:
            raise UsageError(f"{files[i][0]} is {img.shape[1]}x{img.shape[0]} but {files[0][0]} is "
                             f"{first.shape[1]}x{first.shape[0]}: the images differ in size (fix: pass --image-size "
                             "N to resize and center-crop every image to NxN)")
        images[i] = img.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes outside the GIL
        for _ in pool.map(put, range(len(files))):
            pass
    return images


def _cache_key(files: list[tuple[str, int]], classes: list[str], size: int | None) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} size={size} classes={','.join(classes)}\n".encode())
    for path, label in files:
        st = os.stat(path)
        h.update(f"{path}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_cache(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != key:
                return None
            return f["images"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError):  # absent, cut off or not ours: decode afresh
        return None


def _write_cache(path: Path, key: str, images: np.ndarray, labels: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), images=images, labels=labels)
        os.replace(tmp, path)  # atomic: a concurrent run reads the old cache or the new one, never half
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("could not write the decoded-image cache %s (%s); the next run decodes again", path,
                    e.strerror or e)


def load_folder(name: str, split: str, data_dir: str | Path | None,
                image_size: int | None) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """(images (N, 3, H, W) uint8, labels int64, source) of tiny-imagenet or imagefolder:PATH, through the cache."""
    if name == "tiny-imagenet":
        root, classes, files = _tiny_imagenet_files(data_dir, split)
    else:
        root, classes, files = _imagefolder_files(name, split)
    key = _cache_key(files, classes, image_size)
    cache = root / CACHE_DIR / f"{split}-{image_size or 'native'}.npz"
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached[0], cached[1], (str(root),) * 2
    log.info("decoding %d images of %s (%s) into %s, once", len(files), name, split, cache)
    images = _decode_all(files, image_size)
    labels = np.array([label for _, label in files], dtype=np.int64)
    _write_cache(cache, key, images, labels)
    return images, labels, (str(root),) * 2


def imagefolder_info(name: str, image_size: int | None) -> DataInfo:
    """imagefolder:PATH's DataInfo: RGB, PATH/train's classes, `image_size` or the first image's size; ImageNet's
    mean and std; random crops (padding 4) and flips, as DM-Improves-AT trains Tiny-ImageNet."""
    root = _folder_root(name)
    train = root / "train"
    return _imagefolder_info(name, str(train.resolve()), image_size, train.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _imagefolder_info(name: str, train: str, image_size: int | None, mtime_ns: int) -> DataInfo:
    # cached on train/'s modification time: validate and build_model ask often, and listing a big folder is not free
    classes = _classes(Path(train))
    if image_size is None:
        files = _listing(Path(train), {c: i for i, c in enumerate(classes)})
        h, w = _decode(files[0][0], None).shape[:2]
        if h != w:
            raise UsageError(f"{files[0][0]} is {w}x{h}, not square (fix: pass --image-size N to resize and "
                             "center-crop every image to NxN)")
        image_size = h
    return DataInfo(name, 3, image_size, len(classes), IMAGENET_MEAN, IMAGENET_STD, 4, True)
