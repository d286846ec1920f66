"""The training configuration: every option once, with its default, help, unit and valid range beside it.

`TrainConfig` is the only place a training option is written. Each field's metadata (made by `option`)
says what the option means (`help`), its unit and its valid range (`lo`/`hi`); its annotation says what it
is (`kind_of`: int, float, str, bool, ints, path, dict) and, as a `Literal[...]`, which words it takes
(`choices_of`); a registry's names (methods, data sets, architectures) are its `check`'s to refuse.
`TrainConfig.validate` (in one pass) and the flags of `iat train` (iat.cli.train, types only) are generated
from it, and experiment and demo settings are overrides of it (`TrainConfig.from_overrides`,
`dataclasses.replace`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch

from iat.attacks import BN_MODES, TRAINING_ATTACKS
from iat.data import IMAGEFOLDER, RESIZABLE, dataset_info
from iat.data_aux import DEFAULT_FRACTION, EPOCH_DEFINITION
from iat.errors import UsageError
from iat.methods import BETA, get_method, method_names
from iat.mixing import LAMBDA_MODES
from iat.models import MixableNet, check_model_name, create_model, is_timm
from iat.units import parse_fraction

# The largest seed whose epoch orders (seed * 100_003 + epoch, iat.training.state.epoch_order) still fit torch's
# 64-bit generator seed for every epoch up to the 100,000 --epochs allows.
SEED_MAX = (2**64 - 1 - 100_000) // 100_003


def option(default: Any = None, help: str = "", *, unit: str | None = None, lo: float | None = None,
           hi: float | None = None, above: bool = False, check: Callable[[Any], Any] | None = None,
           required_flag: bool = False, factory: Callable | None = None):
    """A TrainConfig field: `default`, its `help` and the metadata `validate` and the CLI are built from.

    `lo`/`hi`: the valid range, `lo` excluded when `above`; `check(value)`: raises the option's own
    UsageError (a registry's unknown name, a bound the range cannot say), run once the value has the
    annotation's type; `required_flag`: `iat train` requires the flag although the dataclass has a default.
    """
    meta = {"help": help, "unit": unit, "lo": lo, "hi": hi, "above": above, "check": check,
            "required_flag": required_flag}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class TrainConfig:
    """Every training option; the defaults are the paper's (Section 4.1) where it gives one.

    Build one from an experiment file or the demo as overrides of these defaults:

        cfg = TrainConfig.from_overrides({"method": "pgd", "epochs": 10, "eps": "8/255"}, source="table2.toml")
        cfg2 = dataclasses.replace(cfg, seed=1).validate()

    `from_overrides` refuses unknown keys and values of the wrong type with a one-line UsageError naming
    `source` and the key, then validates the whole config (see `validate`).
    """

    method: str = option("erm", "training method (a row of the tables)", check=get_method, required_flag=True)
    dataset: str = option("cifar10", "data set (imagefolder:PATH: your own images, PATH/train/CLASS/*.png and "
                          "PATH/val/CLASS/...)", check=dataset_info, required_flag=True)
    arch: str = option("preactresnet18", "architecture (timm:NAME: any timm model, the extra iat[timm])",
                       check=check_model_name, required_flag=True)
    width: int | None = option(None, "width override (smaller models for quick runs)", lo=1, hi=100_000)
    epochs: int = option(200, "training epochs", unit="epochs", lo=1, hi=100_000)  # paper: 200
    batch_size: int = option(64, "examples per update (an epoch's last batch of one example joins the batch before "
                             "it: BatchNorm cannot train on one)", unit="examples", lo=1, hi=1_000_000)
    lr: float = option(0.1, "initial learning rate", lo=0.0, hi=10.0, above=True)  # paper: 0.1
    milestones: list[int] | None = option(  # paper: 100,150 of 200
        None, "epochs at which lr is multiplied by --lr-gamma, e.g. 100,150 (default: epochs/2, 3*epochs/4)",
        unit="epochs")
    lr_gamma: float = option(0.1, "lr decay factor at each milestone", lo=0.0, hi=1.0, above=True)
    momentum: float = option(0.9, "SGD momentum", lo=0.0, hi=1.0)
    weight_decay: float = option(1e-4, "L2 weight decay", lo=0.0, hi=1.0)  # the Manifold Mixup code's
    eps: float = option(8 / 255, "training attack radius", unit="eps", lo=0.0, hi=1.0)
    step_size: float = option(2 / 255, "training PGD step", unit="eps", lo=0.0, hi=1.0, above=True)
    attack_steps: int = option(7, "training PGD steps", unit="steps", lo=1, hi=100_000)
    # A Literal of a registry's constant tuple: Literal[("eval", "train")] is Literal["eval", "train"].
    attack_bn: Literal[BN_MODES] = option(
        "eval", "BatchNorm mode while crafting training attacks (train: batch statistics, running statistics left "
        "untouched)")
    attack: Literal[TRAINING_ATTACKS] = option(
        "pgd", "training's inner attack: pgd (--attack-steps steps of --step-size, the paper's); fgsm-rs (random "
        "start, one step of 1.25 eps) or n-fgsm (noise 2 eps, one step of eps, not projected): one "
        "forward-backward, --step-size and --attack-steps do not apply")
    co_guard: Literal["auto", "on", "off"] = option(
        "auto", "catastrophic-overfitting guard: PGD-10 on 256 fixed training images at each epoch's end, stop if "
        "its accuracy collapses (auto: on for fgsm-rs and n-fgsm)")
    mixup_alpha: float = option(1.0, "Beta(a,a) for Mixup", lo=1e-3, hi=100.0, above=True)
    manifold_alpha: float = option(2.0, "Beta(a,a) for Manifold Mixup", lo=1e-3, hi=100.0, above=True)
    lam_per: Literal[LAMBDA_MODES] = option("batch", "one mixing lambda per batch or example")
    beta: float = option(BETA, "TRADES's and MART's weight of the KL term (trades, mart, iat-trades; both references' "
                         "6.0)", lo=0.0, hi=1000.0)
    awp: float = option(0.0, "adversarial weight perturbation (Wu et al. 2020): gamma, the perturbation's size "
                        "relative to each layer's weight norm, one ascent step per update (0: off; the reference's "
                        "0.01 for pgd, 0.005 for trades)", lo=0.0, hi=1.0)
    awp_warmup: int = option(0, "epochs trained without AWP before it starts (the reference's --awp-warmup: 0 for "
                             "pgd, 10 for trades)", unit="epochs", lo=0, hi=100_000)
    ema: float = option(0.0, "decay of an exponential moving average of the weights, saved as model_ema.safetensors "
                        "(0: off; e.g. 0.999), warmed up as min(decay, (1+t)/(10+t)) at update t", lo=0.0, hi=1.0,
                        check=lambda d: _check_ema(d))
    seed: int = option(0, "random seed", lo=0, hi=SEED_MAX)
    device: Literal["auto", "cpu", "cuda"] = option("auto", "auto: CUDA when available, else CPU")
    data_dir: str | None = option(None, "where the data set lives (see docs/setup.md: Data)")
    download: bool = option(False, "download the data set with torchvision into --data-dir (default "
                            "~/.cache/iat/data) if absent")
    train_size: int | None = option(None, "use only the first N training examples", unit="examples",
                                    lo=1, hi=10**9)
    image_size: int | None = option(None, "side of the square images of tiny-imagenet and imagefolder:PATH: each is "
                                    "resized (shorter side) and center-cropped to it (default: tiny-imagenet's 64; "
                                    "imagefolder: the images' own size, which must then be one)", unit="pixels",
                                    lo=1, hi=4096)
    svhn_extra: bool = option(False, "--dataset svhn: train on the training split plus SVHN's 531,131-image extra "
                              "split, as the SVHN references do")
    aux_data: str | None = option(None, "generated or extra training data: an .npz of image (uint8 N x H x W x C) "
                                  "and label, the format of the published DDPM/EDM sets; a relative path is also "
                                  "looked for in --data-dir")
    aux_fraction: float = option(DEFAULT_FRACTION, "with --aux-data: the fraction of each batch drawn from it "
                                 "(Gowal, Rebuffi and Wang et al.'s 0.7); an epoch stays ceil(n_train / batch) "
                                 "batches", lo=0.0, hi=1.0, check=lambda f: _check_aux_fraction(f))
    data_placement: Literal["auto", "device", "host", "mmap"] = option(
        "auto", "where the training images (kept as bytes) live: device (the GPU), host (pinned host memory, each "
        "batch copied while the step before it runs), mmap (mapped from disk: written once into <data-dir>/mmap; an "
        "uncompressed --aux-data .npz in place); auto: device when they take at most half its free memory, else "
        "host (docs/data-and-models.md)")
    checkpoint_every: int = option(0, "also write checkpoint.pt every N training steps (0: only at the end of "
                                   "each epoch)", unit="steps", lo=0, hi=10**12)
    amp: bool = option(False, "autocast the two weight-update passes (bf16 on CPU and CUDA; see --amp-dtype)")
    amp_dtype: Literal["bf16", "fp16"] = option("bf16", "autocast dtype with --amp (fp16: CUDA only, with a "
                                                "GradScaler)")
    attack_precision: Literal["fp32", "amp"] = option(
        "fp32", "precision of the training attack with --amp (fp32: outside autocast; amp: under autocast too, "
        "faster but a weaker attack)")
    tf32: bool = option(False, "TF32 matmuls and convolutions on CUDA while training (off: fp32 means fp32)")
    cudnn_benchmark: bool = option(
        False, "let cuDNN time its convolution algorithms once per input shape and keep the fastest (CUDA only; "
        "off: cuDNN's heuristics choose)")
    compile: bool = option(False, "torch.compile the model for the training step and the training attack")
    channels_last: bool = option(True, "channels_last memory format for convolutional models where it is safe and "
                                 "faster: CUDA, and CPUs with AVX-512 kernels (--no-channels-last: the contiguous "
                                 "layout everywhere)")
    cuda_graphs: bool = option(False, "capture the whole training update (attack, both losses, backward, SGD "
                               "step) as CUDA graphs and replay them: far fewer kernel launches (CUDA only)")
    speed: Literal["exact", "fast"] = option(
        "exact", "exact: the options as given (by default true fp32, eager: the paper's arithmetic); fast: the "
        "fastest measured setting, on CUDA --cuda-graphs --compile --tf32 --amp --attack-precision amp "
        "--cudnn-benchmark, on a CPU with bf16 instructions --amp --attack-precision amp (evaluation stays strict "
        "fp32 either way; iat.training.speed)")
    sync_bn: bool = option(False, "under torchrun on GPUs: BatchNorm statistics over the global batch "
                           "(SyncBatchNorm) instead of each rank's part; no effect in one process")
    extra: dict = option(help="free-form provenance (e.g. the experiment name)", factory=dict)

    def resolved_milestones(self) -> list[int]:
        if self.milestones is not None:
            return list(self.milestones)
        return default_milestones(self.epochs)

    def validate(self) -> TrainConfig:
        """Raise UsageError naming the first bad value and its valid range; return self.

        One pass over the fields, each checked whole from its annotation and metadata (type, own check,
        words, range), then the rules between options.
        """
        for f in dataclasses.fields(self):
            _check_option(f, getattr(self, f.name))
        _check_milestones(self)
        _check_attack_options(self)
        _check_data_options(self)
        _check_attack_precision(self)
        return self

    def resolved_image_size(self) -> int | None:
        """--image-size, or the data set's own image side when not given (None: an unknown data set)."""
        if self.image_size is not None:
            return self.image_size
        try:
            return dataset_info(self.dataset).image_size
        except UsageError:
            return None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones_resolved"] = self.resolved_milestones()
        # config.json has always recorded the data's image side as image_size: --image-size is recorded resolved
        # (the data set's own when not given), so runs of every release resume alike
        d["image_size"] = self.resolved_image_size()
        if self.aux_data is not None:  # what an epoch is, which differs from a plain run's (iat.data_aux)
            d["epoch_definition"] = EPOCH_DEFINITION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config of a config.json (its extra keys, such as versions, are ignored; an older run's "on"/"off"
        switches are read as booleans); not validated."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: old_switch(k, v) for k, v in d.items() if k in names})

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any], source: str = "settings",
                       base: TrainConfig | None = None) -> TrainConfig:
        """`base` (default: TrainConfig()) with `overrides` applied, type-checked and validated.

        Keys are field names (`batch_size`, not `--batch-size`). An int is accepted for a float
        option, and eps-unit options (`eps`, `step_size`) also accept '8/255'. An unknown key or a
        value of the wrong type raises UsageError("{source}: ...") naming the key; an out-of-range
        value raises the message `validate` gives, prefixed with `source`.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in overrides.items():
            if key not in fields:
                raise UsageError(f"{source}: unknown training option {key!r}; known: {', '.join(fields)}")
            values[key] = _coerce(fields[key], value, source)
        try:
            return dataclasses.replace(base if base is not None else cls(), **values).validate()
        except UsageError as e:
            raise UsageError(f"{source}: {e}") from None


def flag(name: str) -> str:
    """The `iat train` flag of a field: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


_HINTS = get_type_hints(TrainConfig)  # the annotations as types, not the strings `from __future__` leaves
_KINDS = {int: "int", int | None: "int", float: "float", str: "str", bool: "bool", list[int] | None: "ints",
          str | None: "path", dict: "dict"}


def kind_of(f: dataclasses.Field) -> str:
    """What a TrainConfig field holds, from its annotation: int, float, str, bool, ints, path or dict."""
    hint = _HINTS[f.name]
    return "str" if get_origin(hint) is Literal else _KINDS[hint]


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The words an option takes, from its `Literal[...]` annotation; None for other options."""
    hint = _HINTS[f.name]
    return get_args(hint) if get_origin(hint) is Literal else None


# Switches that were the words "on"/"off" in 0.1.0 and are booleans since. The words are read for one more
# release: with a deprecation line where a person wrote them (a flag, an experiment file), silently from an
# older run's config.json, so that the run still loads and resumes.
WAS_ON_OFF = ("tf32", "cudnn_benchmark")


def old_switch(key: str, value: Any, where: str | None = None) -> Any:
    """`value` of option `key`, an old "on"/"off" as True/False (with a deprecation line on stderr naming
    `where`, if given); any other value as it is."""
    if key not in WAS_ON_OFF or not isinstance(value, str) or value not in ("on", "off"):
        return value
    if where is not None:
        sys.stderr.write(f'warning: {where} = "{value}" is deprecated and goes in the next release; write '
                         f'{key} = {"true" if value == "on" else "false"}\n')
    return value == "on"


# TrainConfig.validate: each option on its own, then the rules between options.

_TYPES = {"int": int, "float": (int, float), "str": str, "path": str, "bool": bool, "dict": dict, "ints": list}
_NOT_A = {"int": "is not an integer; give a whole number in {span}", "float": "is not a number; give a value in "
          "{span}", "str": "is not a name", "path": "is not a path", "bool": "is not true or false"}


def _check_option(f: dataclasses.Field, value: Any) -> None:
    """One option, whole: its type (the annotation), its own check, its words or its range (the metadata)."""
    kind, meta = kind_of(f), f.metadata
    if kind in ("dict", "ints") or (value is None and f.default is None):
        return  # extra is free-form; milestones are checked against --epochs; None: an optional one not given
    name = f.name if kind == "bool" else flag(f.name)
    if not _is_a(kind, value):
        raise UsageError(f"{name} {value!r} " + _NOT_A[kind].format(span=_span(f)))
    if meta["check"] is not None:
        meta["check"](value)
    words = choices_of(f)
    if words is not None and value not in words:
        raise UsageError(f"{name} {value!r}: choose one of {', '.join(words)}")
    lo, hi = meta["lo"], meta["hi"]
    if kind in ("int", "float") and not (lo < value <= hi or (not meta["above"] and value == lo)):  # refuses NaN
        eps_typo = meta["unit"] == "eps" and value > 1
        hint = "images are in [0,1], so write 8/255 rather than 8" if eps_typo else "give a value in that range"
        raise UsageError(f"{name} {value!r} is outside {_span(f)}; {hint}")


def _is_a(kind: str, value: Any) -> bool:
    """Whether `value` is what an option of `kind` holds (True and False are no numbers)."""
    if kind == "ints":
        return isinstance(value, list) and all(_is_a("int", v) for v in value)
    return isinstance(value, _TYPES[kind]) and (kind == "bool" or not isinstance(value, bool))


def _span(f: dataclasses.Field) -> str:
    """A number option's valid range as written in messages: [1, 100000], (0, 10]."""
    meta = f.metadata
    if kind_of(f) == "int":
        return f"[{meta['lo']}, {meta['hi']}]"
    return f"{'(' if meta['above'] else '['}{meta['lo']:g}, {meta['hi']:g}]" if kind_of(f) == "float" else ""


def _check_milestones(cfg: TrainConfig) -> None:
    ms = cfg.milestones
    if ms is None:
        return
    example = ",".join(map(str, default_milestones(cfg.epochs)))
    if not _is_a("ints", ms) or any(m < 1 or m > cfg.epochs for m in ms) or any(a >= b for a, b in zip(ms, ms[1:])):
        raise UsageError(f"--milestones {ms!r} must be strictly increasing epochs in [1, {cfg.epochs}] "
                         f"(--epochs); e.g. {example}")


def _check_attack_precision(cfg: TrainConfig) -> None:
    """An fp16 attack is refused: fp16 needs loss scaling, which input gradients do not get."""
    if cfg.amp and cfg.amp_dtype == "fp16" and cfg.attack_precision == "amp":
        raise UsageError("--attack-precision amp with --amp-dtype fp16: the attack's input gradients would be fp16 "
                         "without loss scaling, underflow to zero and weaken the attack; use --attack-precision fp32 "
                         "or bf16")


def _check_attack_options(cfg: TrainConfig) -> None:
    """--attack and --co-guard apply to adversarial methods only, --beta to TRADES and MART, --awp to methods with
    an attack: refused elsewhere, since the run would silently not do what was asked."""
    spec = get_method(cfg.method)
    if cfg.beta != BETA and not spec.uses_beta:
        raise UsageError(f"--beta {cfg.beta:g} applies only to trades, mart and iat-trades; --method {cfg.method} "
                         "has no KL term: drop --beta")
    if cfg.awp and not spec.adversarial:
        raise UsageError(f"--awp {cfg.awp:g} perturbs the weights against the adversarial loss; --method "
                         f"{cfg.method} trains without an attack: choose pgd, trades, mart or an iat-* method")
    if cfg.awp_warmup and not cfg.awp:
        raise UsageError(f"--awp-warmup {cfg.awp_warmup} applies only with --awp GAMMA > 0: drop it or give --awp")
    if cfg.awp and cfg.cuda_graphs:
        raise UsageError("--awp with --cuda-graphs: the weight perturbation is not captured in CUDA graphs here; "
                         "drop one of them")
    if spec.inner != "ce" and cfg.attack != "pgd":
        raise UsageError(f"--attack {cfg.attack}: --method {cfg.method} crafts its examples with its own PGD "
                         "(the reference's); use --attack pgd")
    if spec.adversarial:
        return
    for name, value, default in (("attack", cfg.attack, "pgd"), ("co-guard", cfg.co_guard, "auto")):
        if value != default:
            raise UsageError(f"--{name} {value} applies only to adversarial methods (pgd, iat-*); "
                             f"--method {cfg.method} trains without an attack: drop --{name}")


def _check_ema(decay: float) -> None:
    """[0, 1): a decay of 1 would never move the average."""
    if not 0 <= decay < 1:
        why = "would keep the initial weights forever" if decay == 1 else "is outside [0, 1)"
        raise UsageError(f"--ema {decay:g} {why}; give a decay in [0, 1), e.g. 0.999 (0: off)")


def _check_data_options(cfg: TrainConfig) -> None:
    """Data and model options that apply to some data sets and architectures only: refused elsewhere, as the
    run would silently not do what was asked; Manifold Mixup needs mixing points a timm model does not have."""
    resizable = cfg.dataset in RESIZABLE or cfg.dataset.startswith(IMAGEFOLDER)
    if cfg.image_size is not None and not resizable:
        size = dataset_info(cfg.dataset).image_size
        if cfg.image_size != size:
            raise UsageError(f"--image-size {cfg.image_size}: {cfg.dataset} images are {size}x{size}, and only "
                             "tiny-imagenet and imagefolder:PATH are resized; drop --image-size")
    if cfg.svhn_extra and cfg.dataset != "svhn":
        raise UsageError(f"--svhn-extra adds SVHN's extra split; --dataset is {cfg.dataset}: drop --svhn-extra")
    if cfg.aux_data is None and cfg.aux_fraction != DEFAULT_FRACTION:
        raise UsageError(f"--aux-fraction {cfg.aux_fraction:g} applies only with --aux-data FILE.npz: give the file "
                         "or drop --aux-fraction")
    if is_timm(cfg.arch):
        if get_method(cfg.method).mix == "manifold-mixup":
            ok = [m for m in method_names() if get_method(m).mix != "manifold-mixup"]
            raise UsageError(f"--method {cfg.method} mixes hidden states at the network's block boundaries, which "
                             f"{cfg.arch} does not expose; with a timm model use one of: {', '.join(ok)}")
        if cfg.width is not None:
            raise UsageError(f"--width {cfg.width} resizes iat's own networks; {cfg.arch} is built as timm defines "
                             "it: drop --width (or choose a smaller timm model)")


def _check_aux_fraction(value: float) -> None:
    """[0, 1): a batch needs at least one real example (DM-Improves-AT's sampler fills it with one at least)."""
    if not 0 <= value < 1:
        raise UsageError(f"--aux-fraction {value!r} is outside [0, 1): give the fraction of each batch drawn from "
                         f"--aux-data, e.g. {DEFAULT_FRACTION}")


_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a name", "bool": "true or false",
               "ints": "a list of integers", "path": "a path (a string)", "dict": "a table"}


def _coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """`value` as field `f` holds it, or a UsageError naming `source` and the key (its range is validate's)."""
    kind = kind_of(f)
    value = old_switch(f.name, value, f"{source}: {f.name}")
    if value is None and f.default is None:
        return None
    if kind == "float" and f.metadata["unit"] == "eps" and isinstance(value, str):
        return parse_fraction(value, f"{source}: {f.name}")
    if not _is_a(kind, value):
        raise UsageError(f"{source}: {f.name} = {value!r} is not {_KIND_NAMES[kind]}")
    return float(value) if kind == "float" else list(value) if kind == "ints" else value


def default_milestones(epochs: int) -> list[int]:
    """Half and three quarters of the way (the paper's 100,150 of 200); at least epoch 1, no repeats."""
    return sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})


def resolve_device(name: str) -> torch.device:
    """The torch device of a --device value: auto picks CUDA when there is a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: choose one of auto, cpu, cuda")
    return torch.device(name)


# Options that decide the trained weights: a resumed run must be given the same values.
# A key an older run's config.json lacks compares as its default (iat.training.resume.first_difference).
# The speed options change rounding or kernel launches, not the arithmetic: a resumed run may change them,
# with a warning and a line in config.json's `resumes` (iat.training.checkpoint.open_run_dir).
SPEED_KEYS = ("channels_last", "compile", "cuda_graphs", "cudnn_benchmark")
_NOT_RESUME_KEYS = ("device", "data_dir", "download", "data_placement", "extra",  # where and how, not what is trained
                    *SPEED_KEYS,
                    "co_guard")  # it can stop a run, never change its weights: resume with --co-guard off
RESUME_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_RESUME_KEYS)
RESUME_KEYS += ("milestones_resolved",)


def build_model(cfg: TrainConfig) -> MixableNet:
    """The model a config describes (no weights loaded). Here, not in iat.models: models are a leaf that
    knows nothing of training configs."""
    info = dataset_info(cfg.dataset, cfg.image_size)
    kwargs = {}
    if cfg.width is not None:
        kwargs["widen" if cfg.arch.startswith("wrn") else "width"] = cfg.width
    if cfg.arch == "mlp6":
        kwargs["input_size"] = info.image_size
    return create_model(cfg.arch, info.in_channels, info.num_classes, mean=info.mean, std=info.std, **kwargs)


def check_input_size(cfg: TrainConfig, model: torch.nn.Module) -> None:
    """Refuse an image size the model cannot take (a timm ViT made for 224x224 given 32x32), before anything
    trains: one forward pass of two blank images; on the meta device, shapes alone."""
    info = dataset_info(cfg.dataset, cfg.image_size)
    param = next(model.parameters(), None)
    x = torch.zeros(2, info.in_channels, info.image_size, info.image_size,
                    device=param.device if param is not None else "cpu")
    try:
        with torch.no_grad():
            model.eval()(x)
    except NotImplementedError:  # an operation without a shapes-only kernel: the first step will tell
        return
    except (RuntimeError, AssertionError, ValueError) as e:
        if "meta" in str(e):
            return
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        resizable = cfg.dataset in RESIZABLE or cfg.dataset.startswith(IMAGEFOLDER)
        raise UsageError(f"--arch {cfg.arch} cannot take the {info.image_size}x{info.image_size} images of "
                         f"{cfg.dataset} ({detail}); choose an architecture that takes them"
                         + (" or an --image-size it takes" if resizable else "")) from None
