"""Bad input, command by command: exit 2, one line on stderr naming the problem, nothing created or changed.

Each row is an invocation and a fragment its message must contain. Every row runs in-process
(`iat.cli.main`) inside a sandbox of prepared run directories (good, unfinished, empty, truncated,
corrupted, mismatched); before and after each row the whole sandbox is fingerprinted, so a row that
creates a directory or touches a file fails. An uncaught exception (a traceback) fails the row too.
Most rows fail before any data or model is loaded. A few rows also run as real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iat.cli import COMMANDS, build_parser, main
from iat.rundir import files

TRAIN = ["train", "--method", "erm", "--dataset", "digits", "--arch", "cnn-small", "--width", "8", "--epochs", "1",
         "--train-size", "200", "--batch-size", "50", "--device", "cpu"]
NEW = "new-run"  # an --out that does not exist: it must not exist afterwards either


def with_(base: list[str], **changes) -> list[str]:
    """`base` with options replaced (`batch_size="0"` replaces --batch-size) or appended."""
    argv = list(base)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def train(**changes) -> list[str]:
    return with_(TRAIN, **{"out": NEW, **changes})


# (id, argv, fragment of the one-line message). Paths are relative to the sandbox (the cwd).
CASES = [
    # --- iat train: names
    ("train-unknown-method", train(method="fgsm-at"), "unknown method 'fgsm-at'; choose one of: erm"),
    ("train-unknown-dataset", train(dataset="imagenet"), "unknown dataset 'imagenet'"),
    ("train-unknown-arch", train(arch="resnet50"), "unknown architecture 'resnet50'"),
    ("train-unknown-device", train(device="tpu"), "invalid choice: 'tpu'"),
    ("train-unknown-option", train() + ["--epoks", "3"], "unrecognized arguments: --epoks"),
    ("train-missing-out", TRAIN, "the following arguments are required: --out"),
    # --- iat train: numbers out of range or not numbers
    ("train-eps-8", train(eps="8"), "write 8/255 rather than 8"),
    ("train-eps-negative", train(eps="-0.1"), "outside [0, 1]"),
    ("train-eps-text", train(eps="eight"), "'eight' is not a number"),
    ("train-eps-div0", train(eps="8/0"), "is not a number"),
    ("train-step-size-0", train(step_size="0"), "outside (0, 1]"),
    ("train-epochs-0", train(epochs="0"), "--epochs 0 is outside [1, 100000]"),
    ("train-epochs-float", train(epochs="2.5"), "'2.5' is not an integer"),
    ("train-epochs-huge", train(epochs="1000000"), "--epochs 1000000 is outside [1, 100000]"),
    ("train-batch-size-negative", train(batch_size="-64"), "--batch-size -64 is outside [1, "),
    ("train-lr-0", train(lr="0"), "--lr 0.0 is outside (0, 10]"),
    ("train-lr-too-big", train(lr="100"), "--lr 100.0 is outside (0, 10]"),
    ("train-lr-nan", train(lr="nan"), "'nan' is not a finite number"),
    ("train-lr-text", train(lr="fast"), "'fast' is not a number"),
    ("train-momentum-2", train(momentum="2"), "--momentum 2.0 is outside [0, 1]"),
    ("train-mixup-alpha-0", train(mixup_alpha="0"), "--mixup-alpha 0.0 is outside (0.001, 100]"),
    ("train-manifold-alpha-text", train(manifold_alpha="two"), "'two' is not a number"),
    ("train-attack-steps-0", train(attack_steps="0"), "--attack-steps 0 is outside [1, "),
    ("train-seed-negative", train(seed="-1"), "--seed -1 is outside [0, "),
    ("train-width-0", train(width="0"), "--width 0 is outside [1, "),
    ("train-train-size-0", train(train_size="0"), "--train-size 0 is outside [1, "),
    ("train-checkpoint-every-negative", train(checkpoint_every="-5"), "--checkpoint-every -5 is outside [0, "),
    # --- iat train: lists
    ("train-milestones-not-ints", train(milestones="5,x"), "'x' is not an integer"),
    ("train-milestones-empty", train(milestones=","), "is an empty list"),
    ("train-milestones-decreasing", train(epochs="10", milestones="8,4"), "must be strictly increasing"),
    ("train-milestones-repeated", train(epochs="10", milestones="5,5"), "must be strictly increasing"),
    ("train-milestones-past-end", train(epochs="10", milestones="5,50"), "in [1, 10] (--epochs)"),
    # --- iat train: --out and --resume
    ("train-out-used", train(out="good"), "already exists and is not empty; pass --resume"),
    ("train-out-is-file", train(out="a-file"), "exists and is not a directory"),
    ("train-out-under-file", train(out="a-file/run"), "is a file, not a directory"),
    ("train-out-under-proc", train(out="/proc/iat-run"), "cannot be created"),
    ("train-resume-other-options", train(out="unfinished", epochs="3", resume=None),
     "--epochs 3 differs from the run's 1"),
    ("train-resume-other-method", train(out="unfinished", method="mixup", resume=None),
     "--method mixup differs from the run's erm"),
    ("train-resume-truncated-checkpoint", train(out="bad-checkpoint", resume=None), "not a readable checkpoint"),
    ("train-resume-empty-checkpoint", train(out="empty-checkpoint", resume=None), "not a readable checkpoint"),
    ("train-resume-foreign-checkpoint", train(out="foreign-checkpoint", resume=None), "not an iat checkpoint"),
    ("train-resume-checkpoint-other-model", train(out="other-model-checkpoint", resume=None),
     "its weights failed to load into this run's 'cnn-small' model"),
    ("train-resume-truncated-config", train(out="truncated-config", resume=None), "is not valid JSON"),
    ("train-resume-not-a-run", train(out="not-a-run", resume=None), "is not a run directory of `iat train`"),
    ("train-resume-out-is-file", train(out="a-file", resume=None), "exists and is not a directory"),
    # --- iat train: data and device
    ("train-data-dir-missing", train(data_dir="/nonexistent/iat-data"), "--data-dir /nonexistent/iat-data is not"),
    ("train-data-set-absent", train(dataset="mnist", data_dir="empty"), "mnist not found"),
    ("train-device-cuda", train(device="cuda"), "no CUDA GPU is available"),
    # --- iat eval
    ("eval-missing-run", ["eval", "nowhere"], "run directory nowhere does not exist"),
    ("eval-run-is-file", ["eval", "a-file"], "a-file is a file, not a run directory"),
    ("eval-empty-run", ["eval", "empty"], "config.json is missing"),
    ("eval-truncated-config", ["eval", "truncated-config"], "is not valid JSON"),
    ("eval-config-not-a-run", ["eval", "config-list"], "is not an iat run configuration"),
    ("eval-config-bad-values", ["eval", "config-bad-lr"], "config.json: lr 'fast' is not a number"),
    ("eval-unfinished-run", ["eval", "unfinished"], "has not finished training"),
    ("eval-corrupt-weights", ["eval", "corrupt-weights"], "not a valid safetensors file"),
    ("eval-truncated-weights", ["eval", "truncated-weights"], "not a valid safetensors file"),
    ("eval-empty-weights", ["eval", "empty-weights"], "not a valid safetensors file"),
    ("eval-weights-other-arch", ["eval", "other-arch"], "does not match the architecture 'mlp6'"),
    ("eval-weights-other-width", ["eval", "other-width"], "does not match the architecture 'cnn-small'"),
    ("eval-unknown-attack", ["eval", "good", "--attacks", "clean,cw"], "unknown attack 'cw'"),
    ("eval-empty-attack-list", ["eval", "good", "--attacks", ","], "is empty"),
    ("eval-pgd0", ["eval", "good", "--attacks", "pgd0"], "attack 'pgd0': PGD takes 1 to"),
    ("eval-eps-too-big", ["eval", "good", "--eps", "16"], "write 8/255 rather than 8"),
    ("eval-step-text", ["eval", "good", "--step-size", "big"], "'big' is not a number"),
    ("eval-limit-0", ["eval", "good", "--limit", "0"], "0 must be at least 1"),
    ("eval-batch-size-text", ["eval", "good", "--batch-size", "many"], "'many' is not an integer"),
    ("eval-device-cuda", ["eval", "good", "--device", "cuda"], "no CUDA GPU is available"),
    ("eval-data-dir-missing", ["eval", "good", "--data-dir", "/nonexistent/iat-data"], "is not a directory"),
    # --- iat demo
    ("demo-unknown-method", ["demo", "--out", NEW, "--methods", "erm,adv"], "unknown method 'adv'"),
    ("demo-empty-methods", ["demo", "--out", NEW, "--methods", ","], "--methods ',' names no method"),
    ("demo-seeds-0", ["demo", "--out", NEW, "--seeds", "0"], "0 must be at least 1"),
    ("demo-eps-too-big", ["demo", "--out", NEW, "--eps", "25"], "write 8/255 rather than 8"),
    ("demo-epochs-text", ["demo", "--out", NEW, "--epochs", "ten"], "'ten' is not an integer"),
    ("demo-unknown-arch", ["demo", "--out", NEW, "--arch", "vit"], "invalid choice: 'vit'"),
    ("demo-out-under-file", ["demo", "--out", "a-file/demo"], "a-file is a file, not a directory"),
    ("demo-out-is-file", ["demo", "--out", "a-file"], "--out a-file exists and is not a directory"),
    ("demo-data-dir-missing", ["demo", "--out", NEW, "--data-dir", "/nonexistent/iat-data"], "is not a directory"),
    ("demo-data-set-absent", ["demo", "--out", NEW, "--data-dir", "empty"], "fashion-mnist not found"),
    ("demo-device-cuda", ["demo", "--out", NEW, "--device", "cuda"], "no CUDA GPU is available"),
    # --- the top level
    ("unknown-command", ["fit"], "invalid choice: 'fit'"),
]

# what the commands below say of a run directory that is not there, and of an --out that is a file or under one
NO_RUN = "run directory nowhere does not exist"
UNDER_FILE = "a-file is a file, not a directory"
IS_FILE = "a-file exists and is not a directory"

CASES_ANALYZE = [
    ("analyze-unknown", ["analyze", "entropy", "good"], "invalid choice: 'entropy'"),
    ("analyze-norms-missing-run", ["analyze", "norms", "nowhere", "--out", NEW], NO_RUN),
    ("analyze-norms-corrupt-weights", ["analyze", "norms", "corrupt-weights", "--out", NEW],
     "not a valid safetensors file"),
    ("analyze-norms-unfinished", ["analyze", "norms", "unfinished", "--out", NEW], "has not finished training"),
    ("analyze-norms-out-is-file", ["analyze", "norms", "good", "--out", "a-file"], IS_FILE),
    ("analyze-norms-out-under-file", ["analyze", "norms", "good", "--out", "a-file/sub"], UNDER_FILE),
    ("analyze-probe-n-0", ["analyze", "probe", "good", "--n", "0", "--out", NEW], "0 must be at least 1"),
    ("analyze-probe-lr-text", ["analyze", "probe", "good", "--lr", "x", "--out", NEW], "'x' is not a number"),
    ("analyze-probe-device-cuda", ["analyze", "probe", "good", "--device", "cuda", "--out", NEW],
     "no CUDA GPU is available"),
]
CASES_REPRODUCE = [
    ("reproduce-unknown-name", ["reproduce", "table99", "--out", NEW], "table99"),
    ("reproduce-unknown-scale", ["reproduce", "table1", "--scale", "huge", "--out", NEW], "invalid choice: 'huge'"),
    ("reproduce-seeds-0", ["reproduce", "table1", "--seeds", "0", "--out", NEW], "0 must be at least 1"),
    ("reproduce-out-is-file", ["reproduce", "table1", "--scale", "smoke", "--out", "a-file"], IS_FILE),
    ("reproduce-out-under-file", ["reproduce", "table1", "--scale", "smoke", "--out", "a-file/sub"],
     UNDER_FILE),
]
CASES_SWEEP = [
    ("sweep-eps-list-bad", ["sweep", "eps", "good", "--eps", "1/255,x", "--out", NEW], "'x'"),
    ("sweep-eps-list-empty", ["sweep", "eps", "good", "--eps", ",", "--out", NEW], "empty"),
    ("sweep-steps-list-bad", ["sweep", "steps", "good", "--steps", "5,ten", "--out", NEW], "'ten'"),
    ("sweep-out-under-file", ["sweep", "eps", "good", "--eps", "0.1", "--out", "a-file/sub"], UNDER_FILE),
    ("sweep-missing-run", ["sweep", "eps", "nowhere", "--eps", "1/255", "--out", NEW], NO_RUN),
    ("sweep-corrupt-weights", ["sweep", "eps", "corrupt-weights", "--eps", "1/255", "--out", NEW],
     "not a valid safetensors file"),
]
CASES_TRANSFER = [
    ("transfer-eps-too-big", ["transfer", "good", "good", "--eps", "0.1,9", "--out", NEW], "'9' = 9 is outside [0, 1]"),
    ("transfer-out-under-file", ["transfer", "good", "good-copy", "--eps", "0.1", "--out", "a-file/sub"],
     UNDER_FILE),
    ("transfer-missing-run", ["transfer", "good", "nowhere", "--eps", "0.1", "--out", NEW], NO_RUN),
]
CASES_AUDIT = [
    ("audit-missing-run", ["audit", "nowhere"], NO_RUN),
    ("audit-out-under-file", ["audit", "good", "--out", "a-file/sub"], UNDER_FILE),
    ("audit-truncated-weights", ["audit", "truncated-weights"], "not a valid safetensors file"),
]


def available(rows: list, command: str) -> list:
    """The rows of a command that other engineers add; kept when the command exists."""
    return rows if command in build_parser()._subparsers._group_actions[0].choices else []


ALL = (CASES + available(CASES_ANALYZE, "analyze") + available(CASES_REPRODUCE, "reproduce")
       + available(CASES_SWEEP, "sweep") + available(CASES_TRANSFER, "transfer") + available(CASES_AUDIT, "audit"))


# ----------------------------------------------------------------------------------------- sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """Run directories in every state a user can leave one in."""
    from iat.config import TrainConfig
    from iat.training import train

    root = tmp_path_factory.mktemp("bad-input")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        good = train(TrainConfig(method="erm", dataset="digits", arch="cnn-small", width=8, epochs=1, train_size=200,
                                 batch_size=50, device="cpu"), root / "good", progress=False)
    finally:
        torch.set_num_threads(threads)
    weights = (good / files.WEIGHTS).read_bytes()
    config = json.loads((good / files.CONFIG).read_text())

    def variant(name: str, drop=(), **files: bytes | str) -> None:
        shutil.copytree(good, root / name)
        for f in drop:
            (root / name / f).unlink()
        for f, content in files.items():
            path = root / name / f.replace("__", ".")
            path.write_bytes(content if isinstance(content, bytes) else content.encode())

    checkpoint = (good / files.CHECKPOINT).read_bytes()
    variant("good-copy")
    variant("unfinished", drop=[files.WEIGHTS])
    variant("bad-checkpoint", drop=[files.WEIGHTS], checkpoint__pt=checkpoint[: len(checkpoint) // 2])
    variant("empty-checkpoint", drop=[files.WEIGHTS], checkpoint__pt=b"")
    foreign = {"model": {"w": torch.zeros(1)}, "epoch": 0}
    variant("foreign-checkpoint", drop=[files.WEIGHTS], checkpoint__pt=_torch_bytes(foreign))
    state = torch.load(good / files.CHECKPOINT, weights_only=True)
    state["model"].pop(next(iter(state["model"])))  # a weight of another model: one tensor missing
    variant("other-model-checkpoint", drop=[files.WEIGHTS], checkpoint__pt=_torch_bytes(state))
    variant("truncated-config", config__json=(good / files.CONFIG).read_text()[:40])
    variant("config-list", config__json="[1, 2, 3]")
    variant("config-bad-lr", config__json=json.dumps({**config, "lr": "fast"}))
    variant("corrupt-weights", model__safetensors=os.urandom(len(weights)))
    variant("truncated-weights", model__safetensors=weights[: len(weights) // 2])
    variant("empty-weights", model__safetensors=b"")
    variant("other-arch", config__json=json.dumps({**config, "arch": "mlp6", "width": 16}))
    variant("other-width", config__json=json.dumps({**config, "width": 16}))
    (root / "empty").mkdir()
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("my thesis\n")
    (root / "a-file").write_text("not a directory\n")
    return root


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def fingerprint(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = ("dir",)
        for f in filenames:
            p = Path(dirpath) / f
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


# --------------------------------------------------------------------------------------------- rows


ROWS = [pytest.param(*c[1:], id=c[0]) for c in ALL]


@pytest.mark.parametrize("argv, fragment", ROWS)
def test_bad_invocation_exits_2_with_one_line_and_touches_nothing(sandbox, monkeypatch, capsys, argv, fragment):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(sandbox)
    argv = [a for a in argv if a is not None]
    before = fingerprint(sandbox)
    try:
        code = main(argv + ["-q"] if argv[0] in COMMANDS and "--help" not in argv else argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("iat") and ": error: " in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    assert fingerprint(sandbox) == before
    assert not Path("/nonexistent").exists() and not Path("/proc/iat-run").exists()


def test_the_table_covers_enough(sandbox):
    per_command = {}
    for _, argv, _ in ALL:
        per_command[argv[0]] = per_command.get(argv[0], 0) + 1
    assert len(ALL) >= 25
    assert per_command["train"] >= 25 and per_command["eval"] >= 10 and per_command["demo"] >= 8


# ---------------------------------------------------------------------------------------- processes


@pytest.mark.parametrize("case_id", ["train-eps-8", "train-resume-truncated-checkpoint", "eval-corrupt-weights",
                                     "train-device-cuda"])
def test_a_real_process_prints_one_line_and_exits_2(sandbox, case_id):
    argv, fragment = next((a, f) for i, a, f in ALL if i == case_id)
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = fingerprint(sandbox)
    done = subprocess.run([sys.executable, "-m", "iat", *[a for a in argv if a is not None]], cwd=sandbox,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and fragment in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert fingerprint(sandbox) == before
