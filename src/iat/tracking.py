"""Experiment tracking: `--log tensorboard,mlflow,wandb` (any subset) on train, reproduce and demo.

Each run directory gets its own logged run, written beside its files:

- tensorboard: event files in RUN/tensorboard/ (the optional extra `iat[tensorboard]`);
- mlflow: an MLflow file store in RUN/mlruns/, or the server MLFLOW_TRACKING_URI names (`iat[mlflow]`);
- wandb: offline, in RUN/wandb/, unless WANDB_MODE says otherwise (`iat[wandb]`; `wandb sync` uploads it).

What is logged: the config as hyper-parameters; `train/loss` (the epoch's running mean loss, the number the
progress bar shows) and `train/lr` every POSTFIX_EVERY steps, read where the bar reads it, so tracking adds
no host-device sync of its own; per epoch the row of metrics.jsonl; `iat eval` results when the run is
evaluated. The step axis is the global step (epoch * steps per epoch + step).

A resumed run continues the same logged run: RUN/tracking.json keeps the trackers and their run ids. A run
stopped by Ctrl-C or SIGTERM checkpoints its last step, so its resume logs nothing twice. A killed one (SIGKILL,
a crash) resumes from its last checkpoint, and steps it logged after that are logged again: TensorBoard's
reader drops the earlier ones (purge_step), MLflow's are not logged again (its history's last step is read);
W&B offline keeps each attempt in its own folder (a killed attempt's only as far as W&B's service wrote it),
so `wandb sync` may see those few steps twice.

The training loop reaches the trackers through `for_run` (a no-op unless `request` asked for some): the CLI
calls `request(names)` before training; worker processes of `iat reproduce` and `iat demo` inherit the
request through the environment variable IAT_LOG.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from iat.errors import UsageError
from iat.rundir import files

log = logging.getLogger("iat.tracking")

TRACKERS = ("tensorboard", "mlflow", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> module it imports
STATE_FILE = "tracking.json"  # in the run directory: the trackers and their run ids, for resume and `iat eval`
ENV = "IAT_LOG"  # the request, for worker processes


def parse_log(text: str, option: str = "--log") -> tuple[str, ...]:
    """'tensorboard,mlflow' -> ('tensorboard', 'mlflow'); UsageError naming an unknown or missing tracker."""
    names: list[str] = []
    for item in text.split(","):
        name = item.strip().lower()
        if not name:
            continue
        if name not in TRACKERS:
            raise UsageError(f"{option} {item.strip()!r} is not a tracker; choose from {', '.join(TRACKERS)}")
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError(f"{option} is empty; give e.g. {option} tensorboard")
    for name in names:
        check_installed(name, option)
    return tuple(names)


def check_installed(name: str, option: str = "--log") -> None:
    """Refuse a tracker whose package is missing, before anything runs."""
    import importlib.util

    if importlib.util.find_spec(PACKAGES[name]) is None:
        raise UsageError(f"{option} {name} needs the {PACKAGES[name]} package, which is not installed: "
                         f"pip install 'iat[{name}]'")


def request(names: tuple[str, ...] | None) -> None:
    """Ask every training run of this process (and of the worker processes it starts) to log to `names`."""
    if names:
        os.environ[ENV] = ",".join(names)
    else:
        os.environ.pop(ENV, None)


def requested() -> tuple[str, ...]:
    text = os.environ.get(ENV, "")
    return tuple(n for n in text.split(",") if n in TRACKERS)


# --------------------------------------------------------------------------------------------- backends


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as flat hyper-parameters: numbers, strings and booleans as they are, the rest as JSON."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _params(value).items()})
        elif value is None or isinstance(value, (list, tuple)):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


class TensorBoardTracker:
    """Event files in RUN/tensorboard/; a resumed run purges what was logged at or after its resume step."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], state: dict, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # an earlier attempt logged every step up to the checkpoint it resumes from, and maybe some after it
        self.first_step = resume_step + 1 if resume_step else 0
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=self.first_step or None)
        if not state.get("params_logged"):
            self._log_params(config)
            state["params_logged"] = True

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _params(config).items()}
        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```\n" + json.dumps(dict(config), indent=2) + "\n```", 0)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a killed run keeps what it logged up to here (resume purges only later steps)

    def figure(self, key: str, path: Path, step: int) -> None:
        import numpy as np
        from matplotlib.image import imread

        image = imread(str(path))
        self.writer.add_image(key, np.asarray(image)[..., :3], step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """An MLflow run in RUN/mlruns/ (a file store) or MLFLOW_TRACKING_URI's; its id kept for resume."""

    name = "mlflow"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], state: dict, resume_step: int):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3 refuses its file store unless asked for it; a folder in the run is the point here
            uri = (run_dir / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        run_id = state.get("mlflow_run_id")
        if run_id is None:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "iat")
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            state["mlflow_run_id"], state["mlflow_tracking_uri"] = run_id, uri
            params = _params(config)
            for key, value in params.items():
                self.client.log_param(run_id, key, str(value)[:6000])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        history = self.client.get_metric_history(run_id, "train/loss") if resume_step else []
        self.first_step = max([resume_step + 1 if resume_step else 0, *(m.step + 1 for m in history)])

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.client.log_metric(self.run_id, key, value, step=step)

    def figure(self, key: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """A W&B run, offline unless WANDB_MODE is set; its id kept so that a resumed run continues it."""

    name = "wandb"

    def __init__(self, run_dir: Path, config: Mapping[str, Any], state: dict, resume_step: int):
        import wandb

        run_id = state.setdefault("wandb_id", uuid.uuid4().hex[:16])  # W&B ids: letters and digits
        quiet = not logging.getLogger("iat").isEnabledFor(logging.INFO)  # `iat -q`: no W&B banner either
        self.run = wandb.init(dir=str(run_dir), id=run_id, resume="allow", name=run_dir.name, config=dict(config),
                              mode=os.environ.get("WANDB_MODE", "offline"),
                              project=os.environ.get("WANDB_PROJECT", "iat"), settings=wandb.Settings(silent=quiet))
        self.first_step = resume_step + 1 if resume_step else 0

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def figure(self, key: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({key: wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "wandb": WandbTracker}


# ------------------------------------------------------------------------------------------ a run's log


class RunLog:
    """The trackers of one run directory; every call goes to each of them. Steps already logged by an earlier
    attempt of the run (before an interruption) are skipped, so a resumed run has no duplicate steps."""

    def __init__(self, run_dir: Path, trackers: list, state: dict):
        self.run_dir, self.trackers, self.state = run_dir, trackers, state

    @property
    def active(self) -> bool:
        return bool(self.trackers)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self.state["last_step"] = max(step, self.state.get("last_step", 0))  # where `iat eval` logs its results
        for tracker in list(self.trackers):
            if step >= tracker.first_step:
                self._guarded(tracker, lambda t=tracker: t.metrics(clean, step))

    def _guarded(self, tracker, call) -> None:
        """A tracker that fails (a full disk, a server gone) is dropped with one warning: the run goes on."""
        try:
            call()
        except Exception as e:
            log.warning("tracking: %s failed (%s); the run continues without it", tracker.name, _line(e))
            self.trackers.remove(tracker)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        self.metrics({"train/loss": loss, "train/lr": lr}, global_step)

    def epoch(self, row: Mapping[str, Any], global_step: int) -> None:
        self.metrics({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, global_step)

    def figure(self, key: str, path: Path, step: int = 0) -> None:
        for tracker in list(self.trackers):
            self._guarded(tracker, lambda t=tracker: t.figure(key, path, step))

    def close(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.close()
            except Exception as e:  # a tracker failing at its end must not hide the run's own outcome
                log.warning("tracking: %s could not be closed (%s)", tracker.name, _line(e))
        if self.trackers:
            files.write_json(self.run_dir / STATE_FILE, self.state)


NO_LOG = RunLog(Path("."), [], {})


def _line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def open_log(run_dir: str | Path, names: tuple[str, ...], config: Mapping[str, Any], resume_step: int = 0) -> RunLog:
    """The trackers `names` for `run_dir` (created if absent), continuing the logged run of an earlier attempt."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    state: dict = {}
    if path.is_file():
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {}
    state = state if isinstance(state, dict) else {}
    state["trackers"] = sorted(set(state.get("trackers", [])) | set(names))
    trackers = []
    for name in names:
        try:
            trackers.append(BACKENDS[name](run_dir, config, state, resume_step))
        except Exception as e:  # the tracker's own failure (a server not reachable): train without it
            log.warning("tracking: %s could not start (%s); the run continues without it", name, _line(e))
    files.write_json(path, state)  # the run ids, before any step: an interrupted run resumes the same logged run
    return RunLog(run_dir, trackers, state)


@contextlib.contextmanager
def for_run(run_dir: str | Path, config: Mapping[str, Any], resume_step: int, is_main: bool = True) -> Iterator[RunLog]:
    """The training loop's trackers: those `request`ed, on the main process only (NO_LOG otherwise)."""
    names = requested() if is_main else ()
    if not names:
        yield NO_LOG
        return
    run_log = open_log(run_dir, names, config, resume_step)
    try:
        yield run_log
    finally:
        run_log.close()


def log_eval(run_dir: str | Path, report: Mapping[str, Any]) -> None:
    """`iat eval` results into the run's trackers (those its training logged to), at the run's last step."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.is_file():
        return
    try:
        state = json.loads(path.read_text())
        names = tuple(n for n in state.get("trackers", []) if n in TRACKERS)
    except (OSError, ValueError, AttributeError):
        return
    import importlib.util

    names = tuple(n for n in names if importlib.util.find_spec(PACKAGES[n]) is not None)
    if not names:
        return
    step = int(state.get("last_step", 0))
    weights = report.get("weights", "last")
    values = {f"eval/{name}_error": r["error"] for name, r in report.get("results", {}).items()
              if isinstance(r, dict) and "error" in r}
    values = {(k if weights == "last" else k.replace("eval/", f"eval_{weights}/")): v for k, v in values.items()}
    try:
        run_log = open_log(run_dir, names, {}, 0)
        try:
            for tracker in run_log.trackers:
                tracker.metrics(values, step)
        finally:
            run_log.close()
    except Exception as e:  # the evaluation is saved in eval.json; a tracker's failure must not turn it into an error
        log.warning("tracking: the results were not logged to %s (%s)", ", ".join(names), e)


def log_experiment(out_dir: str | Path, params: Mapping[str, Any]) -> None:
    """An experiment's pictures (OUT/*.png: the trade-off, white-box, transfer ... figures of `iat reproduce` and
    `iat demo`) into a logged run of its own in OUT, beside the runs' own; nothing unless trackers were requested."""
    names, out_dir = requested(), Path(out_dir)
    figures = sorted(out_dir.glob("*.png"))
    if not names or not figures:
        return
    try:
        run_log = open_log(out_dir, names, params, 0)
        try:
            for figure in figures:
                run_log.figure(f"figures/{figure.stem}", figure)
        finally:
            run_log.close()
    except Exception as e:  # the experiment's results are written; a tracker's failure must not undo that
        log.warning("tracking: the figures were not logged to %s (%s)", ", ".join(names), _line(e))
