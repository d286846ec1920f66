"""A trained run as files that need no `iat`: a `torch.export` program, its weights, and a model card.

`export_run` writes three files side by side:

- FILE.pt2: the network's plain forward (no mixing), normalization inside: images (N, C, H, W) in [0,1] ->
  logits, any batch size. `torch.export.load(FILE).module()(x)` needs torch only.
- FILE.safetensors: the same weights under iat's parameter names (`iat.load_model` rebuilds the module).
- README.md: the model card: data set, method, eps, clean / PGD-20 / AutoAttack numbers from eval.json with
  their image counts, and the `iat train` command that trained it.

    paths = export_run("runs/pgd", "exported/pgd.pt2")
"""

from __future__ import annotations

import dataclasses
import io
import shlex
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from iat.config import TrainConfig, flag
from iat.errors import UsageError
from iat.rundir import files, outdir
from iat.rundir.read import WEIGHT_FILES, load_run_config, load_run_model
from iat.units import format_eps

SUFFIX = ".pt2"
CARD = "README.md"
CARD_MARK = "<!-- written by `iat export` -->"  # a README.md without it is the user's: never overwritten
CARD_ATTACKS = (("clean", "clean"), ("pgd20", "PGD-20"), ("autoattack", "AutoAttack"))
MAX_ABS_DIFF = 1e-4  # exported vs eager logits on the check batch: the same kernels, so only op-order rounding


@dataclass(frozen=True)
class Exported:
    """The files `export_run` wrote."""

    program: Path  # FILE.pt2
    weights: Path  # FILE.safetensors
    card: Path  # README.md


class PlainForward(nn.Module):
    """The model's forward with mixing off: the one signature `torch.export` traces (x -> logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_paths(out: str | Path) -> Exported:
    """The three paths an export to `out` (FILE.pt2) writes; UsageError for a path that cannot be one."""
    out = outdir.check_path(out, "--out")
    if out.suffix != SUFFIX:
        raise UsageError(f"--out {out} must end in {SUFFIX} (torch.export's file type), e.g. --out model.pt2")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file path ending in {SUFFIX}")
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a directory; choose another path")
    paths = Exported(out, out.with_suffix(".safetensors"), parent / CARD)
    if paths.card.is_file() and CARD_MARK not in _head(paths.card):
        raise UsageError(f"{paths.card} exists and was not written by `iat export`; export into another folder "
                         "(the model card is written as README.md beside the .pt2 file)")
    for p in (paths.weights, paths.card):
        if p.is_dir():
            raise UsageError(f"{p} is a directory; `iat export` writes a file there: choose another --out")
    return paths


def _head(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(4096)
    except OSError:
        return ""


def export_run(run_dir: str | Path, out: str | Path, weights: str = "last") -> Exported:
    """Export the run in `run_dir` (its `weights`: 'last' or 'ema') to `out` (FILE.pt2) and the files beside it.

    Everything is built and checked in memory first (the program's logits must match the model's); only then
    are the files written, each atomically, so a refused or failed export leaves no new file behind.
    """
    run_dir = Path(run_dir)
    paths = export_paths(out)
    cfg = load_run_config(run_dir)
    config = files.read_json(run_dir / files.CONFIG)
    model = load_run_model(run_dir, "cpu", weights)
    shape = (int(config.get("in_channels", 1)), int(config.get("image_size") or 0))
    program = export_program(model, shape[0], shape[1])
    weights_blob = safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    card = model_card(run_dir, cfg, config, paths, weights)
    outdir.make_dir(paths.program.parent)
    files.atomic_write_bytes(paths.program, program)
    files.atomic_write_bytes(paths.weights, weights_blob)
    files.atomic_write_bytes(paths.card, card.encode())
    return paths


def export_program(model: nn.Module, channels: int, side: int) -> bytes:
    """`torch.export.save`'s bytes of the model's plain forward, batch size free; checked against eager logits."""
    if side < 1:
        raise UsageError("the run's config.json records no image_size; the file is damaged: restore it")
    wrapped = PlainForward(model).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, channels, side, side, generator=generator)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with torch.no_grad():
            program = torch.export.export(wrapped, (x,), dynamic_shapes={"x": {0: batch}})
    except Exception as e:  # torch.export's many error types: a model it cannot trace is not bad input of ours
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise RuntimeError(f"torch.export could not trace the model ({detail})") from e
    check = torch.rand(5, channels, side, side, generator=generator)
    with torch.no_grad():
        diff = (program.module()(check) - wrapped(check)).abs().max().item()
    if not diff <= MAX_ABS_DIFF:
        raise RuntimeError(f"the exported program's logits differ from the model's by {diff:.3g} (at most "
                           f"{MAX_ABS_DIFF} expected); this is a bug: please report it with the command")
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ model card


def train_command(cfg: TrainConfig, out: str) -> str:
    """The `iat train` command line that makes `cfg`: its required flags and every option off its default."""
    parts = ["iat", "train"]
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":  # provenance, not a flag
            continue
        value, default = getattr(cfg, f.name), f.default
        if f.name in ("method", "dataset", "arch") or value != default:
            parts += _flag_words(f.name, value, default)
    return shlex.join([*parts, "--out", out])


def _flag_words(name: str, value: object, default: object) -> list[str]:
    if isinstance(value, bool):
        return [flag(name)] if value else ["--no-" + flag(name)[2:]]
    if isinstance(value, (list, tuple)):
        return [flag(name), ",".join(str(v) for v in value)]
    return [flag(name), str(value)]


def eval_numbers(run_dir: Path, eps: float, weights: str) -> dict[str, dict]:
    """Per attack of the card: the eval.json entry at the run's eps on the most images (clean: at any eps)."""
    try:
        report = files.read_json(run_dir / files.EVAL) if (run_dir / files.EVAL).is_file() else {}
    except UsageError:
        return {}  # a damaged eval.json: the card says the run is not evaluated
    history = report.get("history", []) if isinstance(report, dict) else []
    best: dict[str, dict] = {}
    for entry in history if isinstance(history, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("error"), (int, float)):
            continue
        name = entry.get("attack")
        if (entry.get("weights") or "last") != weights or not isinstance(entry.get("n_examples"), int):
            continue
        if name != "clean" and not (isinstance(entry.get("eps"), (int, float)) and abs(entry["eps"] - eps) < 1e-9):
            continue
        if name not in best or entry["n_examples"] > best[name]["n_examples"]:
            best[name] = entry
    return best


def model_card(run_dir: Path, cfg: TrainConfig, config: dict, paths: Exported, weights: str) -> str:
    """README.md for the exported files (Markdown)."""
    c, side, k = config.get("in_channels"), config.get("image_size"), config.get("num_classes")
    numbers = eval_numbers(run_dir, cfg.eps, weights)
    rows = []
    for key, label in CARD_ATTACKS:
        e = numbers.get(key)
        if e is None:
            rows.append(f"| {label} | not measured | |")
        else:
            eps_text = "" if key == "clean" else f", eps {format_eps(e['eps'])}"
            rows.append(f"| {label} | {100 - e['error']:.2f} | {e['n_examples']:,} test images{eps_text} |")
    missing = [key for key, _ in CARD_ATTACKS if key not in numbers]
    hint = (f"\nMeasure the missing ones with `iat eval {shlex.quote(str(run_dir))} --attacks {','.join(missing)}`, "
            "then export again.\n" if missing else "")
    program, weights_file = paths.program.name, paths.weights.name
    return f"""{CARD_MARK}
# {cfg.method} {cfg.arch} on {cfg.dataset}

Trained with iat (Interpolated Adversarial Training): method `{cfg.method}`,
architecture `{cfg.arch}`, data set `{cfg.dataset}`, L-inf eps {format_eps(cfg.eps)} on images in [0,1],
{cfg.epochs} epochs, seed {cfg.seed}; exported weights: {"averaged (EMA)" if weights == "ema" else "final"}.

## Files

- `{program}`: the network as a `torch.export` program; needs torch only, not iat.
  Input: float images (N, {c}, {side}, {side}) in [0,1], any N (normalization is inside). Output: logits (N, {k}).
- `{weights_file}`: the same weights (safetensors), under iat's parameter names (`{WEIGHT_FILES[weights]}` of the run).

```python
import torch
model = torch.export.load("{program}").module()
logits = model(torch.rand(8, {c}, {side}, {side}))
```

## Accuracy (%, from the run's eval.json)

| attack | accuracy | on |
|---|---|---|
{chr(10).join(rows)}
{hint}
## How it was trained

```
{train_command(cfg, str(run_dir))}
```

iat {config.get("iat_version", "?")}, torch {config.get("torch_version", "?")}.
"""
