"""Nothing a run directory holds can run code when loaded.

Weights come from safetensors; configuration from JSON; the checkpoint from
`torch.load(weights_only=True)`. A checkpoint holding a malicious pickle is refused with one line
(exit 2) and its payload never runs: the payload here would create a marker directory.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import iat
from iat.errors import UsageError
from iat.rundir import files, tensors

SRC = Path(iat.__file__).parent


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Payload:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def torch_saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def malicious_files(marker: Path) -> dict[str, bytes]:
    good = {"w": torch.zeros(2)}
    return {
        "top-level object": torch_saved(Payload(marker)),
        "hidden in the optimizer": torch_saved({"model": good, "optimizer": Payload(marker), "epoch": 0}),
        "hidden deep in a list": torch_saved({"model": good, "metrics": [{"a": [1, Payload(marker)]}]}),
        "plain pickle, protocol 2": pickle.dumps({"model": Payload(marker)}, protocol=2),
        "plain pickle, protocol 5": pickle.dumps({"model": Payload(marker)}, protocol=5),
    }


def test_the_payload_is_real(tmp_path):
    """The positive control: an unsafe loader does run it (so the refusals below mean something)."""
    marker = tmp_path / "pwned"
    blob = malicious_files(marker)["hidden in the optimizer"]
    torch.load(io.BytesIO(blob), weights_only=False)
    assert marker.is_dir()


@pytest.mark.parametrize("kind", list(malicious_files(Path("x"))))
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / files.CHECKPOINT
    path.write_bytes(malicious_files(marker)[kind])
    with pytest.raises(UsageError) as e:
        tensors.load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message and "refused for safety" in message and str(path) in message
    assert "delete" in message  # says what to do
    assert not marker.exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from iat.config import TrainConfig
    from iat.training import train

    cfg = TrainConfig(method="erm", dataset="digits", arch="cnn-small", width=8, epochs=1, train_size=200,
                      batch_size=50, seed=0, device="cpu")
    return train(cfg, tmp_path_factory.mktemp("safe") / "run", progress=False)


@pytest.fixture()
def run_with_malicious_checkpoint(tiny_run, tmp_path):
    """A copy of a finished tiny run, unfinished again, whose checkpoint.pt is a malicious pickle."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / files.WEIGHTS).unlink()
    marker = tmp_path / "pwned"
    (run / files.CHECKPOINT).write_bytes(malicious_files(marker)["hidden in the optimizer"])
    return run, marker


def train_args(run: Path) -> list[str]:
    cfg = files.read_json(run / files.CONFIG)
    return ["train", "--method", cfg["method"], "--dataset", cfg["dataset"], "--arch", cfg["arch"],
            "--width", str(cfg["width"]), "--epochs", str(cfg["epochs"]), "--batch-size", str(cfg["batch_size"]),
            "--lr", str(cfg["lr"]), "--eps", str(cfg["eps"]), "--step-size", str(cfg["step_size"]),
            "--attack-steps", str(cfg["attack_steps"]), "--seed", str(cfg["seed"]), "--device", "cpu",
            "--train-size", str(cfg["train_size"]), "--out", str(run), "--resume"]


def test_resume_from_malicious_checkpoint_exits_2_with_one_line(run_with_malicious_checkpoint):
    run, marker = run_with_malicious_checkpoint
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    done = subprocess.run([sys.executable, "-m", "iat", *train_args(run)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused for safety" in lines[0] and "Traceback" not in done.stderr
    assert not marker.exists()
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing changed


def test_pickle_in_place_of_weights_is_refused(tiny_run, tmp_path):
    """model.safetensors is never unpickled: a pickle there is just a damaged file."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "pwned"
    (run / files.WEIGHTS).write_bytes(torch_saved({"w": Payload(marker)}))
    with pytest.raises(UsageError, match="not a valid safetensors file"):
        iat.load_model(run)
    assert not marker.exists()


def test_the_package_never_unpickles_unsafely():
    """No module of iat calls torch.load without weights_only=True, pickle.load, eval or exec."""
    offenders = []
    unpicklers = {"pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(SRC)}:{node.lineno}" if hasattr(node, "lineno") else str(path)
            # an alias would hide a call from the checks below: no `from torch import load`, no `import pickle as p`
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in unpicklers | {"torch"}:
                hidden = [a.name for a in node.names if a.name in ("load", "loads", "Unpickler", "*")]
                if hidden or (node.module or "").split(".")[0] in unpicklers:
                    offenders.append(f"{where} from {node.module} import {', '.join(a.name for a in node.names)}")
            if isinstance(node, ast.Import):
                offenders += [f"{where} import {a.name} as {a.asname}" for a in node.names  # plain `import pickle`
                              if a.asname and (a.name.split(".")[0] in unpicklers
                                               or a.name in ("torch", "torch.serialization"))]  # is checked below
            if isinstance(node, ast.Attribute) and node.attr == "Unpickler":
                offenders.append(f"{where} an Unpickler")
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) and f.value.attr == "serialization":
                owner = "torch"  # torch.serialization.load is torch.load
            if owner == "torch" and name == "load":
                safe = [k for k in node.keywords if k.arg == "weights_only"]
                if not (safe and isinstance(safe[0].value, ast.Constant) and safe[0].value.value is True):
                    offenders.append(f"{where} torch.load without weights_only=True")
            if owner in unpicklers and name in ("load", "loads"):
                offenders.append(f"{where} {owner}.{name}")
            if isinstance(f, ast.Name) and name in ("eval", "exec", "__import__"):
                offenders.append(f"{where} {name}()")
            if owner in ("np", "numpy") and name == "load":
                if not any(k.arg == "allow_pickle" and getattr(k.value, "value", None) is False
                           for k in node.keywords):
                    offenders.append(f"{where} np.load without allow_pickle=False")
    assert offenders == []
