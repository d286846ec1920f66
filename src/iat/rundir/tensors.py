"""Tensors in a run directory: the weights (safetensors) and the resumable training state (a `torch.save`
dict of tensors and plain values), written atomically (iat.rundir.files) and read without executing code.

The training state is read back with `weights_only=True`, which refuses any pickled object that is not a
tensor or a plain container: nothing in a run directory can run code when it is loaded. Weights that are
not finite are refused too (`check_finite_state`).
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save

from iat.errors import UsageError
from iat.rundir import files

# ---------------------------------------------------------------------------------------- weights


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    files.atomic_write_bytes(path, save(tensors))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing: the run has not finished training; finish it with "
                         "`iat train ... --resume` (same options)")
    try:
        if _is_utf8(path):
            state = load_file(str(path))
        else:  # safetensors opens only UTF-8 paths; Python opens any
            state = load(path.read_bytes())
    except Exception as e:  # safetensors raises SafetensorError, OSError, or ValueError on bad headers
        kind = "damaged" if isinstance(e, (SafetensorError, OSError, ValueError)) else "unreadable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise UsageError(f"{path} is not a valid safetensors file ({first}); the file is {kind}: "
                         "restore it or train the run again") from None
    check_finite_state(state, path)
    return state


def _is_utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the file name, kept by Python as surrogates
        return False
    return True


def check_finite_state(state: dict[str, Any], path: str | Path) -> None:
    """Refuse weights that cannot be a trained model: NaN or inf anywhere, or a negative BatchNorm
    variance. Such a model scores as "88% error" or passes gradient checks by accident; it is damage
    (a diverged run or a corrupted file), and no number computed from it means anything.

    Raises UsageError naming `path` and the first bad tensor.
    """
    fix = "restore the file or train the run again"
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()):
            continue
        if not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "infinite"
            raise UsageError(f"{path} holds {kind} values in {name}; the weights are unusable: {fix}")
        if name.endswith("running_var") and bool((t < 0).any()):
            raise UsageError(f"{path} holds a negative BatchNorm variance in {name} ({float(t.min()):.3g}); "
                             f"the weights are unusable: {fix}")


# ------------------------------------------------------------------------------------- checkpoint


def save_checkpoint(path: str | Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    files.atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """Load a training checkpoint; anything but tensors and plain containers is refused.

    Raises UsageError (one line) for a missing, damaged or unsafe file; no code in it ever runs.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} is missing")
    fix = f"delete {path} to restart the run from scratch, or restore the file"
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            with open(path, "rb") as f:  # Python opens any path; torch.load(str) fails on non-UTF-8 names
                state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(unsupported GLOBAL \S+|Unsupported operand \d+|Unsupported class \S+)", str(e))
        what = found.group(1) if found else "objects other than tensors"
        raise UsageError(f"{path} was refused for safety: it holds code, not just tensors ({what}); {fix}") from None
    except Exception as e:  # torch.load raises RuntimeError, EOFError, IndexError, ... on damaged files
        raise UsageError(f"{path} is not a readable checkpoint ({type(e).__name__}); the file is damaged; "
                         f"{fix}") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} is not an iat checkpoint (a {type(state).__name__}, not a dict); {fix}")
    return state
