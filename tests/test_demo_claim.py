"""The demo's one-line reading of its own table: does the paper's claim show?"""

from __future__ import annotations

from iat.demo import claim_check


def _summary(rows: dict[str, tuple[float, float]]) -> dict:
    return {m: {"clean": {"mean": c, "std": 0.0}, "pgd20": {"mean": r, "std": 0.0}} for m, (c, r) in rows.items()}


def test_claim_shows_when_iat_recovers_clean_error_at_equal_robustness():
    lines = claim_check(_summary({"erm": (5.0, 100.0), "pgd": (13.0, 55.0), "iat-mixup": (7.0, 55.5)}))
    assert "+8.00 points" in lines[0]
    assert "recovers 75%" in lines[1] and "claim shows here" in lines[1]


def test_claim_does_not_show_when_clean_error_or_robustness_is_lost():
    no_recovery = claim_check(_summary({"erm": (5.0, 100.0), "pgd": (13.0, 55.0), "iat-mixup": (12.5, 55.0)}))
    less_robust = claim_check(_summary({"erm": (5.0, 100.0), "pgd": (13.0, 55.0), "iat-mixup": (6.0, 60.0)}))
    assert "does not show" in no_recovery[1] and "does not show" in less_robust[1]
    assert claim_check(_summary({"mixup": (5.0, 90.0)})) == []


def test_a_clean_error_above_pgd_trainings_recovers_none_and_says_by_how_much():
    lines = claim_check(_summary({"erm": (5.0, 100.0), "pgd": (13.0, 55.0), "iat-mixup": (15.0, 55.0)}))
    assert "recovers none of that cost (2.00 points above PGD training)" in lines[1] and "-" not in lines[1][:40]
    assert "does not show" in lines[1]
