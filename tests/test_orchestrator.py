"""One orchestrator: experiment settings are overrides of TrainConfig, the demo is an experiment file,
launchers share one seam, and each formatter exists once."""

from __future__ import annotations

import dataclasses
import operator

import pytest

from iat.config import TrainConfig
from iat.demo import demo_experiment
from iat.errors import UsageError
from iat.methods import paper_method_names
from iat.report import format_cell, method_label
from iat.reproduce import experiment_names, load_experiment
from iat.reproduce.experiment import DEMO, EXPERIMENTS_DIR, PER_RUN, TRAIN_KEYS, tomllib
from iat.reproduce.launch import LocalLauncher, make_launcher
from iat.units import format_eps


def test_training_settings_are_trainconfigs_fields_and_defaults():
    defaults = TrainConfig()
    assert set(TRAIN_KEYS) == {f.name for f in dataclasses.fields(TrainConfig)} - set(PER_RUN)
    for name in experiment_names() + [DEMO]:
        written = tomllib.loads((EXPERIMENTS_DIR / f"{name}.toml").read_text())["paper"]
        settings = load_experiment(name).settings
        for key in TRAIN_KEYS:
            if key not in written:  # what a file leaves out is TrainConfig's default
                assert getattr(settings, key) == getattr(defaults, key), (name, key)


def test_the_demo_is_an_experiment_file_beside_the_papers():
    assert DEMO not in experiment_names()  # `iat reproduce` lists the paper's experiments
    exp = load_experiment(DEMO)
    assert exp.kind == "whitebox" and exp.methods == paper_method_names()
    assert exp.settings.attacks == ["clean", "fgsm", "pgd7", "pgd20"]
    assert exp.settings.autoattack_limit == 100  # AutoAttack's column: the first 100 test images (demo.toml)
    cfg = exp.settings.train_config("pgd", 1)
    assert (cfg.dataset, cfg.arch, cfg.epochs, cfg.eps, cfg.step_size, cfg.seed) == (
        "fashion-mnist", "mlp6", 5, 0.1, 0.025, 1)
    small = demo_experiment(["erm", "pgd"], epochs=1, eps=0.2, step_size=0.05)
    assert small.methods == ["erm", "pgd"] and small.settings.epochs == 1
    assert (small.settings.eval_eps, small.settings.eval_step_size) == (0.2, 0.05)


def test_overrides_are_checked_and_name_the_file():
    with pytest.raises(UsageError, match=r"demo.toml: .*epochs"):
        demo_experiment(epochs=0)
    with pytest.raises(UsageError, match="demo.toml: unknown setting 'epoch'"):
        demo_experiment(epoch=3)


def test_launchers_share_one_seam():
    assert LocalLauncher(1).map(operator.neg, [1, 2, 3]) == [-1, -2, -3]
    assert make_launcher("local", 3).jobs == 3 and make_launcher("local", None, "cuda").jobs == 1
    with pytest.raises(UsageError, match="--launcher"):
        make_launcher("slurm")
    with pytest.raises(UsageError, match="--jobs"):
        make_launcher("local", 0)


def test_a_pool_returns_results_in_the_tasks_order():
    assert LocalLauncher(2).map(operator.neg, [1, 2, 3, 4]) == [-1, -2, -3, -4]


def test_one_eps_formatter_in_three_styles():
    assert format_eps(8 / 255) == "8/255 = 0.0314" and format_eps(0.1) == "1/10 = 0.1000"
    assert format_eps(0.025) == "0.025"
    assert [format_eps(v, "short") for v in (8 / 255, 0.1, 0.2, 0.025)] == ["8/255", "0.1", "0.2", "0.025"]
    assert [format_eps(v, "255") for v in (8 / 255, 2 / 255)] == ["8", "2"]


def test_one_table_cell_and_one_label_table():
    assert format_cell({"mean": 12.345, "std": 0.5}) == "12.35 ± 0.50"
    assert format_cell({"mean": 12.345, "std": 0.0, "values": [12.345]}) == "12.35"  # one seed: no std
    assert format_cell({"mean": 4.8, "std": None}) == "4.80"  # a paper cell without a std
    assert format_cell(None) == "—"
    assert method_label("iat-mixup") == "Interpolated Adversarial Training (with Mixup)"
    assert method_label("iat-mixup", short=True) == "IAT (with Mixup)"
