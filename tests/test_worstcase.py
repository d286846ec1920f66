"""The evaluation engine: worst case per example, work only on still-correct examples, no parameter gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import DIGITS_EPS, DIGITS_STEP, tiny_config

from iat.attacks import FGSM, PGD, AttackBudget, ce_loss, dlr_loss, margin_loss
from iat.attacks.worstcase import error_pct, predict, survivors
from iat.data import load_data
from iat.evaluate import evaluate, evaluate_run
from iat.rundir.read import load_run_model
from iat.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits_test(one_thread):
    return load_data("digits", "test", limit=200)


class CountingModel(torch.nn.Module):
    """Counts the examples that go through forward()."""

    def __init__(self, base):
        super().__init__()
        self.base, self.rows = base, 0

    def forward(self, x):
        self.rows += len(x)
        return self.base(x)


def test_plain_mode_is_pgd_and_worst_case_only_adds_errors(trained_runs, digits_test):
    """early_stop=False reproduces the PGD class exactly (same seed); the worst case is a superset of its errors."""
    x, y = digits_test
    model = load_run_model(trained_runs["pgd"])
    keep = predict(model, x) == y
    x, y = x[keep], y[keep]
    for steps in (1, 7):
        torch.manual_seed(0)
        plain_ref = predict(model, PGD(model, DIGITS_EPS, DIGITS_STEP, steps)(x, y)) == y
        budget = AttackBudget(DIGITS_EPS, DIGITS_STEP, steps)
        plain = survivors(model, x, y, budget, early_stop=False, batch_size=1000, seed=0)[-1]
        worst = survivors(model, x, y, budget, batch_size=1000, seed=0)[-1]
        assert torch.equal(plain, plain_ref), steps
        assert not (worst & ~plain).any(), "the worst case lost an error that plain PGD found"
    fgsm_ref = predict(model, FGSM(model, DIGITS_EPS)(x, y)) == y
    fgsm = survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_EPS, 1), random_start=False)[-1]
    assert torch.equal(fgsm, fgsm_ref)


def test_recorded_steps_equal_separate_runs(trained_runs, digits_test):
    """One run recording steps 3 and 10 gives exactly what separate PGD-3 and PGD-10 runs give."""
    x, y = digits_test
    model = load_run_model(trained_runs["erm"])
    both = survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 10), record=[3, 10], seed=5)
    for row, steps in zip(both, (3, 10)):
        alone = survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, steps), seed=5)[-1]
        assert torch.equal(row, alone), steps
    assert not (both[1] & ~both[0]).any()  # more steps never un-fool an example


def test_attacks_only_still_correct_examples(trained_runs, digits_test):
    x, y = digits_test
    model = CountingModel(load_run_model(trained_runs["erm"]))
    clean = predict(model, x) == y
    model.rows = 0
    worst = survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 20), correct=clean)[-1]
    fast_rows = model.rows
    model.rows = 0
    survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 20), correct=clean, early_stop=False)
    plain_rows = model.rows
    assert plain_rows == 21 * int(clean.sum())  # 20 gradient steps and the final check, correct ones only
    assert fast_rows < 0.7 * plain_rows, (fast_rows, plain_rows)  # ERM falls fast: most rows are skipped
    assert not (worst & ~clean).any()


def test_restarts_only_add_errors(trained_runs, digits_test):
    x, y = digits_test
    model = load_run_model(trained_runs["pgd"])
    one = survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 5), seed=1)[-1]
    three = survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 5, restarts=3), seed=1)[-1]
    assert not (three & ~one).any() and error_pct(three) >= error_pct(one)
    r = evaluate(model, x, y, ["pgd5"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP, restarts=3), seed=1)
    assert r["pgd5"]["error"] == error_pct(three)
    # the two more restarts really run, on the examples the first left standing (equal masks would pass above)
    counting = CountingModel(model)
    survivors(counting, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 5), seed=1, early_stop=False)
    rows_one, counting.rows = counting.rows, 0
    survivors(counting, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 5, restarts=3), seed=1, early_stop=False)
    # restart 2 attacks what restart 1 left (`one`), restart 3 at least what all three left: 5 steps + a check each
    assert counting.rows >= rows_one + 6 * (int(one.sum()) + int(three.sum())) > rows_one


def test_evaluations_fgsm_is_the_fgsm_attack_at_the_full_eps(trained_runs, digits_test):
    """The FGSM column is one signed step of exactly eps from the clean image, counted with the clean errors."""
    x, y = digits_test
    model = load_run_model(trained_runs["pgd"])
    x_adv = FGSM(model, DIGITS_EPS)(x, y)
    moved = (x_adv - x).abs()
    interior = (x > DIGITS_EPS) & (x < 1 - DIGITS_EPS)  # no [0,1] clipping there: every pixel moves by eps
    assert torch.allclose(moved[interior], torch.full_like(moved[interior], DIGITS_EPS), atol=1e-6)
    expected = error_pct((predict(model, x) == y) & (predict(model, x_adv) == y))
    got = evaluate(model, x, y, ["fgsm"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP))["fgsm"]["error"]
    assert got == expected


def test_no_parameter_gradients_and_state_restored(trained_runs, digits_test):
    x, y = digits_test
    model = load_run_model(trained_runs["pgd"]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    survivors(model, x, y, AttackBudget(DIGITS_EPS, DIGITS_STEP, 3))
    evaluate(model, x, y, ["fgsm", "pgd3"], budget=AttackBudget(DIGITS_EPS, DIGITS_STEP))
    assert model.training
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_eps_zero_is_clean_error(trained_runs, digits_test):
    x, y = digits_test
    model = load_run_model(trained_runs["erm"])
    assert torch.equal(survivors(model, x, y, AttackBudget(0.0, DIGITS_STEP, 20))[-1], predict(model, x) == y)


def test_margin_losses_survive_a_saturating_softmax():
    """Scaling logits by 1e4 zeroes cross-entropy's gradient; margin and DLR keep theirs (DLR unchanged)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5)
    x, y = torch.rand(8, 6), torch.randint(0, 5, (8,))
    y = lin(x).argmax(1)  # confidently correct

    def grad(loss_fn, scale):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(scale * lin(xr), y), xr)
        return g

    assert grad(ce_loss, 1e4).abs().sum() == 0 and grad(ce_loss, 1.0).abs().sum() > 0
    assert grad(margin_loss, 1e4).abs().sum() > 0
    assert torch.allclose(grad(dlr_loss, 1e4), grad(dlr_loss, 1.0), rtol=1e-3, atol=1e-6)
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    assert margin_loss(logits, torch.tensor([0])).item() == pytest.approx(-2.0)
    assert dlr_loss(logits, torch.tensor([1])).item() == pytest.approx(2.0 / 3.0)
    assert F.cross_entropy(logits, torch.tensor([0]), reduction="sum").item() == pytest.approx(
        ce_loss(logits, torch.tensor([0])).item())


def test_eval_at_another_eps_steps_eps_over_4_unless_told(tmp_path):
    """With --eps and no --step-size the step is eps/4, as in the sweeps: the training step of a smaller eps
    cannot carry PGD-7 to a larger ball's surface (2/255 x 7 steps covers half of eps 0.1)."""
    run = train(tiny_config("erm", epochs=1, eps=8 / 255, step_size=2 / 255), tmp_path / "run", progress=False)
    assert evaluate_run(run, ["clean"], limit=10, device="cpu")["step_size"] == 2 / 255  # the run's own
    assert evaluate_run(run, ["clean"], eps=0.1, limit=10, device="cpu")["step_size"] == 0.1 / 4
    assert evaluate_run(run, ["clean"], eps=0.1, step_size=0.01, limit=10, device="cpu")["step_size"] == 0.01
