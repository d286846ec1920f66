"""AutoAttack under torchrun: each rank attacks its share of the batches, the masks are merged, and the error is
one process's with the same batch size.

Standard AutoAttack costs 10-25 s per batch that keeps a robust example on this tiny model (9 target classes,
5000 Square queries), so the torchrun test runs a shortened AutoAttack (`shorten`: 10 iterations, 2 target
classes, 100 queries), in the workers and in the one-process reference alike: what is tested is how the work is
split and merged, not the attack's strength. Run as a script, this file is `python -m iat` with that AutoAttack.
"""

from __future__ import annotations

import shutil
import sys

import pytest
from test_ddp import run

from iat.attacks import autoattack_available
from iat.cli import main
from iat.distributed import SINGLE
from iat.evaluate import evaluate_run
from iat.rundir import files

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


if __name__ == "__main__":  # a torchrun worker of the test above
    shorten()
    sys.exit(main(sys.argv[1:]))
