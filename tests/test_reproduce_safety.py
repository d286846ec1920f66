"""`iat reproduce`'s output directory and experiment files: damaged manifests, metrics and names, one line each."""

from __future__ import annotations

import pytest

from iat import runio


def test_reproduce_check_out_ignores_a_killed_first_writes_temporary(tmp_path):
    from iat.reproduce.experiment import load_experiment
    from iat.reproduce.runner import check_out

    exp = load_experiment("table2", "smoke")
    (tmp_path / ".experiment.json.ab12cd.tmp").write_text("{")
    (tmp_path / runio.LOCK).write_text("")
    check_out(tmp_path, exp)  # no UsageError: nothing but bookkeeping


@pytest.mark.parametrize("content", [b"[" * 100000, b"\xff\xfe", b"[1, 2]", b'{"settings": 3}'])
def test_reproduce_damaged_manifest_is_one_line(tmp_path, content):
    from iat.errors import UsageError
    from iat.reproduce.experiment import load_experiment
    from iat.reproduce.runner import check_out

    (tmp_path / "experiment.json").write_bytes(content)
    with pytest.raises(UsageError, match="experiment.json"):
        check_out(tmp_path, load_experiment("table2", "smoke"))


def test_reproduce_damaged_metrics_is_not_a_traceback(tmp_path):
    from iat.reproduce.runner import train_seconds

    run = tmp_path / "run"
    run.mkdir()
    (run / runio.METRICS).write_text('{"seconds": 2}\n[[[\n')
    assert train_seconds([run]) == 0.0
