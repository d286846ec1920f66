"""A run made before an option existed resumes: a key its config.json lacks counts as that option's default."""

from __future__ import annotations

from iat.config import TrainConfig
from iat.train.resume import first_difference


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
