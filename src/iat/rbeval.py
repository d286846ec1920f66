"""`iat eval RUN --protocol robustbench`: RobustBench's own evaluation of a run, and the claim a submitter files.

`robustbench.eval.benchmark` (the optional extra `iat[robustbench]`) runs standard AutoAttack, L-inf, at the
run's eps, on all 10,000 test images. The accuracies go into eval.json (`clean` and `autoattack`, with
`protocol: robustbench`) and into a claim JSON in the layout of RobustBench's model_info files (its ModelInfo
fields), at RUN/robustbench/model_info/DATASET/Linf/NAME.json, to complete (link, authors, venue) and submit.

    claim = benchmark_run("runs/cifar10-iat")
"""

from __future__ import annotations

import dataclasses
import shlex
from fractions import Fraction
from pathlib import Path

from iat.config import resolve_device
from iat.data import load_data
from iat.errors import UsageError
from iat.rundir import files, outdir
from iat.rundir.evals import save_eval
from iat.rundir.read import load_run_config, load_run_model
from iat.zoo import DATASETS, THREAT, import_robustbench

N_EXAMPLES = 10_000  # RobustBench's leaderboards: the whole CIFAR test split


def check_protocol(dataset: str, limit: int | None) -> None:
    """Refuse, before anything runs, what RobustBench's evaluation cannot take."""
    if dataset not in DATASETS:
        raise UsageError(f"--protocol robustbench: RobustBench ranks {' and '.join(DATASETS)} models ({THREAT}), "
                         f"not {dataset}; evaluate this run with the default --protocol iat")
    if limit is not None:
        raise UsageError(f"--protocol robustbench evaluates all {N_EXAMPLES:,} test images, as its leaderboard does; "
                         "drop --limit")


def eps_text(eps: float) -> str:
    """RobustBench writes eps as '8/255' where it is a multiple of 1/255."""
    k = Fraction(eps).limit_denominator(255)
    return f"{k.numerator * (255 // k.denominator)}/255" if abs(float(k) - eps) < 1e-9 and 255 % k.denominator == 0 \
        else f"{eps:g}"


def benchmark_run(run_dir: str | Path, *, data_dir: str | None = None, device: str = "auto",
                  batch_size: int = 500) -> dict:
    """Run RobustBench's benchmark on the run's (last) weights; write eval.json and the claim JSON; return the
    claim."""
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    check_protocol(cfg.dataset, None)
    import_robustbench()
    from robustbench.eval import benchmark
    from robustbench.utils import ModelInfo

    root = data_dir or cfg.data_dir
    load_data(cfg.dataset, "test", root, limit=1)  # there, or one line naming the fix: RobustBench would download it
    from iat.data import DEFAULT_DATA_DIR

    dev = resolve_device(device)
    model = load_run_model(run_dir, dev)
    clean, robust = benchmark(model, n_examples=N_EXAMPLES, dataset=cfg.dataset, threat_model=THREAT, eps=cfg.eps,
                              data_dir=str(root or DEFAULT_DATA_DIR), device=dev, batch_size=batch_size)
    name = run_dir.resolve().name
    claim = dataclasses.asdict(ModelInfo(
        name=name, additional_data=cfg.aux_data is not None or cfg.svhn_extra, number_forward_passes=1,
        dataset=cfg.dataset, architecture=cfg.arch, eps=eps_text(cfg.eps), clean_acc=f"{100 * clean:.2f}",
        autoattack_acc=f"{100 * robust:.2f}",
        footnote=f"Trained with iat ({cfg.method}); evaluated with `iat eval {shlex.quote(str(run_dir))} "
                 "--protocol robustbench`."))
    report = {"dataset": cfg.dataset, "split": "test", "n_examples": N_EXAMPLES, "eps": cfg.eps, "step_size": None,
              "restarts": 1, "weights": "last", "protocol": "robustbench",
              "results": {"clean": {"error": 100 * (1 - clean)}, "autoattack": {"error": 100 * (1 - robust)}}}
    path = run_dir / "robustbench" / "model_info" / cfg.dataset / THREAT / f"{name}.json"
    outdir.make_dir(path.parent)
    files.write_json(path, claim)
    save_eval(run_dir, report)
    return {**claim, "path": str(path)}
