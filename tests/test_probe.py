"""The random-label probe (Section 3): capacity and training time show in its accuracy; the command."""

from __future__ import annotations

import json

import pytest
import torch

from iat.analysis.probe import fit_random_labels, random_binary_labels, standardize
from iat.cli import main

N, D = 500, 16


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    """A tiny 'representation': N points in D dimensions, independent of the labels."""
    return torch.randn(N, D, generator=torch.Generator().manual_seed(0))


def fit(features, hidden=256, epochs=100):
    return fit_random_labels(features, random_binary_labels(N, 0), hidden=hidden, epochs=epochs, lr=1e-2,
                             batch_size=100, seed=0)


def test_a_larger_mlp_fits_random_labels_better(features):
    small, large = fit(features, hidden=4), fit(features, hidden=256)
    assert large > small + 15, (small, large)
    assert large > 90


def test_fewer_epochs_fit_random_labels_worse(features):
    short, long = fit(features, epochs=5), fit(features, epochs=100)
    assert long > short + 15, (short, long)


def test_the_probe_is_deterministic_and_leaves_the_global_rng_alone(features):
    state = torch.get_rng_state()
    a = fit(features, hidden=16, epochs=10)
    assert torch.equal(torch.get_rng_state(), state)
    assert fit(features, hidden=16, epochs=10) == a


def test_random_labels_are_fixed_binary_and_balanced():
    y = random_binary_labels(10_000, seed=0)
    assert torch.equal(y, random_binary_labels(10_000, seed=0))
    assert not torch.equal(y, random_binary_labels(10_000, seed=1))
    assert set(y.unique().tolist()) == {0, 1} and abs(y.float().mean().item() - 0.5) < 0.02


def test_standardize_removes_scale_but_keeps_shape(features):
    z = standardize(features * 1000 + 5)
    assert torch.allclose(z, standardize(features), atol=1e-5)
    assert z.pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(z.mean(0), torch.zeros(D), atol=1e-5)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import tiny_config

    from iat.training import train

    return str(train(tiny_config("erm", epochs=1), tmp_path_factory.mktemp("probe-run") / "erm", progress=False))


def test_analyze_probe_command(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "probe", run_dir, "--n", "300", "--epochs", "5", "--hidden", "32", "--out", str(out),
                 "-q"]) == 0
    result = json.loads((out / "probe.json").read_text())
    assert result["n"] == 300 and result["epochs"] == 5
    r = result["runs"][run_dir]
    assert 0 <= r["accuracy"] <= 100 and r["n_examples"] == 300 and r["dim"] == 32  # cnn-small width 8: 4*8
    assert "random labels fitted" in capsys.readouterr().out


def test_analyze_probe_refuses_bad_input_before_any_output(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:  # refused by argparse
        main(["analyze", "probe", run_dir, "--n", "0", "--out", str(out)])
    assert e.value.code == 2
    assert main(["analyze", "probe", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
    assert not out.exists()


def test_the_probe_reseeds_no_cuda_generator(features, monkeypatch):
    # torch.manual_seed would reseed every CUDA generator (lazily, so invisible on a CPU): record any
    # reseed of a CUDA generator, and check the CPU state is left as it was.
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(("all", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append(("current", seed)))
    state = torch.get_rng_state()
    fit_random_labels(features, random_binary_labels(len(features), 0), hidden=8, epochs=2, seed=5)
    assert reseeded == [] and torch.equal(torch.get_rng_state(), state)
