"""Shared fixtures: tiny models trained on scikit-learn's digits, once per test session."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from iat.config import TrainConfig
from iat.models import create_model
from iat.training import train

torch.set_num_threads(2)

# Digits images are 8x8 in [0,1]; eps 0.1 is a real but beatable threat there.
DIGITS_EPS = 0.1
DIGITS_STEP = 0.025


def tiny_config(method: str = "erm", **overrides) -> TrainConfig:
    """A cnn-small of width 8 on digits: a few seconds per epoch on a CPU."""
    kw = dict(method=method, dataset="digits", arch="cnn-small", width=8, epochs=4, batch_size=64,
              lr=0.1, eps=DIGITS_EPS, step_size=DIGITS_STEP, attack_steps=5, seed=0, device="cpu")
    kw.update(overrides)
    return TrainConfig(**kw)


def step_config(**overrides) -> TrainConfig:
    """A cnn-small of width 4 on 64 digits, IAT-Mixup with PGD-2: one training step in milliseconds."""
    base = dict(method="iat-mixup", dataset="digits", arch="cnn-small", width=4, epochs=1, batch_size=32,
                train_size=64, eps=0.1, step_size=0.025, attack_steps=2, seed=0, device="cpu")
    return TrainConfig(**{**base, **overrides}).validate()


@pytest.fixture
def batch():
    """32 digits-sized images in [0,1] with labels; 8 of them at the box's edges (all 0 or all 1), where
    an attack's clip to [0,1] must hold too."""
    torch.manual_seed(0)
    x = torch.rand(32, 1, 8, 8)
    x[:4] = 0.0
    x[4:8] = 1.0
    return x, torch.randint(0, 10, (32,))


@pytest.fixture
def model():
    """An untrained cnn-small of width 8 for 8x8 images, seeded."""
    torch.manual_seed(0)
    return create_model("cnn-small", in_channels=1, num_classes=10, width=8)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict[str, Path]:
    """Run directories of `erm` and `pgd` trained on digits (10 epochs each), shared by all tests.

    Tests must not write into them; copy one first.
    """
    logging.getLogger("iat").setLevel(logging.WARNING)
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for method in ("erm", "pgd"):
        runs[method] = train(tiny_config(method, epochs=10), root / method, progress=False)
    return runs


@pytest.fixture
def channels_last_allowed(monkeypatch):
    """channels_last on this CPU whatever its kernels (iat.cpu_kernels allows it only with AVX-512 ones), for
    tests of that layout's own path on models whose shapes every kernel level handles."""
    import iat.training.model_prep

    monkeypatch.setattr(iat.training.model_prep, "channels_last_helps", lambda device: True)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: tiny models gain nothing from more, and on a busy
    2-core machine extra threads make attacks several times slower. The old count is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
