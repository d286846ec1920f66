"""`iat reproduce`'s output directory and experiment files: damaged manifests, metrics and names, one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from iat.cli import main
from iat.rundir import files


def test_reproduce_check_out_ignores_a_killed_first_writes_temporary(tmp_path):
    from iat.reproduce.experiment import load_experiment
    from iat.reproduce.runner import check_out

    exp = load_experiment("table2", "smoke")
    (tmp_path / ".experiment.json.ab12cd.tmp").write_text("{")
    (tmp_path / files.LOCK).write_text("")
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
    (run / files.METRICS).write_text('{"seconds": 2}\n[[[\n')
    assert train_seconds([run]) == 0.0


# ------------------------------------------------------------------------ experiment files and names


def experiment_file(tmp_path, name_line: str, extra: bytes = b"") -> Path:
    """table2.toml with its `name = ...` line replaced (and bytes appended)."""
    from iat.reproduce.experiment import EXPERIMENTS_DIR

    text = (EXPERIMENTS_DIR / "table2.toml").read_text()
    lines = [name_line if line.startswith("name = ") else line for line in text.splitlines()]
    path = tmp_path / "exp.toml"
    path.write_bytes("\n".join(lines).encode() + b"\n" + extra)
    return path


@pytest.mark.parametrize("name_line", ['name = "../escape"', 'name = "sub/dir"', 'name = "a\\u0000b"',
                                       'name = ""', 'name = ".."'])
def test_an_experiment_name_that_is_not_one_directory_name_is_refused(tmp_path, monkeypatch, capsys, name_line):
    from iat.errors import UsageError
    from iat.reproduce.experiment import load_experiment

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    toml = experiment_file(tmp_path, name_line)
    with pytest.raises(UsageError, match="name"):
        load_experiment(str(toml), "smoke")
    assert main(["-q", "reproduce", str(toml), "--scale", "smoke"]) == 2  # its default --out is reproduce-NAME
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exp.toml: name" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "exp.toml"]  # nothing written anywhere


def test_an_experiment_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    toml = experiment_file(tmp_path, 'name = "table2"', extra='notes = ["caf\xe9"]\n'.encode("latin-1"))
    assert main(["-q", "reproduce", str(toml), "--scale", "smoke", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8" in err and "0xe9" in err, err
    assert not (tmp_path / "o").exists()


def test_an_experiment_argument_that_is_no_name_is_refused(tmp_path, capsys):
    from iat.errors import UsageError
    from iat.reproduce.experiment import experiment_path

    assert main(["-q", "reproduce", "x" * 300, "--scale", "smoke", "--out", str(tmp_path / "o")]) == 2  # too long
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown experiment" in err, err
    with pytest.raises(UsageError, match="unknown experiment"):  # a name, not a way out of experiments/
        experiment_path("../experiments/table2")
