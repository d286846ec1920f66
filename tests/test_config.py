"""TrainConfig is the one place an option is written: validate, the CLI flags and overrides come from it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from iat.cli import build_parser
from iat.config import TrainConfig, choices_of, flag, kind_of, resolve_device
from iat.errors import UsageError


def test_every_option_says_what_it_is():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"], f.name
        assert kind_of(f) in ("int", "float", "str", "bool", "ints", "path", "dict"), f.name
        if kind_of(f) in ("int", "float"):
            assert f.metadata["lo"] is not None and f.metadata["hi"] is not None, f.name


def test_the_defaults_are_valid_and_every_option_is_a_flag_of_iat_train():
    TrainConfig().validate()
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = set(train._option_string_actions)
    assert {flag(f.name) for f in dataclasses.fields(TrainConfig) if f.name != "extra"} <= flags
    args = train.parse_args(["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--out", "x"])
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in ("method", "dataset", "arch", "extra"):
            assert getattr(args, f.name) == getattr(defaults, f.name), f.name


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "--epochs 0 is outside [1, 100000]; give a value in that range"),
    ({"width": 2.5}, "--width 2.5 is not an integer; give a whole number in [1, 100000]"),
    ({"lr": 0.0}, "--lr 0.0 is outside (0, 10]; give a value in that range"),
    ({"momentum": "x"}, "--momentum 'x' is not a number; give a value in [0, 1]"),
    ({"lam_per": "x"}, "--lam-per 'x': choose one of batch, example"),
    ({"arch": "vit"}, "unknown architecture 'vit'"),
    ({"amp": 1}, "amp 1 is not true or false"),
    ({"tf32": "on"}, "tf32 'on' is not true or false"),  # the old words are read from files, not set in code
    ({"method": 3}, "--method 3 is not a name"),
    ({"method": "sgd"}, "unknown method 'sgd'; choose one of: erm"),
    ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ({"eps": 8.0}, "--eps 8.0 is outside [0, 1]; images are in [0,1], so write 8/255 rather than 8"),
    ({"seed": -1}, "--seed -1 is outside [0, "),
    ({"ema": 1.0}, "--ema 1 would keep the initial weights forever"),
    ({"aux_fraction": 1.0}, "--aux-fraction 1.0 is outside [0, 1)"),
    ({"attack": "fgsm"}, "--attack 'fgsm': choose one of pgd, fgsm-rs, n-fgsm"),
    ({"data_dir": 3}, "--data-dir 3 is not a path"),
    ({"milestones": [0]}, "--milestones [0] must be strictly increasing epochs in [1, 200]"),
])
def test_validate_names_the_option_and_its_range(changes, message):
    with pytest.raises(UsageError, match="^" + re.escape(message)):
        dataclasses.replace(TrainConfig(), **changes).validate()


def test_overrides_build_a_validated_config():
    cfg = TrainConfig.from_overrides({"method": "pgd", "epochs": 10, "eps": "8/255", "lr": 1, "milestones": [5]},
                                     source="table2.toml")
    assert (cfg.method, cfg.epochs, cfg.eps, cfg.lr, cfg.milestones) == ("pgd", 10, 8 / 255, 1.0, [5])
    assert isinstance(cfg.lr, float) and cfg.batch_size == TrainConfig().batch_size
    assert TrainConfig.from_overrides({"seed": 2}, base=cfg).seed == 2


@pytest.mark.parametrize("overrides, message", [
    ({"epoch": 3}, "table2.toml: unknown training option 'epoch'"),
    ({"epochs": "3"}, "table2.toml: epochs = '3' is not an integer"),
    ({"epochs": True}, "table2.toml: epochs = True is not an integer"),
    ({"milestones": [1, "2"]}, "table2.toml: milestones = [1, '2'] is not a list of integers"),
    ({"amp": "yes"}, "table2.toml: amp = 'yes' is not true or false"),
    ({"eps": "8"}, "table2.toml: --eps 8.0 is outside [0, 1]; images are in [0,1], so write 8/255 rather than 8"),
    ({"eps": "eight"}, "table2.toml: eps 'eight' is not a number"),
    ({"epochs": 0}, "table2.toml: --epochs 0 is outside [1, 100000]"),
])
def test_overrides_refuse_unknown_keys_and_wrong_types_naming_the_file(overrides, message):
    with pytest.raises(UsageError) as e:
        TrainConfig.from_overrides(overrides, source="table2.toml")
    assert str(e.value).startswith(message), str(e.value)


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(UsageError, match="choose one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_a_literal_annotation_lists_the_words_and_a_switch_is_a_flag_pair(capsys):
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert choices_of(fields["co_guard"]) == ("auto", "on", "off") and choices_of(fields["epochs"]) is None
    assert choices_of(fields["attack_bn"]) == ("eval", "train")  # a registry's constant tuple as a Literal
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    base = ["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--out", "x"]
    for given, tf32, benchmark in ((["--tf32"], True, False), (["--tf32", "--no-tf32"], False, False),
                                   (["--cudnn-benchmark", "--amp"], False, True)):
        args = train.parse_args(base + given)
        assert (args.tf32, args.cudnn_benchmark) == (tf32, benchmark), given
    assert capsys.readouterr().err == ""


def test_a_flag_parses_the_type_and_validate_the_range(capsys):
    """One place checks a range, so `iat train` and a config file say the same thing."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    args = train.parse_args(["--method", "sgd", "--dataset", "digits", "--arch", "mlp6", "--out", "x",
                             "--epochs", "0", "--lr", "8/255", "--milestones", "0,-3"])
    assert (args.method, args.epochs, args.lr, args.milestones) == ("sgd", 0, 8 / 255, [0, -3])
    with pytest.raises(SystemExit):
        train.parse_args(["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--out", "x",
                          "--epochs", "2.5"])
    assert "'2.5' is not an integer" in capsys.readouterr().err


@pytest.mark.parametrize("given, value, instead", [("on", True, "--tf32"), ("off", False, "--no-tf32")])
def test_the_old_on_off_spelling_still_works_with_one_warning_line(capsys, given, value, instead):
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    args = train.parse_args(["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--out", "x",
                             "--tf32", given])
    assert args.tf32 is value
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deprecated" in err and f"use {instead}" in err


@pytest.mark.parametrize("word, value", [("on", True), ("off", False)])
def test_the_old_on_off_words_are_read_from_files(capsys, word, value):
    """An experiment file's `tf32 = "on"` works for one more release with one deprecation line; an older
    run's config.json is read silently (it is no one's to edit)."""
    cfg = TrainConfig.from_overrides({"tf32": word, "cudnn_benchmark": word}, source="table2.toml")
    assert cfg.tf32 is value and cfg.cudnn_benchmark is value
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and f'table2.toml: tf32 = "{word}" is deprecated' in err
    assert f"write tf32 = {str(value).lower()}" in err
    old_run = TrainConfig.from_dict({**TrainConfig().to_dict(), "tf32": word, "cudnn_benchmark": word})
    assert (old_run.tf32, old_run.cudnn_benchmark) == (value, value) and capsys.readouterr().err == ""
    with pytest.raises(UsageError, match="amp = 'on' is not true or false"):  # only the switches that took them
        TrainConfig.from_overrides({"amp": "on"}, source="table2.toml")
