"""The training configuration: every option, with the paper's value as default where it gives one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from iat.attacks import BN_MODES
from iat.data import dataset_info
from iat.errors import UsageError
from iat.methods import get_method
from iat.mixing import LAMBDA_MODES
from iat.models import model_names

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    method: str = "erm"  # erm | mixup | manifold-mixup | pgd | iat-mixup | iat-manifold-mixup
    dataset: str = "cifar10"  # digits | mnist | fashion-mnist | cifar10 | svhn
    arch: str = "preactresnet18"  # preactresnet18 | wrn28-10 | mlp6 | cnn-small
    width: int | None = None  # model width override (None: the architecture's own; for smoke runs)
    epochs: int = 200  # paper: 200
    batch_size: int = 64  # paper: 64
    lr: float = 0.1  # paper: 0.1
    milestones: list[int] | None = None  # epochs where lr /= 10; None: [epochs/2, 3*epochs/4] (paper: 100,150)
    lr_gamma: float = 0.1  # paper: "annealed by a factor of 0.1"
    momentum: float = 0.9  # SGD momentum (paper: "SGD with momentum")
    weight_decay: float = 1e-4  # not given in the paper; the Manifold Mixup code's value
    eps: float = 8 / 255  # L-inf radius of the training attack, images in [0,1] (paper: 8/255)
    step_size: float = 2 / 255  # PGD step (paper: 2/255)
    attack_steps: int = 7  # PGD steps during training (paper: 7)
    attack_bn: str = "eval"  # BatchNorm mode while attacking during training: eval | train
    mixup_alpha: float = 1.0  # Beta(alpha, alpha) for Mixup (paper: 1.0)
    manifold_alpha: float = 2.0  # Beta(alpha, alpha) for Manifold Mixup (paper: 2.0)
    lam_per: str = "batch"  # one lambda per 'batch' or per 'example'
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    data_dir: str | None = None
    download: bool = False  # fetch the data set with torchvision into data_dir when it is absent
    train_size: int | None = None  # use the first N training examples (None: all)
    checkpoint_every: int = 0  # also checkpoint every N steps (counted over the run); always at epoch ends
    amp: bool = False  # bfloat16 autocast on CUDA (off on the CPU)
    extra: dict = field(default_factory=dict)  # free-form provenance (e.g. the experiment name)

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return default_milestones(self.epochs)

    def validate(self) -> TrainConfig:
        """Raise UsageError naming the first bad value and its valid range; return self."""
        for name in ("method", "dataset", "arch", "attack_bn", "lam_per", "device"):
            if not isinstance(getattr(self, name), str):
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)!r} is not a name")
        get_method(self.method)
        dataset_info(self.dataset)
        if self.arch not in model_names():
            raise UsageError(f"unknown architecture {self.arch!r}; choose one of: {', '.join(model_names())}")
        checks = [
            ("--epochs", self.epochs, 1, 100_000),
            ("--batch-size", self.batch_size, 1, 1_000_000),
            ("--attack-steps", self.attack_steps, 1, 100_000),
            ("--seed", self.seed, 0, 2**63 - 1),
            ("--checkpoint-every", self.checkpoint_every, 0, 10**12),
        ]
        if self.width is not None:
            checks.append(("--width", self.width, 1, 100_000))
        if self.train_size is not None:
            checks.append(("--train-size", self.train_size, 1, 10**9))
        for name, value, lo, hi in checks:
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"{name} {value!r} is not an integer; give a whole number in [{lo}, {hi}]")
            if not lo <= value <= hi:
                raise UsageError(f"{name} {value!r} is outside [{lo}, {hi}]; give a value in that range")
        fchecks = [
            ("--lr", self.lr, 0.0, 10.0, False),
            ("--lr-gamma", self.lr_gamma, 0.0, 1.0, False),
            ("--momentum", self.momentum, 0.0, 1.0, True),
            ("--weight-decay", self.weight_decay, 0.0, 1.0, True),
            ("--eps", self.eps, 0.0, 1.0, True),
            ("--step-size", self.step_size, 0.0, 1.0, False),
            ("--mixup-alpha", self.mixup_alpha, 0.0, 100.0, False),
            ("--manifold-alpha", self.manifold_alpha, 0.0, 100.0, False),
        ]
        for name, value, lo, hi, zero_ok in fchecks:
            bracket = "[" if zero_ok else "("
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UsageError(f"{name} {value!r} is not a number; give a value in {bracket}{lo:g}, {hi:g}]")
            if not (lo < value <= hi or (zero_ok and value == lo)):  # also refuses NaN
                raise UsageError(f"{name} {value!r} is outside {bracket}{lo:g}, {hi:g}]; give a value in that range")
        if self.milestones is not None:
            ms = self.milestones
            example = ",".join(map(str, default_milestones(self.epochs)))
            if (not isinstance(ms, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in ms)
                    or any(m < 1 or m > self.epochs for m in ms) or any(a >= b for a, b in zip(ms, ms[1:]))):
                raise UsageError(f"--milestones {ms!r} must be strictly increasing epochs in [1, {self.epochs}] "
                                 f"(--epochs); e.g. {example}")
        if self.attack_bn not in BN_MODES:
            raise UsageError(f"--attack-bn {self.attack_bn!r}: choose one of {', '.join(BN_MODES)}")
        if self.lam_per not in LAMBDA_MODES:
            raise UsageError(f"--lam-per {self.lam_per!r}: choose one of {', '.join(LAMBDA_MODES)}")
        if self.device not in DEVICES:
            raise UsageError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise UsageError(f"--data-dir {self.data_dir!r} is not a path")
        if not isinstance(self.amp, bool):
            raise UsageError(f"amp {self.amp!r} is not true or false")
        if not isinstance(self.download, bool):
            raise UsageError(f"download {self.download!r} is not true or false")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones_resolved"] = self.resolved_milestones()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def default_milestones(epochs: int) -> list[int]:
    """Half and three quarters of the way (the paper's 100,150 of 200); at least epoch 1, no repeats."""
    return sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})


# Options that decide the trained weights: a resumed run must be given the same values.
_NOT_RESUME_KEYS = ("device", "data_dir", "download", "extra")  # where and how, not what is trained
RESUME_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_RESUME_KEYS)
RESUME_KEYS += ("milestones_resolved",)
