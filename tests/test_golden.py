"""Proof that a refactor changed nothing: fixed small runs must write byte-identical weights.

The sha256 of model.safetensors for each (arch, method) was recorded before the training loop was
split into pieces (issue 8), in the contiguous layout (the default then); GOLDEN_CHANNELS_LAST pins
the default that followed, channels_last for convolutional models, recorded when it became the
default. CPU kernels differ across CPU capabilities and torch versions, so the test runs only where
the values were recorded; there, any change to the bits fails it.
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from iat import runio
from iat.config import TrainConfig
from iat.methods import method_names
from iat.train import train

RECORDED_ON = ("2.14.1", "AVX512")  # torch version (without the local part), CPU capability

GOLDEN = {
    ("cnn-small", "erm"): "41a11dbaf95f35253941d2e8a90545b10495a8ab602773688f21132998e284db",
    ("cnn-small", "mixup"): "5ed4bd9c08bc878048867eb071e3b56149785cafd6ba6d6164a835a19d7c1547",
    ("cnn-small", "manifold-mixup"): "06192fe783bb9b982eb50367363db345c7ffcc9de4b205584372154cecea93f5",
    ("cnn-small", "pgd"): "6bb48ed8aa99f120870b1b7fe9ef050b31d0f158c5d8cf0eeec00a61bb4098f9",
    ("cnn-small", "iat-mixup"): "b3193384ae0518d3989f08e612ee7eeed40111e9d841adc992d1dbd879f03e61",
    ("cnn-small", "iat-manifold-mixup"): "be27bcc17ef55abb333a9b53887f899cc520a116886d6da07b2b036855f6fb33",
    ("mlp6", "erm"): "5c74acec8f53abf5778c520486ec0695e5e29772d04c6e3c6dc57f94aab99086",
    ("mlp6", "mixup"): "e1b43394b1593bcc9123aa5c0cee89c3f90863dd5bdff9dc89765ef524853b4e",
    ("mlp6", "manifold-mixup"): "1f899fa7761b224ecfbc1b19533ba5b37ad97ac4a1447e1a8e37dc8b0bba70d2",
    ("mlp6", "pgd"): "946b7b631ed08c01e12046803a15d1d5748f1c5c5dbf0fbdb8015baf4d225fbf",
    ("mlp6", "iat-mixup"): "656673e3a007acf2ad25ce0ef1cbe52095db12f65f2f0a9fbcf82ce86da60d14",
    ("mlp6", "iat-manifold-mixup"): "20b6774cc9bcb78c781ac5451ceb7717ab16e52302ca18210e025105bc18477b",
}


def _here() -> tuple[str, str]:
    return torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability()


pytestmark = pytest.mark.skipif(
    _here() != RECORDED_ON,
    reason=f"golden weights were recorded on torch {RECORDED_ON[0]} with CPU capability {RECORDED_ON[1]}; "
    f"this is torch {_here()[0]} with {_here()[1]}, whose kernels give other bits",
)


GOLDEN_CHANNELS_LAST = {
    ("cnn-small", "erm"): "18f5f7c1d95caeb452c54662164c9633e3c694c5dfc046d7d73c2e08a0db0968",
    ("cnn-small", "mixup"): "45cfa845cb21f423b81e67368a1453fc6d1e8c994f9d18039ddd3a4f8f7cdebc",
    ("cnn-small", "manifold-mixup"): "450f521dc69c3119343cdf9a59617140fd636b2ad069498ec0e1b47b23290728",
    ("cnn-small", "pgd"): "62ad4224498991d793de685b0c19e800d9aa4e584fd8aaa04de73c8b3c5aebce",
    ("cnn-small", "iat-mixup"): "2d5533f475b1e3e0759788c2645c61ea0902dfa42d12c9c9e3c4b473a194a188",
    ("cnn-small", "iat-manifold-mixup"): "d0e0d124edba6e1c37a8f50f639d1ae936cda84e612f9340e15e35839e83f206",
}


def golden_config(arch: str, method: str, channels_last: bool = False) -> TrainConfig:
    return TrainConfig(method=method, dataset="digits", arch=arch, width=8, epochs=2, batch_size=64, lr=0.1,
                       eps=0.1, step_size=0.025, attack_steps=3, seed=0, device="cpu", train_size=256,
                       lam_per="example" if method.endswith("manifold-mixup") else "batch",
                       channels_last=channels_last)


@pytest.fixture
def one_thread_here():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("arch, method", list(GOLDEN))
def test_weights_are_bit_identical_to_the_recorded_ones(tmp_path, one_thread_here, arch, method):
    out = train(golden_config(arch, method), tmp_path / "run", progress=False)
    digest = hashlib.sha256((out / runio.WEIGHTS).read_bytes()).hexdigest()
    assert digest == GOLDEN[arch, method], f"{arch} {method}: the trained weights changed"


@pytest.mark.parametrize("arch, method", list(GOLDEN_CHANNELS_LAST))
def test_channels_last_weights_are_bit_identical_to_the_recorded_ones(tmp_path, one_thread_here, arch, method):
    out = train(golden_config(arch, method, channels_last=True), tmp_path / "run", progress=False)
    digest = hashlib.sha256((out / runio.WEIGHTS).read_bytes()).hexdigest()
    assert digest == GOLDEN_CHANNELS_LAST[arch, method], f"{arch} {method} channels_last: the trained weights changed"


def test_every_method_is_covered():
    assert sorted({m for _, m in GOLDEN}) == sorted(method_names())
    assert sorted({m for _, m in GOLDEN_CHANNELS_LAST}) == sorted(method_names())
