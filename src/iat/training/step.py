"""One training update, and the batches of an epoch that feed it.

`Step` gets the model, the optimizer and the method's loss and does exactly one update per call,
with no host-device sync (see its docstring); `make_update` builds a run's Step with its precision and
speed options (AMP, TF32, cuDNN autotuning, channels_last, torch.compile) and wraps it in CUDA graphs
when asked; `LossTally` counts the losses on the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from iat.attacks import training_attack
from iat.config import TrainConfig
from iat.data import DEFAULT_DATA_DIR, DataInfo, augment, data_fingerprint, dataset_info, load_data, to_float
from iat.data_aux import AuxData, image_bytes
from iat.data_aux import steps_per_epoch as aux_steps_per_epoch
from iat.data_placement import choose_placement, mmap_file, place, prefetched, to_device
from iat.methods import get_method, make_loss_fn, make_mix
from iat.models import MixableNet
from iat.training.awp import AWP, with_awp
from iat.training.faults import diverged
from iat.training.graphs import Choice, GraphedUpdate, layer_choices, no_choice
from iat.training.model_prep import prepare_model
from iat.training.precision import Precision, resolve_precision, set_tf32
from iat.training.state import RunState

log = logging.getLogger("iat.train")

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


@dataclass(frozen=True)
class Objective:
    """The method's loss on one batch, `loss(model, x, y) -> (loss, metrics)`, and what CUDA graphs need to
    know of it: the Mix it draws from `mixed_losses` times per update (2 for the adversarial methods)."""

    loss: LossFn
    mix: object
    mixed_losses: int
    description: str  # for the log: the Mix and the attack
    awp: AWP | None = None  # --awp: the perturbation `loss` adds, which the Step removes after the optimizer step


def make_objective(cfg: TrainConfig, model: MixableNet) -> Objective:
    """The method's Objective; the attack holds the model itself (not DDP's wrapper)."""
    spec = get_method(cfg.method)
    mix = make_mix(spec, cfg.mixup_alpha, cfg.manifold_alpha, lam_per=cfg.lam_per, mix_layers=model.mix_layers)
    attack = None
    if spec.adversarial:
        attack = training_attack(cfg.attack, model, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps,
                                 bn_mode=cfg.attack_bn, autocast=cfg.attack_precision == "amp", objective=spec.inner)
    loss = make_loss_fn(spec, mix, attack, cfg.beta)
    awp = None
    if cfg.awp:
        awp = AWP(model, spec, cfg.awp, cfg.awp_warmup, cfg.beta)
        loss = with_awp(loss, spec, mix, attack, awp, make_loss_fn)
    return Objective(loss, mix, 2 if spec.adversarial else 1,
                     f"mix={mix!r}, attack={attack!r}" + (f", {awp!r}" if awp else ""), awp)


@dataclass
class TrainData:
    """The training set, where --data-placement keeps it (iat.data_placement), with what augmentation it gets.

    `x` holds the images as read, uint8 (N, C, H, W) 0..255 (floats in [0,1] are taken too), on `device` or, streamed
    (placement host or mmap), in host memory or mapped from disk; `y` the labels beside them. `images(idx)` gives
    images `idx` as floats on `device`, the floats `load_data` gives, bit for bit.
    """

    x: torch.Tensor
    y: torch.Tensor
    info: DataInfo
    aux: AuxData | None = None  # --aux-data: examples drawn into every batch (iat.data_aux)
    device: torch.device | None = None  # where training runs (None: x's device)
    placement: str = "device"  # device, host or mmap: as resolved from --data-placement

    @classmethod
    def load(cls, cfg: TrainConfig, device: torch.device) -> TrainData:
        x, y = load_data(cfg.dataset, "train", cfg.data_dir, limit=cfg.train_size, download=cfg.download,
                         image_size=cfg.image_size, svhn_extra=cfg.svhn_extra, as_bytes=True)
        info = dataset_info(cfg.dataset, cfg.image_size)
        own_fingerprint, aux = data_fingerprint(x, y), None
        fingerprint = own_fingerprint
        nbytes = x.numel() + y.numel() * y.element_size()  # before anything goes to the device or is mapped
        if cfg.aux_data is not None:
            nbytes += image_bytes(cfg.aux_data, cfg.data_dir)
        mmap_dir = Path(cfg.data_dir or DEFAULT_DATA_DIR) / "mmap"
        placement = choose_placement(cfg.data_placement, nbytes, device, mmap_dir)
        if cfg.aux_data is not None:
            aux = AuxData.load(cfg.aux_data, cfg.aux_fraction, info, cfg.data_dir, device, placement)
            fingerprint = hashlib.sha256(f"{fingerprint} {aux.sha256}".encode()).hexdigest()
        if placement == "mmap":
            x = mmap_file(x, mmap_dir, own_fingerprint)
        log.info("training images: %d x %s uint8, %.1f MB, placement %s (--data-placement %s)", len(x),
                 "x".join(map(str, x.shape[1:])), nbytes / 1e6, placement, cfg.data_placement)
        return cls(place(x, placement, device), place(y, placement, device),
                   dataclasses.replace(info, fingerprint=fingerprint), aux, device, placement)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def compute_device(self) -> torch.device:
        return self.device if self.device is not None else self.x.device

    @property
    def streamed(self) -> bool:
        """Kept off the device (host or mmap): batches are gathered ahead in a background thread and copied."""
        return self.placement != "device"

    def images(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples `idx` (unaugmented) as float images in [0,1] and labels, on the training device."""
        idx = idx.to(self.x.device)
        dev = self.compute_device
        return to_float(to_device(self.x[idx], dev)), to_device(self.y[idx], dev)

    def steps_per_epoch(self, batch_size: int) -> int:
        """ceil(n / batch_size), except that a last batch of one example joins the batch before it:
        BatchNorm cannot train on one value per channel. With --aux-data: ceil(n / batch_size), all full."""
        if self.aux is not None:
            return aux_steps_per_epoch(len(self), batch_size)
        steps = -(-len(self) // batch_size)
        return steps - 1 if steps > 1 and len(self) % batch_size == 1 else steps

    def batches(self, order: torch.Tensor, start: int, batch_size: int,
                shard: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[tuple[torch.Tensor, ...]]:
        """The augmented (x, y, share) batches of an epoch in `order`, from batch `start` on; with `shard`
        (torchrun), this rank's part of each global batch, and `share` its fraction of that batch (1.0
        without `shard`).

        Lazy on purpose: augmentation draws from the RNG right before its step, so a checkpoint
        between two steps holds the RNG state the next batch starts from. Streamed, the gather (which draws
        nothing) runs a batch ahead in a background thread; the conversion and augmentation stay here.
        """
        if self.aux is not None:
            yield from self.aux.batches(self.x, self.y, self.info, order.to(self.x.device), start, batch_size, shard,
                                        self.compute_device)
            return
        gathered = self._gathered(order.to(self.x.device), start, batch_size, shard)
        dev = self.compute_device
        for x, y, share in prefetched(gathered) if self.streamed else gathered:
            yield augment(to_float(to_device(x, dev)), self.info.crop_pad, self.info.flip), to_device(y, dev), share

    def _gathered(self, order: torch.Tensor, start: int, batch_size: int,
                  shard: Callable[[torch.Tensor], torch.Tensor] | None) -> Iterator[tuple[torch.Tensor, ...]]:
        """The (x, y, share) bytes of each batch, where `x` lives; pinned when they go on to a GPU."""
        pin = self.streamed and self.compute_device.type == "cuda"
        steps = self.steps_per_epoch(batch_size)
        for step in range(start, steps):
            idx = order[step * batch_size : (step + 1) * batch_size if step < steps - 1 else len(self)]
            part = shard(idx) if shard is not None else idx
            x, y = self.x[part], self.y[part]
            if pin:
                x, y = x.pin_memory(), y.pin_memory()
            yield x, y, len(part) / len(idx)


class Step:
    """`step(x, y)`: one optimizer step on (x, y); returns the loss, detached, on the device.

    Autocast as `precision` says, the method's loss, zero_grad, backward, optimizer step: no Python branch
    on data and no host-device sync (fp16's GradScaler aside), so a CUDA graph can capture it whole
    (`with_cuda_graphs` wraps it from outside). The loop counts the loss (`LossTally`).

    `grad_weight` (torchrun): DDP averages the ranks' gradients with equal weights, so a rank whose part
    of the global batch is not 1/N of it (a batch size that the ranks do not divide) scales its mean loss
    by part / batch x N; the average is then the gradient of the global batch's mean.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *,
                 precision: Precision | None = None, channels_last: bool = False, awp: AWP | None = None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.precision = precision or Precision()
        self.channels_last = channels_last
        self.awp = awp  # removes its weight perturbation after each optimizer step
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.grad_scaler else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, grad_weight: float = 1.0) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.precision.dtype
        with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss, _ = self.loss_fn(self.model, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        weighted = loss if grad_weight == 1.0 else loss * grad_weight
        if self.scaler is None:
            weighted.backward()
            self.optimizer.step()
        else:  # fp16: scale the loss; the scaler skips steps whose gradients overflow (it syncs)
            self.scaler.scale(weighted).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.awp is not None:
            self.awp.restore()
        return loss.detach()


Update = Callable[..., torch.Tensor]  # update(x, y, grad_weight=1.0) -> loss: a Step, or a Step in CUDA graphs


def make_update(cfg: TrainConfig, state: RunState, objective: Objective, *, device: torch.device,
                wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> tuple[Update, dict]:
    """The run's update, and what it runs with (for config.json): a Step with the precision, TF32, cuDNN
    autotuning, channels_last and compile `cfg` asks for, in CUDA graphs with --cuda-graphs. `wrap` (DDP
    under torchrun) wraps the prepared model for the weight update only (the attack keeps the plain one).

    TF32 and cuDNN autotuning are process-wide: `iat.training.train` puts them back when the run ends. glibc's
    allocator thresholds (iat.cpu_memory), which cannot be put back, are for the `iat` command's process and
    the launchers' workers to set, not for a library call.
    """
    precision = resolve_precision(cfg, device)
    set_tf32(precision.tf32)
    cudnn_benchmark = cfg.cudnn_benchmark and device.type == "cuda"
    torch.backends.cudnn.benchmark = cudnn_benchmark
    channels_last = prepare_model(state.model, channels_last=cfg.channels_last, compile=cfg.compile, device=device)
    model = wrap(state.model) if wrap is not None else state.model
    step = Step(model, state.optimizer, objective.loss, precision=precision, channels_last=channels_last,
                awp=objective.awp)
    update = step
    if cfg.cuda_graphs:
        update = with_cuda_graphs(step, cfg.batch_size, device, distributed=model is not state.model,
                                  choose=layer_choices(objective.mix, objective.mixed_losses))
    used = {"precision": precision.record(), "channels_last_used": channels_last,
            "cuda_graphs_used": update is not step, "cudnn_benchmark_used": cudnn_benchmark}
    return update, used


def with_cuda_graphs(step: Step, batch_size: int, device: torch.device, *, distributed: bool = False,
                     choose: Callable[[], Choice] = no_choice) -> Update:
    """`step` replayed from CUDA graphs (iat.training.graphs) where it can be, else `step` itself (with a
    warning saying why). `choose` draws the update's Python-side choices (Manifold Mixup's layer)."""
    why_not = ("it needs a CUDA device" if device.type != "cuda" else
               "fp16's GradScaler reads values back every step" if step.scaler is not None else
               "DDP's gradient all-reduce is not captured (one process per GPU runs eagerly)" if distributed
               else None)
    if why_not:
        log.warning("--cuda-graphs: %s; training runs eagerly", why_not)
        return step
    return GraphedUpdate(step, batch_size=batch_size, optimizer=step.optimizer, choose=choose)


class LossTally:
    """The run's loss sum and the first non-finite loss, counted on the device: no host-device sync per step.

    `add` continues `state`'s loss sum (float64, on the device) and notes the first step whose loss was not
    finite, also on the device. `sync(state)` reads them back (the one sync): the loop calls it at progress,
    checkpoint and epoch-end points, so a non-finite loss stops the run there, before anything is saved,
    naming the step where it happened.
    """

    def __init__(self, out: Path):
        self.out = out
        self._sum: torch.Tensor | None = None  # state's loss_sum continued on the device
        self._bad_step: torch.Tensor | None = None  # 1-based step of the first non-finite loss, 0: none yet
        self._bad_loss: torch.Tensor | None = None  # that loss

    def add(self, state: RunState, loss: torch.Tensor, n: int) -> None:
        """Count one step's mean `loss` over `n` examples, and advance `state` by the step."""
        if self._sum is None:
            self._sum = torch.tensor(state.running["loss_sum"], dtype=torch.float64, device=loss.device)
            self._bad_step = torch.zeros((), dtype=torch.int64, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        self._sum += loss.double() * n  # as `state.advance` sums in Python: the same float64 operations
        first_bad = ~torch.isfinite(loss) & (self._bad_step == 0)
        self._bad_step = torch.where(first_bad, state.step + 1, self._bad_step)
        self._bad_loss = torch.where(first_bad, loss, self._bad_loss)
        state.advance(0.0, n)  # the count and position; the loss is summed above

    def sync(self, state: RunState) -> float:
        """Read the device-side sums into `state`; raise TrainingDiverged if a loss was not finite.

        Called at least at every checkpoint and at each epoch's end (before the epoch's metrics are
        recorded), so a diverged run stops before anything non-finite is saved. Returns the mean loss.
        """
        if self._sum is not None:
            bad_step = int(self._bad_step)  # the host sync
            if bad_step:
                raise diverged(f"the loss became {self._bad_loss.item()}", self.out, state.epoch, bad_step)
            state.running["loss_sum"] = float(self._sum)
            self._sum = self._bad_step = self._bad_loss = None
        return state.mean_loss()
