"""One run on many processes: torchrun's environment, the process group, and the few collectives that
training and evaluation need.

Under `torchrun --nproc_per_node N -m iat ...` each process reads its place from the variables torchrun
sets (RANK, WORLD_SIZE, LOCAL_RANK); `process_group(device)` joins them: NCCL with one GPU per local
rank on CUDA, gloo on the CPU. Without torchrun the world is one process (`SINGLE`) and every method
here returns its input at once, so a one-process run executes exactly the code it did before.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from iat.errors import UsageError

T = TypeVar("T")

# How long a collective waits for the other ranks: a rank that died or raised alone makes the others
# fail after this instead of hanging forever (torchrun also stops them when one worker exits).
TIMEOUT = timedelta(seconds=float(os.environ.get("IAT_DIST_TIMEOUT_S", "600")))

_control: dist.ProcessGroup | None = None  # a gloo group for CPU-side flags when the main one is NCCL


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run: `rank` of `size`, `local_rank` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (parts differ in size by one at most)."""
        return batch if self.size == 1 else batch.tensor_split(self.size)[self.rank]

    def owns(self, k: int) -> bool:
        """Whether the k-th unit of round-robin work (an evaluation batch) is this rank's."""
        return k % self.size == self.rank

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model for the weight update: DDP across the ranks (gradients averaged), else the model itself.

        broadcast_buffers=False: IAT runs two forward passes before one backward, and DDP's buffer
        broadcast before the second one modifies BatchNorm statistics the first one's graph still needs.
        """
        if self.size == 1:
            return model
        device = next(model.parameters()).device
        ids = [device] if device.type == "cuda" else None
        with warnings.catch_warnings():  # torch suggests forward_sync_buffers, which syncs buffers at init: a
            warnings.simplefilter("ignore", FutureWarning)  # resumed rank's own BatchNorm statistics would be lost
            return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() run on rank 0 alone, its result (or its exception) on every rank.

        So a check or a write by rank 0 that fails stops every rank with the same error instead of
        leaving them waiting; an exception re-raised on the other ranks gets `from_main = True` so
        that only rank 0 prints it.
        """
        if self.size == 1:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = (True, fn())
            except Exception as e:  # noqa: BLE001 - re-raised on every rank below
                box[0] = (False, e)
        dist.broadcast_object_list(box, src=0, group=_control)
        ok, value = box[0]
        if ok:
            return value
        if not self.is_main:
            value.from_main = True
        raise value

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's `obj` in rank order on rank 0; None on the others."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=_control)
        return out

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's `obj` in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=_control)
        return out

    def agree_stop(self, signum: int | None) -> int | None:
        """The signal any rank has received (the largest number), so that all stop after the same step."""
        if self.size == 1:
            return signum
        flag = torch.tensor([signum or 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_control)
        return int(flag.item()) or None

    def digests(self, model: nn.Module) -> list[str]:
        """Every rank's sha256 of the model's parameters, in rank order (DDP keeps them equal)."""
        h = hashlib.sha256()
        for p in model.parameters():
            # flatten(): a channels_last 1x1 kernel counts as contiguous but keeps a last stride > 1
            h.update(p.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
        if self.size == 1:
            return [h.hexdigest()]
        out = [None] * self.size
        dist.all_gather_object(out, h.hexdigest(), group=_control)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """The sums over the ranks (float64)."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=_control)
        return t.tolist()

    def all_and(self, mask: torch.Tensor) -> torch.Tensor:
        """A bool mask true where it is true on every rank (each rank cleared the entries it attacked)."""
        if self.size == 1:
            return mask
        t = mask.to(torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t.bool()


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun describes in the environment; one process without it."""
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None


def speaks(e: BaseException | None = None) -> bool:
    """Whether this process reports to the user: rank 0, or any rank for an error of its own."""
    return world_from_env().is_main or (e is not None and not getattr(e, "from_main", False))


def current() -> World:
    """The world of the process group this process has joined (SINGLE if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


@contextmanager
def process_group(device: torch.device) -> Iterator[World]:
    """Join the run's process group for the block (NCCL on CUDA, one GPU per local rank; gloo on the CPU).

    One process (no torchrun) or a group joined already: nothing to do. Ranks other than 0 log
    warnings only, so the run's log is written once.
    """
    global _control
    world = world_from_env()
    if world.size == 1 or dist.is_initialized():
        yield current()
        return
    cuda = device.type == "cuda"
    if cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {world.local_rank} has no GPU (this machine has "
                             f"{torch.cuda.device_count()}); give torchrun --nproc_per_node at most that many")
        torch.cuda.set_device(world.local_rank)
    with _sigterm_ends_at_once():
        dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size, timeout=TIMEOUT)
        _control = dist.new_group(backend="gloo", timeout=TIMEOUT) if cuda else None
    if not world.is_main:
        logging.getLogger("iat").setLevel(logging.WARNING)
    try:
        yield world
        dist.barrier(group=_control)  # no rank leaves while another still needs it
    finally:
        _control = None
        # DDP's reducer holds the gloo group in reference cycles: collect it while the interpreter is whole,
        # or gloo's threads may be torn down at exit ("terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()


@contextmanager
def _sigterm_ends_at_once() -> Iterator[None]:
    """SIGTERM's default action (end the process) while joining the group.

    When rank 0 refuses its input before joining, torchrun stops the other ranks with SIGTERM. They wait
    inside init_process_group's C++ rendezvous, where a Python handler (iat's, which unwinds like Ctrl-C)
    runs only once the wait ends: torchrun then waited out its 30 s shutdown timeout before SIGKILL. Before
    the group exists there is nothing to save, so ending at once loses nothing.
    """
    try:
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except ValueError:  # not the main thread: signals are not ours to set
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random streams (mixing, attack starts, augmentation): rank 0 keeps `seed`."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0]) % 2**63
