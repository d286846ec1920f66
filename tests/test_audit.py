"""`iat audit`: honest models pass; models made to mask gradients in three different ways fail.

The masked models wrap a trained network; the audit sees only an nn.Module and is not told how
each was made.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DIGITS_EPS
from test_sweep import iat
from torch import nn

from iat.attacks import AttackBudget
from iat.data import load_data
from iat.robustness import audit, audit_model, audit_table
from iat.robustness.masking import STATUSES
from iat.rundir.read import load_run_model

pytestmark = pytest.mark.usefixtures("one_thread")
LIMIT = 200
STEPS_LIST = (1, 5, 20, 50)


class Quantized(nn.Module):
    """Rounds the input to 16 levels first: the rounding has zero derivative (shattered gradients)."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(torch.round(x * 16) / 16)  # digits pixels are multiples of 1/16: clean data unchanged


class Saturated(nn.Module):
    """Scales the logits by 1e4: softmax saturates and cross-entropy's gradient is exactly zero."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return 1e4 * self.base(x)


class Noisy(nn.Module):
    """Adds fresh Gaussian noise to the input on every call (randomized preprocessing)."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base((x + 0.1 * torch.randn_like(x)).clamp(0, 1))


@pytest.fixture(scope="module")
def data(one_thread):
    return load_data("digits", "test", limit=LIMIT)


def run_audit(model, surrogate, data):
    x, y = data
    return audit_model(model, x, y, AttackBudget.at(DIGITS_EPS, steps=20), surrogate=surrogate, steps_list=STEPS_LIST)


def statuses(result):
    return {c["name"]: c["status"] for c in result["checks"]}


@pytest.mark.parametrize("audited,surrogate", [("pgd", "erm"), ("erm", "pgd")])
def test_honest_models_pass(trained_runs, data, audited, surrogate):
    result = run_audit(load_run_model(trained_runs[audited]), load_run_model(trained_runs[surrogate]), data)
    assert result["verdict"] == "pass", audit_table(result)
    assert set(statuses(result)) >= {"deterministic", "logits", "input-gradients", "single-vs-iterative", "steps",
                                     "large-eps", "transfer", "margin-loss"}
    assert all(c["detail"] and c["status"] in STATUSES for c in result["checks"])
    values = {c["name"]: c["values"] for c in result["checks"]}
    # like for like: the transfer example counts at its final point, so the white-box one does too
    assert values["transfer"]["whitebox_error"] == values["steps"]["plain_error"]["20"]


@pytest.mark.parametrize("wrapper,must_fail", [
    (Quantized, {"input-gradients", "large-eps", "transfer"}),
    (Saturated, {"input-gradients", "margin-loss"}),
    (Noisy, {"deterministic"}),
])
def test_masked_models_fail(trained_runs, data, wrapper, must_fail):
    base = load_run_model(trained_runs["pgd"])
    result = run_audit(wrapper(base).eval(), load_run_model(trained_runs["erm"]), data)
    found = statuses(result)
    assert result["verdict"] == "fail", audit_table(result)
    assert must_fail <= {name for name, s in found.items() if s == "fail"}, audit_table(result)


def test_audit_command_writes_audit_json(trained_runs, tmp_path, capsys):
    pgd, erm = trained_runs["pgd"], trained_runs["erm"]
    _, out, _ = iat(capsys, "audit", pgd, "--surrogate", erm, "--limit", 80, "--steps-list", "1,5,20",
                    "--out", tmp_path, "-q")
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["verdict"] in STATUSES and data["checks"]
    assert all({"name", "status", "detail"} <= set(c) for c in data["checks"])
    assert data["eps"] == DIGITS_EPS and data["n_examples"] == 80 and data["run"] == str(pgd)
    assert f"verdict: {data['verdict']}" in out and "| large-eps" in out and "| transfer" in out
    code, _, err = iat(capsys, "audit", pgd, "--surrogate", tmp_path / "nope", "--out", tmp_path / "bad",
                       check=False)
    assert code == 2 and "does not exist" in err and not (tmp_path / "bad").exists()


def test_default_surrogate_is_trained(trained_runs, monkeypatch):
    """Without --surrogate the audit trains one (here shrunk to seconds) and still runs every check."""
    import iat.robustness.masking as mod

    monkeypatch.setitem(mod.SURROGATE, "epochs", 1)
    monkeypatch.setitem(mod.SURROGATE, "width", 4)
    result = audit(trained_runs["pgd"], limit=60, steps_list=(1, 5), device="cpu")
    assert "trained for this audit" in next(c for c in result["checks"] if c["name"] == "transfer")["values"][
        "surrogate"]
    assert result["dataset"] == "digits" and result["n_examples"] == 60


def test_the_autoattack_check_reports_autoattack_alone_and_what_it_adds_to_pgd():
    from iat.robustness.checks import check_autoattack

    pgd = torch.tensor([True] * 60 + [False] * 40)  # PGD: 40% error
    aa = torch.tensor([True] * 50 + [False] * 10 + [True] * 40)  # AutoAttack alone: 10%, all new
    check = check_autoattack(pgd, aa, 20)
    assert check.values["pgd20_error"] == 40.0 and check.values["autoattack_error"] == 10.0
    assert check.values["either_error"] == 50.0 and check.values["gap"] == 10.0 and check.status == "warn"
    assert "AutoAttack 10.00%, either of them 50.00%" in check.detail
    same = check_autoattack(pgd, pgd.clone(), 20)
    assert same.status == "pass" and same.values["gap"] == 0.0
