"""Values that pass an option's type but would crash or overflow later: refused in one line (exit 2)."""

from __future__ import annotations

import pytest
from conftest import tiny_config
from reliability_helpers import TINY_TRAIN, train_tiny_run

from iat.cli import main
from iat.rundir import files
from iat.training import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory)


def test_a_last_batch_of_one_joins_the_one_before(tmp_path):
    cfg = tiny_config("erm", arch="preactresnet18", width=2, epochs=1, train_size=33, batch_size=16)
    out = train(cfg, tmp_path / "run", progress=False)
    assert (out / files.WEIGHTS).is_file()


@pytest.mark.parametrize("argv, fragment", [
    (["--seed", "184461906879890"], "--seed"),
    (["--width", "100000"], "choose a smaller width"),
    (["--mixup-alpha", "1e-300"], "--mixup-alpha"),
])
def test_values_that_passed_validation_then_crashed_are_refused(tmp_path, capsys, argv, fragment):
    out = tmp_path / "run"
    assert main(["-q", "train", *TINY_TRAIN[:-2], "--method", "mixup", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and not out.exists(), err


@pytest.mark.parametrize("argv", [["--seed", str(2**70)], ["--hidden", str(10**9)]])
def test_probe_bounds(tiny_run, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["-q", "analyze", "probe", str(tiny_run), *argv])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_seed_max_fits_every_epoch():
    from iat.config import SEED_MAX
    from iat.training.state import epoch_order

    epoch_order(SEED_MAX, 100_000, 3)  # no overflow
