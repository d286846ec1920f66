"""An experiment of the paper as a config file: src/iat/experiments/NAME.toml.

Each file has top-level keys naming the experiment (`name`, `title`, `kind`, `methods`, `notes`),
a `[paper]` section with the paper's settings, and a `[smoke]` section whose keys replace those of
`[paper]` for `--scale smoke` (minutes on a CPU). Unknown keys and wrong types are refused with the
file and key named. Eps and step sizes are written `"8/255"` or as floats in [0,1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from iat.attacks import parse_attack_name
from iat.config import TrainConfig
from iat.errors import UsageError
from iat.methods import method_names
from iat.units import parse_eps

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
SCALES = ("paper", "smoke")
# What an experiment measures on its trained runs, and so how its report is laid out.
KINDS = ("whitebox", "transfer", "sweep-eps", "sweep-steps", "norms", "probe")
TOP_KEYS = {"name": str, "title": str, "kind": str, "methods": list, "notes": list, "paper": dict, "smoke": dict}


@dataclass
class Settings:
    """Everything one scale of an experiment needs; None: not used by this experiment's kind."""

    # training, as iat.config.TrainConfig (None: TrainConfig's default)
    dataset: str = ""
    arch: str = ""
    width: int | None = None  # None: the architecture's own width
    epochs: int = 200
    milestones: list[int] | None = None
    lr: float = 0.1
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eps: float = 8 / 255  # training attack radius, images in [0,1]
    step_size: float = 2 / 255  # training PGD step
    attack_steps: int = 7
    mixup_alpha: float = 1.0
    manifold_alpha: float = 2.0
    train_size: int | None = None  # first N training images (None: all)
    # evaluation
    test_size: int | None = None  # first N test images (None: all)
    attacks: list[str] = field(default_factory=list)  # white-box columns: clean, fgsm, pgdN
    eval_eps: float | None = None  # eps of the white-box columns / of a steps sweep
    eval_step_size: float | None = None  # PGD step of the evaluation (None: the robustness suite's default)
    eval_steps: int | None = None  # PGD steps of an eps sweep or a transfer table
    eval_eps_list: list[float] | None = None  # eps of an eps sweep or a transfer table
    eval_steps_list: list[int] | None = None  # steps of a steps sweep
    # random-label probe (Section 3)
    probe_n: int | None = None
    probe_epochs: int | None = None
    probe_hidden: int | None = None
    probe_lr: float | None = None
    probe_batch_size: int | None = None

    def train_config(self, method: str, seed: int, device: str = "auto", data_dir: str | None = None,
                     extra: dict | None = None) -> TrainConfig:
        return TrainConfig(method=method, dataset=self.dataset, arch=self.arch, width=self.width,
                           epochs=self.epochs, milestones=self.milestones, lr=self.lr, batch_size=self.batch_size,
                           momentum=self.momentum, weight_decay=self.weight_decay, eps=self.eps,
                           step_size=self.step_size, attack_steps=self.attack_steps, mixup_alpha=self.mixup_alpha,
                           manifold_alpha=self.manifold_alpha, seed=seed, device=device, data_dir=data_dir,
                           train_size=self.train_size, extra=dict(extra or {})).validate()


EPS_KEYS = {"eps", "step_size", "eval_eps", "eval_step_size"}
INT_LIST_KEYS = {"milestones", "eval_steps_list"}
FLOAT_KEYS = {"lr", "momentum", "weight_decay", "mixup_alpha", "manifold_alpha", "probe_lr"}
INT_KEYS = {"width", "epochs", "batch_size", "attack_steps", "train_size", "test_size", "eval_steps", "probe_n",
            "probe_epochs", "probe_hidden", "probe_batch_size"}
STR_KEYS = {"dataset", "arch"}
SETTING_KEYS = {f.name for f in dataclasses.fields(Settings)}
# Settings each kind must have.
REQUIRED = {
    "whitebox": ("attacks", "eval_eps", "eval_step_size"),
    "transfer": ("eval_eps_list", "eval_steps"),
    "sweep-eps": ("eval_eps_list", "eval_steps"),
    "sweep-steps": ("eval_steps_list", "eval_eps"),
    "norms": (),
    "probe": ("probe_n", "probe_epochs", "probe_hidden", "probe_lr", "probe_batch_size"),
}


@dataclass
class Experiment:
    name: str
    title: str
    kind: str
    methods: list[str]
    notes: list[str]
    scale: str
    settings: Settings  # at this scale
    paper: Settings  # at the paper's scale
    source: Path  # the config file

    def substitutions(self) -> list[tuple[str, object, object]]:
        """(setting, paper's value, this scale's value) for every setting that differs from the paper's."""
        return [(f.name, getattr(self.paper, f.name), getattr(self.settings, f.name))
                for f in dataclasses.fields(Settings)
                if getattr(self.paper, f.name) != getattr(self.settings, f.name)]


def experiment_names() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml"))


def experiment_path(name: str) -> Path:
    """The config file of a named experiment, or `name` itself when it is a .toml file."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"experiment file {name} does not exist")
        return path
    path = EXPERIMENTS_DIR / f"{name}.toml"
    if not path.is_file():
        raise UsageError(f"unknown experiment {name!r}; choose one of: {', '.join(experiment_names())} "
                         "(or give the path of a .toml file)")
    return path


def _setting(path: Path, section: str, key: str, value):
    """Parse and type-check one setting; the error names the file, section and key."""
    where = f"{path.name} [{section}] {key}"

    def bad(expected: str):
        return UsageError(f"{where} = {value!r}: expected {expected}")

    if key == "attacks":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad('a list of attack names like ["clean", "fgsm", "pgd7"]')
        for a in value:
            parse_attack_name(a)
        return list(value)
    if key in EPS_KEYS:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad('an eps like "8/255" or a float in [0,1]')
        return parse_eps(value, where)
    if key == "eval_eps_list":
        if not isinstance(value, list) or not value:
            raise bad('a list of eps like ["1/255", "2/255"]')
        return [parse_eps(v, where) for v in value]
    if key in INT_LIST_KEYS:
        if not isinstance(value, list) or not value or not all(type(v) is int and v >= 1 for v in value):
            raise bad("a list of positive integers")
        return list(value)
    if key in INT_KEYS:
        if type(value) is not int or value < 1:
            raise bad("a positive integer")
        return value
    if key in FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if key in STR_KEYS:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    raise UsageError(f"{where}: unknown setting; valid settings: {', '.join(sorted(SETTING_KEYS))}")


def load_experiment(name: str, scale: str = "paper") -> Experiment:
    """Read, merge ([smoke] over [paper] for scale 'smoke') and check an experiment's config file."""
    if scale not in SCALES:
        raise UsageError(f"--scale {scale!r}: choose one of {', '.join(SCALES)}")
    path = experiment_path(name)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML ({e})") from None
    for key, value in raw.items():
        if key not in TOP_KEYS:
            raise UsageError(f"{path.name}: unknown top-level key {key!r}; valid keys: {', '.join(TOP_KEYS)}")
        if not isinstance(value, TOP_KEYS[key]):
            raise UsageError(f"{path.name}: {key} must be a {TOP_KEYS[key].__name__}")
    for key in ("name", "title", "kind", "methods", "paper"):
        if key not in raw:
            raise UsageError(f"{path.name}: the key {key!r} is missing")
    if raw["kind"] not in KINDS:
        raise UsageError(f"{path.name}: kind {raw['kind']!r}; choose one of {', '.join(KINDS)}")
    methods = raw["methods"]
    unknown = [m for m in methods if m not in method_names()]
    if not methods or unknown:
        raise UsageError(f"{path.name}: methods must be a non-empty list of {', '.join(method_names())}"
                         + (f" (unknown: {unknown[0]!r})" if unknown else ""))
    values = {k: _setting(path, "paper", k, v) for k, v in raw["paper"].items()}
    smoke = {k: _setting(path, "smoke", k, v) for k, v in raw.get("smoke", {}).items()}
    paper = Settings(**values)
    settings = Settings(**{**values, **smoke}) if scale == "smoke" else paper
    missing = [k for k in ("dataset", "arch") + REQUIRED[raw["kind"]] if getattr(settings, k) in (None, "", [])]
    if missing:
        raise UsageError(f"{path.name}: a {raw['kind']} experiment needs the setting {missing[0]!r} "
                         f"(scale {scale})")
    for m in methods:  # the same checks `iat train` makes, before anything runs
        settings.train_config(m, 0)
    notes = raw.get("notes", [])
    if not all(isinstance(n, str) for n in notes):
        raise UsageError(f"{path.name}: notes must be a list of strings")
    return Experiment(name=raw["name"], title=raw["title"], kind=raw["kind"], methods=list(methods),
                      notes=list(notes), scale=scale, settings=settings, paper=paper, source=path)
