"""`iat reproduce NAME`: one command per table and figure of the paper, at its scale or as a smoke run.

    from iat.reproduce import reproduce
    results = reproduce("table2", out="reproduce-table2", seeds=3, scale="paper")

The experiments' settings live in src/iat/experiments/NAME.toml; the paper's numbers in
src/iat/paper_numbers.json.
"""

from __future__ import annotations

from iat.reproduce.experiment import SCALES, Experiment, experiment_names, load_experiment
from iat.reproduce.paper import load_paper_numbers
from iat.reproduce.runner import reproduce

__all__ = ["SCALES", "Experiment", "experiment_names", "load_experiment", "load_paper_numbers", "reproduce"]
