"""`iat reproduce NAME`: one command per table and figure of the paper, at its scale or as a smoke run.

    from iat.reproduce import reproduce
    results = reproduce("table2", out="reproduce-table2", seeds=3, scale="paper")

The experiments' settings live in src/iat/experiments/NAME.toml (demo.toml is `iat demo`'s); the
paper's numbers in src/iat/paper_numbers.json. The runner (runner.py) is the one orchestrator, and
launch.py the one place where launchers plug in.
"""

from __future__ import annotations

from iat.reproduce.experiment import SCALES, Experiment, experiment_names, load_experiment
from iat.reproduce.launch import Launcher, LocalLauncher, make_launcher
from iat.reproduce.paper import load_paper_numbers
from iat.reproduce.runner import reproduce, run_experiment

__all__ = ["SCALES", "Experiment", "Launcher", "LocalLauncher", "experiment_names", "load_experiment",
           "load_paper_numbers", "make_launcher", "reproduce", "run_experiment"]
