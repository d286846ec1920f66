"""AutoAttack under torchrun: each rank attacks its share of the batches, the masks are merged, and the error is
one process's with the same batch size.

Standard AutoAttack costs 10-25 s per batch that keeps a robust example on this tiny model (9 target classes,
5000 Square queries), so the torchrun test runs a shortened AutoAttack (`shorten`: 10 iterations, 2 target
classes, 100 queries), in the workers and in the one-process reference alike: what is tested is how the work is
split and merged, not the attack's strength. Run as a script, this file is `python -m iat` with that AutoAttack.
Then `iat reproduce --eval-procs N`, which measures each run's AutoAttack that way after training.
"""

from __future__ import annotations

import shutil
import sys

import pytest
import torch
from test_ddp import run

from iat.attacks import autoattack_available
from iat.cli import main
from iat.config import TrainConfig
from iat.distributed import SINGLE
from iat.errors import UsageError
from iat.evaluate import evaluate_run
from iat.reproduce import reproduce
from iat.reproduce.runner import check_eval_procs
from iat.reproduce.tasks import Whitebox, autoattack_command
from iat.rundir import files
from iat.units import parse_eps

needs_extra = pytest.mark.skipif(not autoattack_available(),
                                 reason="the optional extra is not installed: pip install 'iat[autoattack]'")
EPS, LIMIT, BATCH = 0.13, 32, 8  # at this eps some examples of the PGD-trained run survive and some do not


def shorten() -> None:
    """pyautoattack's standard version with every component shortened (the same components, in the same order)."""
    import pyautoattack

    standard = pyautoattack.AutoAttack._set_version

    def short_version(self, version="standard"):
        standard(self, version)
        for apgd in (self.apgd, self.apgd_targeted):
            apgd.n_iter = apgd.n_iter_orig = 10
            apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 2, 1, 1
        self.fab.n_iter = 10
        self.apgd_targeted.n_target_classes = self.fab.n_target_classes = 2
        self.square.n_queries = 100

    pyautoattack.AutoAttack._set_version = short_version


def test_one_process_records_its_whole_share():
    assert SINGLE.all_gather({"n": 3}) == [{"n": 3}]


@needs_extra
@pytest.mark.slow
def test_two_ranks_split_autoattack_and_give_the_one_process_error(trained_runs, tmp_path, monkeypatch, one_thread):
    runs = [tmp_path / name for name in ("one", "two")]
    for r in runs:
        shutil.copytree(trained_runs["pgd"], r)
    args = ["--attacks", "clean,autoattack", "--eps", str(EPS), "--limit", str(LIMIT), "--batch-size", str(BATCH),
            "--device", "cpu", "-q"]
    done = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
                "eval", str(runs[1]), *args])
    assert done.returncode == 0, done.stderr[-3000:]
    two = files.read_json(runs[1] / files.EVAL)["results"]["autoattack"]

    import pyautoattack

    monkeypatch.setattr(pyautoattack.AutoAttack, "_set_version", pyautoattack.AutoAttack._set_version)
    shorten()  # undone by monkeypatch at the end of the test
    one = evaluate_run(runs[0], ["clean", "autoattack"], eps=EPS, limit=LIMIT, batch_size=BATCH,
                       device="cpu")["results"]
    assert 0 <= one["clean"]["error"] < one["autoattack"]["error"] < 100, one  # survivors: the merge matters
    assert two["error"] == one["autoattack"]["error"]

    (attacked,) = one["autoattack"]["examples_per_rank"]  # one process: every clean-correct example
    sizes = [min(BATCH, attacked - i) for i in range(0, attacked, BATCH)]
    assert two["examples_per_rank"] == [sum(sizes[0::2]), sum(sizes[1::2])]  # every other batch: half each
    assert sum(two["examples_per_rank"]) == attacked  # (every rank attacking everything would count 2x)
    assert two["batch_size"] == BATCH and len(two["seconds_per_rank"]) == 2
    assert all(s > 0 for s in two["seconds_per_rank"])


# ------------------------------------------------------------------------ iat reproduce --eval-procs


def test_the_command_evaluates_what_one_process_measures(tmp_path):
    wb = Whitebox(["clean", "pgd20"], 8 / 255, 2 / 255, None, autoattack_limit=1000, autoattack_procs=8)
    cfg = TrainConfig(method="pgd", dataset="cifar10", seed=2, device="cuda", data_dir="/data")
    cmd = autoattack_command(tmp_path / "run", cfg, wb, "ema", tmp_path / "tmp")
    assert cmd[:7] == [sys.executable, "-m", "iat.torchrun", "--standalone", "--nproc_per_node", "8", "-m"]
    assert cmd[7:10] == ["iat", "eval", str(tmp_path / "run")] and "-q" in cmd
    options = [a for a in cmd[10:] if a != "-q"]
    args = dict(zip(options[::2], options[1::2]))
    assert args["--data-dir"] == "/data"
    assert args["--attacks"] == "clean,pgd20,autoattack" and args["--limit"] == "1000"
    assert parse_eps(args["--eps"]) == 8 / 255 and parse_eps(args["--step-size"]) == 2 / 255  # exactly
    assert (args["--batch-size"], args["--weights"], args["--device"]) == ("125", "ema", "cuda")
    assert args["--out"] == str(tmp_path / "tmp")


@pytest.mark.parametrize("n, procs, batch", [(1000, 1, 500), (1000, 8, 125), (1000, 2, 500), (10000, 8, 500),
                                             (20, 2, 10), (20, 1, 500), (None, 4, 500)])
def test_autoattack_batch_is_500_unless_the_processes_would_idle(n, procs, batch):
    assert Whitebox(["clean"], 0.1, 0.025, None, n, procs).autoattack_batch == batch


def test_eval_procs_beyond_the_gpus_and_reproduce_under_torchrun_are_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_eval_procs(2, torch.device("cuda"))
    check_eval_procs(8, torch.device("cpu"))  # gloo processes: as many as asked
    with pytest.raises(UsageError, match="--eval-procs 4: one GPU per process, and this machine has 2"):
        check_eval_procs(4, torch.device("cuda"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")  # rank 1 takes no lock: nothing is written
    assert main(["reproduce", "table2", "--scale", "smoke", "--out", str(tmp_path / "out")]) == 2
    assert "run it without torchrun; --eval-procs N" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


TINY_TABLE = """name = "tiny"
title = "one ERM run, AutoAttack on 4 images"
kind = "whitebox"
methods = ["erm"]
[paper]
dataset = "digits"
arch = "cnn-small"
width = 8
epochs = 4
lr = 0.1
test_size = 8
attacks = ["clean"]
eval_eps = 0.3
eval_step_size = 0.075
autoattack_limit = 4
"""


@needs_extra
@pytest.mark.slow
def test_reproduce_eval_procs_measures_autoattack_on_two_processes(tmp_path, one_thread):
    """Plumbing only: at eps 0.3 APGD-CE fools every image, so standard AutoAttack takes a second."""
    (tmp_path / "tiny.toml").write_text(TINY_TABLE)
    out = tmp_path / "out"
    results = reproduce(str(tmp_path / "tiny.toml"), out=out, device="cpu", jobs=1, progress=False, eval_procs=2)
    cache = files.read_json(out / "cache" / "autoattack-erm-seed0.json")
    measured = cache["value"]
    assert cache["key"]["batch_size"] == 2 and (measured["processes"], measured["batch_size"]) == (2, 2)
    attacked = measured["examples_per_rank"]
    assert len(attacked) == 2 == len(measured["seconds_per_rank"]) and 0 < attacked[1] <= attacked[0] == 2, measured
    assert results["ours"]["whitebox"]["methods"]["erm"]["autoattack"]["mean"] == measured["results"]["autoattack"]
    one = evaluate_run(out / "erm-seed0", ["clean", "pgd20", "autoattack"], eps=0.3, step_size=0.075, limit=4,
                       batch_size=2, device="cpu", out=tmp_path / "one")  # one process, the same batches
    assert {a: r["error"] for a, r in one["results"].items()} == measured["results"]


if __name__ == "__main__":  # a torchrun worker of the first test
    shorten()
    sys.exit(main(sys.argv[1:]))
