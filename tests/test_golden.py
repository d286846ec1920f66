"""Proof that a refactor changed nothing: fixed small runs must write byte-identical weights.

CPU kernels round differently across torch versions, kernel levels (AVX2, AVX-512) and even CPU models of one
level, so the sha256 of model.safetensors for each (arch, method, layout) is recorded per machine kind in
golden_hashes.json, keyed by `machine_key()`. Where this machine's entry exists, any change to the bits fails
the test. Where it is missing, the test fails in CI and skips elsewhere, naming the command that records it:

    python tests/test_golden.py --record                                              # this machine's kernels
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python tests/test_golden.py --record   # its AVX2 kernels

Record on the commit before a refactor, never after it: the point is to prove the refactor kept the bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from iat.config import TrainConfig
from iat.cpu_kernels import cpu_model, kernel_level
from iat.methods import method_names
from iat.rundir import files
from iat.training import train

GOLDEN_FILE = Path(__file__).with_name("golden_hashes.json")
RECORD = "python tests/test_golden.py --record"  # in the environment of the test (ATEN_CPU_CAPABILITY, ...)
CASES = [(arch, method) for arch in ("cnn-small", "mlp6") for method in method_names()]
LAYOUTS = {"cnn-small": ("contiguous", "channels_last"), "mlp6": ("contiguous",)}  # MLPs have no layout


def machine_key() -> str:
    """torch version, kernel level and CPU model: what decides the bits (docs/reproducibility.md)."""
    return f"torch {torch.__version__.split('+')[0]} / {kernel_level()} / {cpu_model()}"


def recorded() -> dict[str, str]:
    """This machine's digests ('arch method layout' -> sha256); a missing entry fails in CI, skips elsewhere."""
    table = json.loads(GOLDEN_FILE.read_text()).get(machine_key())
    if table is None:
        why = f"no golden weights for {machine_key()}: record them with `{RECORD}` and commit {GOLDEN_FILE.name}"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return table


def golden_config(arch: str, method: str, channels_last: bool = False) -> TrainConfig:
    return TrainConfig(method=method, dataset="digits", arch=arch, width=8, epochs=2, batch_size=64, lr=0.1,
                       eps=0.1, step_size=0.025, attack_steps=3, seed=0, device="cpu", train_size=256,
                       lam_per="example" if method.endswith("manifold-mixup") else "batch",
                       channels_last=channels_last)


def train_digest(arch: str, method: str, layout: str, out: Path) -> str:
    """sha256 of the weights of the case, trained with one thread (the caller sets it)."""
    out = train(golden_config(arch, method, channels_last=layout == "channels_last"), out, progress=False)
    return hashlib.sha256((out / files.WEIGHTS).read_bytes()).hexdigest()


@pytest.fixture
def one_thread_here():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("arch, method, layout", [(a, m, lay) for a, m in CASES for lay in LAYOUTS[a]])
def test_weights_are_bit_identical_to_the_recorded_ones(tmp_path, one_thread_here, arch, method, layout):
    expected = recorded().get(f"{arch} {method} {layout}")
    assert expected is not None, f"{arch} {method} {layout} is missing for {machine_key()}: `{RECORD}`"
    assert train_digest(arch, method, layout, tmp_path / "run") == expected, f"{arch} {method} {layout} changed"


def test_every_method_is_covered():
    assert {m for _, m in CASES} == set(method_names())


def record() -> None:
    """Train every case here and write this machine's entry (replacing an older one of the same key)."""
    torch.set_num_threads(1)
    table = json.loads(GOLDEN_FILE.read_text()) if GOLDEN_FILE.exists() else {}
    entry = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (arch, method) in enumerate(CASES):
            for layout in LAYOUTS[arch]:
                entry[f"{arch} {method} {layout}"] = train_digest(arch, method, layout, Path(tmp) / f"{i}-{layout}")
    table[machine_key()] = entry
    GOLDEN_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(entry)} digests for {machine_key()} in {GOLDEN_FILE}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit(f"usage: {RECORD}")
    record()
