"""TrainConfig is the one place an option is written: validate, the CLI flags and overrides come from it."""

from __future__ import annotations

import dataclasses

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
])
def test_validate_names_the_option_and_its_range(changes, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace("[", r"\[")):
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
    ({"eps": "8"}, "table2.toml: eps '8' = 8 is outside [0, 1]"),
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


def test_a_literal_annotation_lists_the_words_and_an_on_off_option_is_a_flag_pair(capsys):
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert choices_of(fields["co_guard"]) == ("auto", "on", "off") and choices_of(fields["epochs"]) is None
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    base = ["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--out", "x"]
    for given, tf32, benchmark in ((["--tf32"], "on", "off"), (["--tf32", "--no-tf32"], "off", "off"),
                                   (["--cudnn-benchmark", "--amp"], "off", "on")):
        args = train.parse_args(base + given)
        assert (args.tf32, args.cudnn_benchmark) == (tf32, benchmark), given
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("given, value, instead", [("on", "on", "--tf32"), ("off", "off", "--no-tf32")])
def test_the_old_on_off_spelling_still_works_with_one_warning_line(capsys, given, value, instead):
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    args = train.parse_args(["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--out", "x",
                             "--tf32", given])
    assert args.tf32 == value
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deprecated" in err and f"use {instead}" in err
