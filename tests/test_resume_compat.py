"""A run made before an option existed resumes: a key its config.json lacks counts as that option's default."""

from __future__ import annotations

import dataclasses
import logging

from conftest import tiny_config

from iat.config import TrainConfig
from iat.rundir import files, tensors
from iat.training import train
from iat.training.resume import first_difference


def test_keys_added_later_count_as_their_defaults():
    cfg = TrainConfig(method="pgd", dataset="digits", arch="cnn-small", epochs=3)
    saved = cfg.to_dict()
    for newer in ("attack", "sync_bn", "co_guard", "amp_dtype"):
        saved.pop(newer, None)
    assert first_difference(cfg, saved) is None


def test_a_changed_option_is_still_refused():
    cfg = TrainConfig(method="pgd", dataset="digits", arch="cnn-small", epochs=3)
    saved = {**cfg.to_dict(), "attack": "fgsm-rs"}
    assert first_difference(cfg, saved).startswith("--attack pgd differs from the run's fgsm-rs")
    assert first_difference(TrainConfig(method="pgd", dataset="digits", arch="cnn-small", attack="n-fgsm",
                                        epochs=3), {k: v for k, v in cfg.to_dict().items() if k != "attack"})


def test_precision_options_decide_the_weights_and_are_refused_when_changed():
    cfg = TrainConfig(method="iat-mixup", dataset="digits", arch="cnn-small", amp=True)
    for key, other in (("attack_precision", "amp"), ("amp_dtype", "fp16"), ("tf32", True)):
        changed = dataclasses.replace(cfg, **{key: other})
        shown = str(other).lower() if isinstance(other, bool) else other
        assert first_difference(changed, cfg.to_dict()).startswith(f"--{key.replace('_', '-')} {shown} differs")


def test_a_switch_saved_as_on_or_off_compares_as_a_boolean():
    """tf32 and cudnn_benchmark were "on"/"off" in 0.1.0's config.json: such a run still resumes."""
    cfg = TrainConfig(method="pgd", dataset="digits", arch="cnn-small", epochs=3)
    assert first_difference(cfg, {**cfg.to_dict(), "tf32": "off", "cudnn_benchmark": "off"}) is None
    assert first_difference(cfg, {**cfg.to_dict(), "tf32": "on"}).startswith("--tf32 false differs from the run's on")
    assert first_difference(dataclasses.replace(cfg, tf32=True), {**cfg.to_dict(), "tf32": "on"}) is None


def test_a_run_of_0_1_0_with_on_off_switches_resumes_silently(tmp_path, caplog, capsys):
    cfg = tiny_config("erm", epochs=1, train_size=96, batch_size=32)
    out = train(cfg, tmp_path / "run", progress=False)
    (out / files.WEIGHTS).unlink()  # its last checkpoint resumes, training nothing
    old = {**files.read_json(out / files.CONFIG), "tf32": "off", "cudnn_benchmark": "off"}
    files.write_json(out / files.CONFIG, old)
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
    ckpt["config"].update(tf32="off", cudnn_benchmark="off")
    tensors.save_checkpoint(out / files.CHECKPOINT, ckpt)
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        train(cfg, out, resume=True, progress=False)
    assert (out / files.WEIGHTS).is_file() and "resumed at" not in caplog.text and not capsys.readouterr().err
    assert "resumes" not in files.read_json(out / files.CONFIG)  # no speed option changed: nothing recorded


def test_a_speed_option_changed_on_resume_is_warned_and_recorded(tmp_path, caplog):
    """channels_last, compile, CUDA graphs and cuDNN autotuning change rounding, not arithmetic: a resume may
    change them, and config.json's `resumes` then says what trained the rest of the run."""
    cfg = tiny_config("erm", epochs=1, train_size=96, batch_size=32)
    out = train(cfg, tmp_path / "run", progress=False)
    (out / files.WEIGHTS).unlink()  # its last checkpoint (end of epoch 1) resumes, training nothing
    with caplog.at_level(logging.WARNING, logger="iat.train"):
        train(dataclasses.replace(cfg, channels_last=False), out, resume=True, progress=False)
    config = files.read_json(out / files.CONFIG)
    assert config["channels_last"] is True  # the run's start, as it was
    assert config["resumes"] == [{"epoch": 2, "step": 0, "changed": {"channels_last": False}}]  # after epoch 1
    assert "channels_last=False (the run so far: channels_last=True)" in caplog.text

    for again in (False, False, True):  # the same as the last part: nothing to say; back to channels_last: said
        caplog.clear()
        (out / files.WEIGHTS).unlink()
        with caplog.at_level(logging.WARNING, logger="iat.train"):
            train(dataclasses.replace(cfg, channels_last=again), out, resume=True, progress=False)
        assert ("resumed at" in caplog.text) == again
    assert [r["changed"] for r in files.read_json(out / files.CONFIG)["resumes"]] == [
        {"channels_last": False}, {"channels_last": True}]
