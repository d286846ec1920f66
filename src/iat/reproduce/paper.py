"""The paper's own numbers (src/iat/paper_numbers.json), typed once and checked against its text."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "paper_numbers.json"
CITATION = ("Lamb, Verma, Kannala & Bengio (2019), Interpolated Adversarial Training: Achieving Robust Neural "
            "Networks without Sacrificing Too Much Accuracy, arXiv:1906.06784")


@lru_cache(maxsize=1)
def _load() -> str:
    return PAPER_NUMBERS.read_text(encoding="utf-8")


def load_paper_numbers() -> dict:
    """{experiment name: its numbers}; see the file's "_about" for the layout. A fresh copy each call."""
    return json.loads(_load())


def paper_entry(name: str) -> dict | None:
    """The paper's numbers for one experiment (None for an experiment the paper has no numbers for)."""
    return load_paper_numbers().get(name)


PUBLISHED_NUMBERS = Path(__file__).resolve().parents[1] / "published_numbers.json"


def published_entry(name: str) -> dict | None:
    """Other papers' published numbers for one experiment (src/iat/published_numbers.json; None: none kept)."""
    return json.loads(PUBLISHED_NUMBERS.read_text(encoding="utf-8")).get(name)
