"""Where the training images live (`--data-placement`), and how a batch of them reaches the training device.

The images are kept as the bytes they were read from (uint8, a quarter of float32's memory) and converted to
[0,1] floats a batch at a time (`iat.data.to_float`: the floats `load_data` gives, bit for bit).

- device: the whole set on the training device; a batch is gathered and converted there.
- host: in host memory, pinned on CUDA so that a batch's copy to the GPU is asynchronous; a background thread
  gathers the next batch while the current step runs (`prefetched`), so the step never waits on it.
- mmap: memory-mapped from disk, streamed as host is. The training set is written once as a .npy file into
  <data-dir>/mmap (keyed by its fingerprint); an --aux-data .npz stored uncompressed (np.savez) is mapped in
  place. Processes on one machine (torchrun) share the mapped pages instead of holding a copy each.
- auto (the default): device when the set takes at most DEVICE_SHARE of the device's free memory, else host
  when it takes at most HOST_SHARE of the host's available memory, else a one-line error naming mmap.

On the CPU, device and host are the same memory: host then differs only by its code path (the background
gather), whose cost benchmarks/data_path.py measures.
"""

from __future__ import annotations

import os
import queue
import shutil
import struct
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from iat.errors import UsageError

PLACEMENTS = ("auto", "device", "host", "mmap")
DEVICE_SHARE = 0.5  # of a GPU's free memory the images may take: model, activations and attack need the rest
HOST_SHARE = 0.8  # of the host's available memory (MemAvailable) the images may take
GB = 1e9

T = TypeVar("T")


def host_available() -> int:
    """Bytes of host memory available to a new allocation without swapping (Linux's MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def device_available(device: torch.device) -> int:
    """Free bytes on the training device; a CPU's is the host's."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return host_available()


def choose_placement(asked: str, nbytes: int, device: torch.device, mmap_dir: Path | None = None) -> str:
    """'device', 'host' or 'mmap' for `nbytes` of images and labels, as `asked` (see the module docstring);
    a one-line UsageError when the asked placement, or under auto every one, cannot hold them."""
    if asked not in PLACEMENTS:
        raise UsageError(f"--data-placement {asked!r}: choose one of {', '.join(PLACEMENTS)}")
    host = host_available()
    device_limit = DEVICE_SHARE * device_available(device) if device.type == "cuda" else HOST_SHARE * host
    host_limit = HOST_SHARE * host
    size = f"the training images take {_size(nbytes)} as bytes"
    if asked == "device" and nbytes > device_limit:
        raise UsageError(f"--data-placement device: {size}, more than the {_size(device_limit)} the {device.type} "
                         f"can spare ({_share(device)}); use --data-placement host or mmap")
    if asked == "host" and nbytes > host_limit:
        raise UsageError(f"--data-placement host: {size}, more than the {_size(host_limit)} of host memory it "
                         f"can spare ({HOST_SHARE:.0%} of the {_size(host)} available); use --data-placement mmap")
    if asked == "mmap" and mmap_dir is not None:
        mmap_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(mmap_dir).free
        if nbytes > free:
            raise UsageError(f"--data-placement mmap: {size}, more than the {_size(free)} free on the disk of "
                             f"{mmap_dir}; free space there or pass --data-dir on a larger disk")
    if asked != "auto":
        return asked
    if nbytes <= device_limit:
        return "device"
    if nbytes <= host_limit:
        return "host"
    raise UsageError(f"{size}: neither the {device.type} ({_size(device_limit)} to spare) nor host memory "
                     f"({_size(host_limit)} to spare) holds them; add --data-placement mmap to read them from "
                     "disk, or train on fewer (--train-size)")


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} bytes"


def _share(device: torch.device) -> str:
    return (f"{DEVICE_SHARE:.0%} of its free memory" if device.type == "cuda"
            else f"{HOST_SHARE:.0%} of the host's available memory")


def place(x: torch.Tensor, placement: str, device: torch.device) -> torch.Tensor:
    """`x` (on the CPU) where `placement` keeps it: the training device, or pinned host memory (CUDA only:
    pinning is what lets a batch's copy overlap the step). An mmap tensor stays as it is."""
    if placement == "device":
        return x.to(device)
    if placement == "host" and device.type == "cuda":
        return x.pin_memory()
    return x


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; from the CPU to a GPU through pinned memory, so the copy does not wait for the GPU."""
    if t.device.type == "cpu" and device.type == "cuda":
        return (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)
    return t.to(device)


def mmap_file(x: torch.Tensor, folder: Path, key: str) -> torch.Tensor:
    """`x` written once to folder/train-KEY.npy (atomically: a killed write leaves no half file) and mapped
    copy-on-write: the pages come from disk as they are read, and nothing is ever written back."""
    path = folder / f"train-{key[:16]}-{'x'.join(map(str, x.shape))}.npy"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
            np.save(f, x.numpy(), allow_pickle=False)
        tmp.replace(path)
    return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))


def npz_member_header(path: Path, name: str) -> tuple[tuple[int, ...], np.dtype, int | None] | None:
    """(shape, dtype, offset) of array `name` in the .npz `path`, read from its header alone; offset is where its
    data starts in the file when it is stored uncompressed (np.savez), else None. None if unreadable (the
    loader then says why, in one line)."""
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(f"{name}.npy")
            with z.open(info) as member:
                version = np.lib.format.read_magic(member)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(member)
                header = member.tell()
        if fortran or dtype.hasobject:
            return None
        offset = None
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as f:  # the local file header: 30 bytes, then the name and an extra field
                f.seek(info.header_offset)
                local = f.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_len + extra_len + header
        return tuple(shape), dtype, offset
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, struct.error):
        return None


def map_npz_member(path: Path, name: str) -> np.ndarray:
    """Array `name` of the .npz `path`, memory-mapped in place (copy-on-write); a one-line UsageError when it is
    stored compressed, which cannot be mapped."""
    header = npz_member_header(path, name)
    if header is None:
        raise UsageError(f"--aux-data {path}: its {name!r} array cannot be read for mapping; check the file with "
                         "--data-placement host")
    shape, dtype, offset = header
    if offset is None:
        raise UsageError(f"--data-placement mmap: --aux-data {path} is compressed (np.savez_compressed), which "
                         "cannot be memory-mapped; save it with np.savez, or use --data-placement host")
    return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)


def prefetched(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """`items`, produced `depth` ahead in a background thread: the thread gathers the next batch (torch's
    gathers release the GIL) while the caller's step runs. Its exceptions are raised here; closing this
    generator early (a signal stops the epoch) stops the thread."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as e:  # handed to the consumer, which raises it with its traceback
            slots.put((done, e))

    thread = threading.Thread(target=produce, name="iat-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                slots.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
