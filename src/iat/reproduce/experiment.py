"""An experiment of the paper as a config file: src/iat/experiments/NAME.toml.

Each file has top-level keys naming the experiment (`name`, `title`, `kind`, `methods`, `notes`),
a `[paper]` section with the paper's settings, and a `[smoke]` section whose keys replace those of
`[paper]` for `--scale smoke` (minutes on a CPU). An optional `[variants.NAME]` table names a run that is a
method with some training settings of its own (`method = "pgd"`, `awp = 0.01`; an inline `smoke = {...}` table
replaces some of them at smoke scale); `methods` may list such names beside the methods, and each gets its own
run directory and report row (`NAME-seedK/`). The training settings are overrides of
iat.config.TrainConfig: its fields, its defaults for any key a file leaves out, its checks. Unknown keys
and wrong types are refused with the file and key named. Eps and step sizes are written `"8/255"` or as
floats in [0,1]. `iat demo` is one more such file, experiments/demo.toml.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from iat.attacks import parse_attack_name
from iat.config import TrainConfig, choices_of, old_switch
from iat.errors import UsageError
from iat.methods import method_names
from iat.units import parse_eps

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
SCALES = ("paper", "smoke")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # an experiment's name: one plain directory-name part
DEMO = "demo"  # experiments/demo.toml, run by `iat demo`
# What an experiment measures on its trained runs, and so how its report is laid out.
KINDS = ("whitebox", "transfer", "sweep-eps", "sweep-steps", "norms", "probe")
TOP_KEYS = {"name": str, "title": str, "kind": str, "methods": list, "notes": list, "paper": dict, "smoke": dict,
            "variants": dict}
# A variant's name: it becomes a run directory name and a report row, and holds '+' as in "pgd+awp".
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9+._-]{0,63}")


# A run's own options, not an experiment's: the runner sets them for each run or each call.
PER_RUN = ("method", "seed", "device", "data_dir", "download", "extra")
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in PER_RUN)


def _copy_field(f: dataclasses.Field) -> tuple:
    default = (dataclasses.field(default=f.default) if f.default is not dataclasses.MISSING
               else dataclasses.field(default_factory=f.default_factory))
    return f.name, f.type, default


# Training settings are TrainConfig's own fields and defaults: a default changed there reaches every experiment.
TrainSettings = dataclasses.make_dataclass(
    "TrainSettings", [_copy_field(f) for f in dataclasses.fields(TrainConfig) if f.name in TRAIN_KEYS])
TrainSettings.__module__ = __name__


@dataclass
class Settings(TrainSettings):
    """One scale of an experiment: overrides of TrainConfig's fields, and what is measured on the runs.
    None: not used by this experiment's kind."""

    # evaluation
    test_size: int | None = None  # first N test images (None: all)
    attacks: list[str] = field(default_factory=list)  # white-box columns: clean, fgsm, pgdN
    eval_eps: float | None = None  # eps of the white-box columns / of a steps sweep
    eval_step_size: float | None = None  # PGD step of the evaluation (None: the robustness suite's default)
    eval_steps: int | None = None  # PGD steps of an eps sweep or a transfer table
    eval_eps_list: list[float] | None = None  # eps of an eps sweep or a transfer table
    eval_steps_list: list[int] | None = None  # steps of a steps sweep
    # standard AutoAttack (the optional extra) on the first N test images, beside PGD-20 on the same N;
    # None: not run. It costs ~1 s per robust image on a CPU core, so it runs on a subset.
    autoattack_limit: int | None = None
    # random-label probe (Section 3)
    probe_n: int | None = None
    probe_epochs: int | None = None
    probe_hidden: int | None = None
    probe_lr: float | None = None
    probe_batch_size: int | None = None

    def train_config(self, method: str, seed: int, device: str = "auto", data_dir: str | None = None,
                     extra: dict | None = None) -> TrainConfig:
        return TrainConfig(method=method, seed=seed, device=device, data_dir=data_dir, extra=dict(extra or {}),
                           **{k: getattr(self, k) for k in TRAIN_KEYS}).validate()


EPS_KEYS = {"eps", "step_size", "eval_eps", "eval_step_size"}
FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
DEFAULTS = dataclasses.asdict(Settings())
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
    smoke_dataset: str | None = None  # the data set of its smoke scale (None: it has none)
    # {variant name: {"method": a method, "settings": its training settings at this scale}}
    variants: dict[str, dict] = field(default_factory=dict)

    def method_of(self, entry: str) -> str:
        """The training method of an entry of `methods`: itself, or the method its variant names."""
        return self.variants[entry]["method"] if entry in self.variants else entry

    def run_config(self, entry: str, seed: int, device: str = "auto", data_dir: str | None = None,
                   extra: dict | None = None) -> TrainConfig:
        """The TrainConfig of one run of an entry of `methods` (a method or a variant), checked."""
        variant = self.variants.get(entry)
        settings = dataclasses.replace(self.settings, **variant["settings"]) if variant else self.settings
        return settings.train_config(self.method_of(entry), seed, device, data_dir, extra)

    def check(self) -> None:
        """The same checks `iat train` makes, for every method and variant, before anything runs."""
        for m in self.methods:
            try:
                self.run_config(m, 0)
            except UsageError as e:
                where = f" [variants.{m}]" if m in self.variants else ""
                raise UsageError(f"{self.source.name}{where}: {e}") from None

    def override(self, methods: list[str] | None = None, **settings) -> Experiment:
        """This experiment with some settings (and its methods) replaced, as a command line asks; checked."""
        unknown = [k for k in settings if k not in FIELDS]
        if unknown:
            raise UsageError(f"{self.source.name}: unknown setting {unknown[0]!r}")
        exp = dataclasses.replace(self, methods=list(methods or self.methods),
                                  settings=dataclasses.replace(self.settings, **settings))
        exp.check()
        return exp

    def substitutions(self) -> list[tuple[str, object, object]]:
        """(setting, paper's value, this scale's value) for every setting that differs from the paper's."""
        return [(f.name, getattr(self.paper, f.name), getattr(self.settings, f.name))
                for f in dataclasses.fields(Settings)
                if getattr(self.paper, f.name) != getattr(self.settings, f.name)]


def experiment_names() -> list[str]:
    """The paper's experiments; `iat demo` runs its own file (demo.toml) through the same runner."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.toml") if p.stem != DEMO)


def experiment_path(name: str) -> Path:
    """The config file of a named experiment, or `name` itself when it is a .toml file."""
    if "\0" in name:
        raise UsageError(f"experiment {name!r} holds a NUL byte; give a name or the path of a .toml file")
    if name.endswith(".toml"):
        path = Path(name)
        try:
            found = path.is_file()
        except OSError as e:  # a name longer than the file system takes
            raise UsageError(f"experiment file {name[:80]}... cannot be read ({e.strerror or e})") from None
        if not found:
            raise UsageError(f"experiment file {name} does not exist")
        return path
    if not NAME.fullmatch(name):
        raise UsageError(f"unknown experiment {name[:80]!r}; choose one of: {', '.join(experiment_names())} "
                         "(or give the path of a .toml file)")
    path = EXPERIMENTS_DIR / f"{name}.toml"
    if not path.is_file():
        raise UsageError(f"unknown experiment {name!r}; choose one of: {', '.join(experiment_names())} "
                         "(or give the path of a .toml file)")
    return path


def _setting(path: Path, section: str, key: str, value):
    """Parse and type-check one setting by the type its field declares; the error names the file, section
    and key. Ranges are TrainConfig.validate's to check (once, in load_experiment)."""
    where = f"{path.name} [{section}] {key}"

    def bad(expected: str):
        return UsageError(f"{where} = {value!r}: expected {expected}")

    if key not in FIELDS:
        raise UsageError(f"{where}: unknown setting; valid settings: {', '.join(sorted(FIELDS))}")
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
    if key == "aux_data" and isinstance(value, str) and not Path(value).is_absolute() \
            and (path.parent / value).is_file():
        return str((path.parent / value).resolve())  # a file shipped beside the experiment (its smoke stand-in)
    if key == "eval_eps_list":
        if not isinstance(value, list) or not value:
            raise bad('a list of eps like ["1/255", "2/255"]')
        return [parse_eps(v, where) for v in value]
    kind = str(FIELDS[key].type).replace(" ", "").replace("|None", "")
    if kind == "list[int]":
        if not isinstance(value, list) or not value or not all(type(v) is int and v >= 1 for v in value):
            raise bad("a list of positive integers")
        return list(value)
    if kind == "int":
        least = 0 if DEFAULTS[key] == 0 else 1  # e.g. checkpoint_every: 0 means never
        if type(value) is not int or value < least:
            raise bad("a positive integer" if least else "an integer >= 0")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind.startswith("Literal"):  # one of a few words (speed, co_guard, attack_precision, ...)
        words = choices_of(FIELDS[key])
        if value not in words:
            raise bad(f"one of {', '.join(map(repr, words))}")
        return value
    value = old_switch(key, value, where)  # tf32 = "on" of 0.1.0: a deprecation line, read as true
    if kind in ("str", "bool"):
        if type(value).__name__ != kind:
            raise bad("a string" if kind == "str" else "true or false")
        return value
    raise UsageError(f"{where}: cannot be set in an experiment file")


def _variants(path: Path, raw: dict, scale: str) -> dict[str, dict]:
    """[variants.NAME] tables: a method and training settings (not evaluation ones: every row of a table is
    measured alike), with an optional `smoke` table over them at smoke scale."""
    variants = {}
    for name, table in raw.items():
        where = f"{path.name} [variants.{name}]"
        if not VARIANT_NAME.fullmatch(name) or name in method_names():
            raise UsageError(f"{where}: a variant's name must be lower-case letters, digits, '+', '.', '_' or '-' "
                             "(at most 64) and not a method's name, as it becomes a run directory's name")
        if not isinstance(table, dict) or table.get("method") not in method_names():
            raise UsageError(f"{where}: needs method = one of {', '.join(method_names())}")
        smoke = table.get("smoke", {})
        if not isinstance(smoke, dict):
            raise UsageError(f"{where} smoke: expected a table of settings, like smoke = {{ awp_warmup = 1 }}")
        own = {}
        for section, values in ((f"variants.{name}", table), (f"variants.{name}.smoke", smoke)):
            for key, value in values.items():
                if key in ("method", "smoke") and section == f"variants.{name}":
                    continue
                if key not in TRAIN_KEYS:
                    raise UsageError(f"{path.name} [{section}] {key}: not a training setting; a variant may set "
                                     f"{', '.join(TRAIN_KEYS)}")
                if section.endswith(".smoke") and scale != "smoke":
                    _setting(path, section, key, value)  # checked at every scale, used at smoke scale only
                    continue
                own[key] = _setting(path, section, key, value)
        variants[name] = {"method": table["method"], "settings": own}
    return variants


def load_experiment(name: str, scale: str = "paper") -> Experiment:
    """Read, merge ([smoke] over [paper] for scale 'smoke') and check an experiment's config file."""
    if scale not in SCALES:
        raise UsageError(f"--scale {scale!r}: choose one of {', '.join(SCALES)}")
    path = experiment_path(name)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML ({e})") from None
    except UnicodeDecodeError as e:  # TOML is UTF-8: a title in Latin-1, a binary file
        raise UsageError(f"{path} is not valid TOML (not UTF-8 text: byte {e.object[e.start]:#04x} at offset "
                         f"{e.start})") from None
    except OSError as e:
        raise UsageError(f"{path} cannot be read ({e.strerror or e})") from None
    for key, value in raw.items():
        if key not in TOP_KEYS:
            raise UsageError(f"{path.name}: unknown top-level key {key!r}; valid keys: {', '.join(TOP_KEYS)}")
        if not isinstance(value, TOP_KEYS[key]):
            raise UsageError(f"{path.name}: {key} must be a {TOP_KEYS[key].__name__}")
    for key in ("name", "title", "kind", "methods", "paper"):
        if key not in raw:
            raise UsageError(f"{path.name}: the key {key!r} is missing")
    if not NAME.fullmatch(raw["name"]):  # it names OUT's default, reproduce-NAME: a path there writes elsewhere
        raise UsageError(f"{path.name}: name {raw['name'][:80]!r} must be letters, digits, '.', '_' or '-' "
                         "(at most 100, starting with a letter or digit), as it becomes a directory name")
    if raw["kind"] not in KINDS:
        raise UsageError(f"{path.name}: kind {raw['kind']!r}; choose one of {', '.join(KINDS)}")
    methods = raw["methods"]
    variants = _variants(path, raw.get("variants", {}), scale)
    unknown = [m for m in methods if m not in method_names() and m not in variants]
    if not methods or unknown or len(set(methods)) < len(methods):
        raise UsageError(f"{path.name}: methods must be a non-empty list, without repeats, of "
                         f"{', '.join(method_names())}" + (" or the names in [variants]" if variants else "")
                         + (f" (unknown: {unknown[0]!r})" if unknown else ""))
    values = {k: _setting(path, "paper", k, v) for k, v in raw["paper"].items()}
    smoke = {k: _setting(path, "smoke", k, v) for k, v in raw.get("smoke", {}).items()}
    merged = {**values, **smoke} if scale == "smoke" else values
    # TrainConfig's defaults stand for anything else, but which data and network an experiment is about never
    missing = [k for k in ("dataset", "arch") if k not in merged]
    missing += [k for k in REQUIRED[raw["kind"]] if merged.get(k) in (None, "", [])]
    if missing:
        raise UsageError(f"{path.name}: a {raw['kind']} experiment needs the setting {missing[0]!r} "
                         f"(scale {scale})")
    notes = raw.get("notes", [])
    if not all(isinstance(n, str) for n in notes):
        raise UsageError(f"{path.name}: notes must be a list of strings")
    exp = Experiment(name=raw["name"], title=raw["title"], kind=raw["kind"], methods=list(methods),
                     notes=list(notes), scale=scale, settings=Settings(**merged), paper=Settings(**values),
                     source=path, smoke_dataset=smoke.get("dataset", values["dataset"]) if "smoke" in raw else None,
                     variants=variants)
    exp.check()
    return exp
