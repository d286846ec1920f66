"""`iat export`: a torch.export program that loads where iat cannot be imported, its weights and model card."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import iat
from iat.cli import main
from iat.export import CARD_MARK
from iat.rundir import files, tensors

# Runs with no site processing (so the editable install's .pth, which puts iat's source on the path, is not
# read) and only torch's site-packages folder on the path; iat is also blocked outright, in case it is
# installed there as a plain package. It proves it cannot import iat, then loads the program.
LOADER = """
import sys
sys.path.append(sys.argv[1])
sys.modules["iat"] = None
try:
    import iat
except ImportError:
    pass
else:
    raise SystemExit("iat is importable here: the test proves nothing")
import torch
program = torch.export.load(sys.argv[2]).module()
x = torch.load(sys.argv[3], weights_only=True)
torch.save(program(x), sys.argv[4])
"""


def _export(run_dir: Path, out: Path) -> int:
    return main(["-q", "export", str(run_dir), "--out", str(out)])


def test_program_loads_without_iat_and_gives_iat_logits(trained_runs, tmp_path):
    out = tmp_path / "exported" / "pgd.pt2"
    assert _export(trained_runs["pgd"], out) == 0
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # a batch size the trace never saw
    torch.save(x, tmp_path / "x.pt")
    site = str(Path(torch.__file__).parent.parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", LOADER, site, str(out), str(tmp_path / "x.pt"),
                           str(tmp_path / "logits.pt")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    with torch.no_grad():
        expected = iat.load_model(trained_runs["pgd"])(x)
    assert logits.shape == (7, 10)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)

    weights = load_file(out.with_suffix(".safetensors"))
    saved = tensors.load_weights(trained_runs["pgd"] / files.WEIGHTS)
    assert weights.keys() == saved.keys()
    assert all(torch.equal(weights[k], saved[k]) for k in saved)


def test_model_card_takes_the_largest_evaluation_at_the_runs_eps(trained_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_runs["pgd"], run)
    entry = {"step_size": 0.025, "restarts": 1, "weights": "last"}
    history = [{"attack": "clean", "eps": 0.1, "n_examples": 1797, "error": 3.5, **entry},
               {"attack": "pgd20", "eps": 0.1, "n_examples": 30, "error": 60.0, **entry},
               {"attack": "pgd20", "eps": 0.1, "n_examples": 500, "error": 41.25, **entry},
               {"attack": "pgd20", "eps": 0.3, "n_examples": 1797, "error": 99.0, **entry}]  # another eps
    (run / files.EVAL).write_text(json.dumps({"results": {}, "history": history}))
    assert _export(run, tmp_path / "m.pt2") == 0
    card = (tmp_path / "README.md").read_text()
    assert card.startswith(CARD_MARK)
    assert "| clean | 96.50 | 1,797 test images |" in card
    assert "| PGD-20 | 58.75 | 500 test images, eps 1/10" in card
    assert "| AutoAttack | not measured |" in card and "--attacks autoattack" in card
    assert "iat train --method pgd --dataset digits --arch cnn-small --width 8 --epochs 10" in card
    assert "method `pgd`" in card and "data set `digits`" in card


@pytest.mark.parametrize("case", ["suffix", "foreign-card", "not-a-run", "out-is-dir"])
def test_bad_input_one_line_exit_2_nothing_written(trained_runs, tmp_path, capsys, case):
    run, out = trained_runs["pgd"], tmp_path / "m.pt2"
    if case == "suffix":
        out = tmp_path / "m.pt"
    elif case == "foreign-card":
        (tmp_path / "README.md").write_text("# my project\n")
    elif case == "not-a-run":
        run = tmp_path / "nothing"
    else:
        out.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert _export(run, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("iat export: error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if case == "foreign-card":
        assert (tmp_path / "README.md").read_text() == "# my project\n"
