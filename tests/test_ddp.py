"""One run on two processes (torchrun, DDP over gloo on this CPU): the same maths, exact resume, one evaluation.

Each torchrun here starts `python -m iat` twice with one thread per process (torchrun's default), on
a few hundred digits images, with --standalone so that parallel test runs do not share a port.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iat.cli import main
from iat.config import TrainConfig, build_model
from iat.data import dataset_info
from iat.distributed import SINGLE, World, rank_seed
from iat.errors import UsageError
from iat.evaluate import evaluate_run
from iat.rundir import files, tensors
from iat.training import train
from iat.training.loop import check_world, smallest_batch
from iat.training.step import TrainData

# cnn-small (BatchNorm) with every source of randomness: data order, Beta draws, mixing layer, partners, PGD start.
KILL_ARGS = ["--method", "iat-manifold-mixup", "--dataset", "digits", "--arch", "cnn-small", "--width", "8",
             "--epochs", "3", "--train-size", "256", "--batch-size", "64", "--attack-steps", "1", "--eps", "0.1",
             "--step-size", "0.05", "--seed", "3", "--device", "cpu", "--checkpoint-every", "2"]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("IAT_TEST_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    e.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "IAT_DIST_TIMEOUT_S": "60", **extra})
    return e


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "iat", *args]


def run(cmd: list[str], **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(**extra_env), capture_output=True, text=True, timeout=120)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def worker_pid(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker `rank` (a child of the agent process `agent`)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == agent and f"RANK={rank}".encode() in (stat.parent / "environ").read_bytes().split(b"\0"):
                return int(stat.parent.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


# ------------------------------------------------------------------------------------------ pieces


def test_rank_zero_keeps_the_seed_and_other_ranks_get_their_own():
    assert rank_seed(7, 0) == 7
    seeds = {rank_seed(7, r) for r in range(1, 8)} | {rank_seed(8, 1)}
    assert len(seeds) == 8 and 7 not in seeds and all(0 <= s < 2**63 for s in seeds)


def test_shards_cover_a_global_batch_in_order():
    batch = torch.arange(17)
    parts = [World(r, 2).shard(batch) for r in range(2)]
    assert torch.equal(torch.cat(parts), batch) and [len(p) for p in parts] == [9, 8]
    assert SINGLE.shard(batch) is batch


def test_weight_digests_take_the_paper_resnets_in_channels_last():
    """A channels_last 1x1 shortcut kernel (PreActResNet18, WRN-28-10) is 'contiguous' with a last stride > 1:
    the digest the ranks compare before saving must still read it (it once crashed every torchrun run there)."""
    model = build_model(TrainConfig(method="erm", dataset="digits", arch="preactresnet18", width=8))
    (plain,) = SINGLE.digests(model)
    model.to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and p.shape[-1] == 1 and p.stride(-1) != 1 for p in model.parameters())
    assert SINGLE.digests(model) == [plain]  # the values' digest, whatever their memory order


def test_world_checks_before_anything_is_written(tmp_path):
    cfg = TrainConfig(method="erm", dataset="digits", arch="mlp6", batch_size=64, sync_bn=True)
    cpu = torch.device("cpu")
    with pytest.raises(UsageError, match="trained on 2 process.*--nproc_per_node 2"):
        check_world(cfg, {"world_size": 2, "n_train": 256}, 1, 256, cpu, tmp_path)
    with pytest.raises(UsageError, match="--sync-bn needs CUDA"):
        check_world(cfg, None, 2, 256, cpu, tmp_path)
    with pytest.raises(UsageError, match="a batch of 2, fewer than the 3 processes"):
        check_world(cfg, None, 3, 258, torch.device("cuda"), tmp_path)
    check_world(cfg, None, 1, 257, cpu, tmp_path)  # one process: --sync-bn does nothing, any batch is fine


@pytest.mark.parametrize("n, batch, world", [(17, 8, 2), (257, 64, 2), (8, 8, 2), (10, 8, 2)])
def test_world_check_takes_the_merged_last_batch(tmp_path, n, batch, world):
    """A last batch of one joins the batch before it (TrainData.steps_per_epoch), so every rank has examples."""
    cfg = TrainConfig(method="erm", dataset="digits", arch="mlp6", batch_size=batch)
    check_world(cfg, None, world, n, torch.device("cpu"), tmp_path)
    data = TrainData(torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.int64), dataset_info("digits"))
    sizes = [len(x) for x, _, _ in data.batches(torch.arange(n), 0, batch)]
    assert min(sizes) == smallest_batch(n, batch) >= world


SYNC_BN_EVAL = """
import torch
from iat.attacks import PGD
from iat.config import TrainConfig
from iat.distributed import process_group
from iat.config import build_model

with process_group(torch.device("cpu")) as world:
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model(TrainConfig(dataset="digits", arch="cnn-small",
                                                                                  width=8)))
    if world.rank == 0:  # rank 1 goes straight to the end: an eval-mode SyncBatchNorm must not wait for it
        model.eval()
        x = torch.rand(8, 1, 8, 8)
        model(x)
        PGD(model, 0.1, 0.05, 2, bn_mode="eval")(x, torch.zeros(8, dtype=torch.long))
    print("done", world.rank)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_batchnorm_in_eval_mode_does_not_wait_for_the_other_ranks(tmp_path):
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", SYNC_BN_EVAL], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port, IAT_DIST_TIMEOUT_S="20"))
             for r in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == ["done 0", "done 1"]


# --------------------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("train_size, batch_size", [(256, 64), (255, 51)])
def test_two_ranks_agree_and_match_one_process_without_batchnorm(tmp_path, one_thread, train_size, batch_size):
    """mlp6 (no BatchNorm), ERM on digits (no augmentation): the gradient DDP averages is the global batch's,
    so two processes train what one does, up to float rounding; also when every batch splits 26 + 25 (each
    rank's loss weighted by its share of the batch: without it the weights differ by about 4e-3)."""
    args = ["--method", "erm", "--dataset", "digits", "--arch", "mlp6", "--width", "8", "--epochs", "2",
            "--train-size", str(train_size), "--batch-size", str(batch_size), "--lr", "0.5", "--seed", "1",
            "--device", "cpu"]
    done = run(torchrun("train", *args, "--out", str(tmp_path / "two")))
    assert done.returncode == 0, done.stderr
    assert "all 2 ranks hold the same weights" in done.stderr  # checked by the run itself before saving
    assert done.stdout.count("trained erm") == 1  # rank 0 speaks
    config = files.read_json(tmp_path / "two" / files.CONFIG)
    assert config["world_size"] == 2 and config["torch_threads"] == 1

    one = train(TrainConfig(method="erm", dataset="digits", arch="mlp6", width=8, epochs=2, train_size=train_size,
                            batch_size=batch_size, lr=0.5, seed=1, device="cpu"),
                tmp_path / "one", progress=False)
    assert files.read_json(one / files.CONFIG)["world_size"] == 1
    a, b = load_file(one / files.WEIGHTS), load_file(tmp_path / "two" / files.WEIGHTS)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    rows = [jsonl(run_dir / files.METRICS) for run_dir in (one, tmp_path / "two")]
    assert [r["train_loss"] for r in rows[0]] == pytest.approx([r["train_loss"] for r in rows[1]], rel=1e-6)
    assert rows[0][0]["train_loss"] > rows[0][1]["train_loss"]  # it learned something


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "reference"
    done = run(torchrun("train", *KILL_ARGS, "--out", str(out), "-q"))
    assert done.returncode == 0, done.stderr
    return out


def stop_rank_1(out: Path, *more: str, sig: int, checkpoints: int) -> str:
    """Start the run (writes slowed down), send `sig` to rank 1 once `checkpoints` more checkpoints are written
    and the next write has begun; return torchrun's stderr."""
    agent = subprocess.Popen(torchrun("train", *KILL_ARGS, "--out", str(out), "-q", *more),
                             env=env(IAT_TEST_WRITE_DELAY="0.3"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    inodes: list[int] = []
    deadline = time.monotonic() + 90
    while len(inodes) < checkpoints or not any(p.name.startswith(".checkpoint.pt.") for p in files.temp_files(out)):
        assert agent.poll() is None and time.monotonic() < deadline, "the run ended before the moment to stop it"
        try:
            ino = (out / files.CHECKPOINT).stat().st_ino
            if not inodes or inodes[-1] != ino:
                inodes.append(ino)
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    pid = worker_pid(agent.pid, 1)
    assert pid is not None
    os.kill(pid, sig)
    _, err = agent.communicate(timeout=90)
    assert agent.returncode != 0 and not (out / files.WEIGHTS).exists(), err[-2000:]
    return err


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    """A run stopped twice: SIGTERM to rank 1 alone (every rank stops after the same step, with a checkpoint),
    then, resumed, `kill -9` of rank 1 while rank 0 writes a checkpoint."""
    if not sys.platform.startswith("linux"):
        pytest.skip("finds torchrun's workers in /proc")
    out = tmp_path_factory.mktemp("ddp") / "killed"
    err = stop_rank_1(out, sig=signal.SIGTERM, checkpoints=1)
    assert "exitcode  : 143" in err  # rank 1 checkpointed with rank 0 and exited 128 + SIGTERM
    ckpt = tensors.load_checkpoint(out / files.CHECKPOINT)
    assert len(ckpt["ranks"]) == 2 and 0 < ckpt["epoch"] * 4 + ckpt["step"] < 12
    stop_rank_1(out, "--resume", sig=signal.SIGKILL, checkpoints=1)
    return out


@pytest.mark.slow
def test_kill_9_of_a_rank_then_resume_is_bit_exact(reference, killed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    done = run(torchrun("train", *KILL_ARGS, "--out", str(out), "--resume", "-q"))
    assert done.returncode == 0, done.stderr
    assert sha(out / files.WEIGHTS) == sha(reference / files.WEIGHTS)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in jsonl(out / files.METRICS)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in jsonl(reference / files.METRICS)]


def test_resuming_with_another_world_size_is_refused(killed, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    assert main(["train", *KILL_ARGS, "--out", str(out), "--resume", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "was trained on 2 process(es)" in err and "--nproc_per_node 2" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


# ------------------------------------------------------------------------------------------- eval


@pytest.mark.slow
def test_eval_under_torchrun_gives_the_numbers_of_one_process(trained_runs, tmp_path, one_thread):
    """The ranks share the attack batches and merge their masks; two restarts test the merge between them."""
    runs = [tmp_path / name for name in ("one", "two")]
    for r in runs:
        shutil.copytree(trained_runs["pgd"], r)
    attacks = "clean,fgsm,pgd3,pgd5"
    done = run(torchrun("eval", str(runs[1]), "--attacks", attacks, "--restarts", "2", "--batch-size", "64", "-q"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("| pgd5") == 1  # rank 0 prints the table
    one = evaluate_run(runs[0], attacks.split(","), restarts=2, batch_size=64, device="cpu")
    two = files.read_json(runs[1] / files.EVAL)
    assert two["results"] == one["results"]
    assert 0 < one["results"]["clean"]["error"] < one["results"]["pgd5"]["error"] < 100


class FakeWorld:
    """Rank `rank` of a world of 2, without a process group: on_main runs fn on rank 0 only."""

    def __init__(self, rank: int):
        self.size, self.is_main = 2, rank == 0

    def on_main(self, fn):
        return fn() if self.is_main else None


@pytest.mark.parametrize("rank, downloads", [(0, [True, False]), (1, [False])])
def test_under_torchrun_rank_0_alone_downloads_the_data(monkeypatch, rank, downloads):
    """Every rank downloading and extracting into one folder at once corrupts it: rank 0 downloads first (the
    others wait at on_main), then every rank reads the files without downloading."""
    from iat.training import loop

    seen = []
    monkeypatch.setattr(loop.TrainData, "load", classmethod(lambda cls, cfg, device: seen.append(cfg.download)))
    cfg = TrainConfig(method="erm", dataset="digits", arch="mlp6", download=True)
    loop.load_training_data(cfg, torch.device("cpu"), FakeWorld(rank))
    assert seen == downloads
    assert cfg.download is True  # the run's config (config.json) still says what was asked
