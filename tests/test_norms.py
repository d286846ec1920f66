"""Weight norms (Section 4.4, Figure 1): exact values, forward order, every architecture, the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from iat.analysis.norms import as_matrix, layer_norms, matrix_norms, weight_layers
from iat.cli import main
from iat.models import create_model, model_names

SHAPES = [(7, 5), (5, 7), (1, 9), (9, 1), (64, 64), (10, 512)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("shape", SHAPES)
def test_spectral_norm_is_the_largest_singular_value(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))
    _, spectral = matrix_norms(w)
    singular = np.linalg.svd(w.double().numpy(), compute_uv=False)
    assert spectral == pytest.approx(singular.max(), rel=1e-12)
    # and it is what it means: max ||W v|| over unit v, reached at the top right-singular vector
    v = torch.from_numpy(np.linalg.svd(w.double().numpy())[2][0])
    assert torch.linalg.vector_norm(w.double() @ v).item() == pytest.approx(spectral, rel=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_frobenius_norm_identities(shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(1 + sum(shape)))
    frobenius, spectral = matrix_norms(w)
    singular = np.linalg.svd(w.double().numpy(), compute_uv=False)
    assert frobenius == pytest.approx(math.sqrt(float((w.double() ** 2).sum())), rel=1e-12)  # sqrt(sum w^2)
    assert frobenius**2 == pytest.approx(float((singular**2).sum()), rel=1e-10)  # sum of squared singular values
    assert frobenius**2 == pytest.approx(torch.trace(w.double().T @ w.double()).item(), rel=1e-10)
    rank = min(shape)
    assert spectral <= frobenius + 1e-12 and frobenius <= math.sqrt(rank) * spectral + 1e-9


def test_known_matrices():
    assert matrix_norms(torch.diag(torch.tensor([3.0, -4.0, 1.0]))) == pytest.approx((math.sqrt(26), 4.0))
    assert matrix_norms(torch.ones(2, 8)) == pytest.approx((4.0, 4.0))  # rank one: both norms agree
    with pytest.raises(ValueError):
        matrix_norms(torch.ones(2, 2, 2))


def test_a_convolution_kernel_is_reshaped_to_out_by_rest():
    conv = nn.Conv2d(3, 8, 3)
    m = as_matrix(conv.weight)
    assert m.shape == (8, 27)
    assert torch.equal(m[2], conv.weight[2].flatten())
    row = layer_norms(nn.Sequential(conv))[0]
    assert row["shape"] == [8, 27]
    assert row["spectral"] == pytest.approx(torch.linalg.svdvals(m.double()).max().item(), rel=1e-12)


class Reordered(nn.Module):
    """Registers `late` before `early` but runs `early` first."""

    def __init__(self):
        super().__init__()
        self.late = nn.Linear(4, 2)
        self.early = nn.Linear(3, 4)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.late(self.early(x).relu())


def test_layers_come_in_forward_order():
    model = Reordered().train()
    names = [n for n, _ in weight_layers(model, torch.zeros(1, 3))]
    assert names == ["early", "late", "unused"]  # never-run layers last
    assert model.training  # the mode is restored
    assert [n for n, _ in weight_layers(model)] == ["late", "early", "unused"]  # registration order without input


@pytest.mark.parametrize("arch", model_names())
def test_every_architecture(arch):
    kw = {"wrn28-10": {"widen": 1}, "wrn34-10": {"depth": 10, "widen": 1}, "wrn70-16": {"depth": 10, "widen": 1},
          "preactresnet18": {"width": 4}, "mlp6": {"width": 16, "input_size": 8},
          "cnn-small": {"width": 4}}.get(arch, {})
    model = create_model(arch, in_channels=1, num_classes=10, **kw)
    size = 8 if arch == "mlp6" else 16
    rows = layer_norms(model, torch.zeros(1, 1, size, size))
    n_layers = sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    assert len(rows) == n_layers and rows[-1]["layer"] == "head", arch
    for r in rows:
        assert math.isfinite(r["frobenius"]) and math.isfinite(r["spectral"]), (arch, r)
        assert 0 < r["spectral"] <= r["frobenius"] + 1e-9, (arch, r)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from conftest import tiny_config

    from iat.training import train

    root = tmp_path_factory.mktemp("norm-runs")
    return [str(train(tiny_config(m, epochs=1, arch="mlp6", width=16), root / m, progress=False))
            for m in ("erm", "pgd")]


def test_analyze_norms_command(two_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "norms", *two_runs, "--out", str(out), "-q"]) == 0
    result = json.loads((out / "norms.json").read_text())
    assert list(result["runs"]) == two_runs
    for rows in result["runs"].values():
        assert [r["layer"] for r in rows][-1] == "head" and len(rows) == 6  # mlp6: six weight matrices
        assert {"layer", "frobenius", "spectral"} <= set(rows[0])
    from iat.rundir.read import load_run_model  # the numbers are the model's own

    first = load_run_model(two_runs[0]).head.weight
    assert result["runs"][two_runs[0]][-1]["spectral"] == pytest.approx(
        torch.linalg.svdvals(first.double()).max().item(), rel=1e-9)
    assert (out / "norms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "head" in capsys.readouterr().out


def test_analyze_norms_refuses_bad_input_before_any_output(two_runs, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", "norms", two_runs[0], str(tmp_path / "missing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
