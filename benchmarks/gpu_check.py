"""GPU check: is iat correct and fast on a real GPU? One script, under 8 minutes on one H100.

    bash benchmarks/gpu_check.sh [OUT_DIR]        # or: python benchmarks/gpu_check.py --out OUT_DIR

Sections (each one guarded: a failure is recorded and the next section runs):
1. environment: GPU, driver, torch, bf16 support;
2. the CUDA tests (`pytest -m cuda`);
3. speed: images/s of one training step of PreActResNet18 on CIFAR-shaped batches (3x32x32, random
   images; the numbers do not depend on the pixels), batch 64 and 512, for iat's step (`--variants`:
   eager fp32, TF32, bf16 AMP, the attack in bf16, cuDNN autotuning, CUDA graphs, torch.compile, and
   torch.compile inside CUDA graphs) against two plain implementations run in the same process: the
   locuslab train_pgd.py style (its attack calls loss.backward(), so parameters get gradients too)
   and a plain loop with input-only attack gradients;
4. sync check: training steps under torch.cuda.set_sync_debug_mode("error") (no host sync inside);
5. two short real runs each of pgd and iat-mixup (PreActResNet18 on Fashion-MNIST padded to 32x32) in
   two modes (`--run-modes`: eager, graphs, graphs-fast, graphs-compile-fast), with their clean and PGD-20 error.
Writes OUT/gpu_check.json (every figure) and OUT/gpu_check.md (the tables), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from iat.config import TrainConfig, build_model  # noqa: E402
from iat.train.engine import build_update  # noqa: E402

CIFAR_EPOCH = 50_000  # images per CIFAR-10 epoch
FLOP_PER_IMAGE = 1.11e9  # PreActResNet18, one 32x32 forward pass (the reference)
started = time.perf_counter()
budget_s = 390.0  # stop starting new work after this (6.5 min): the whole lease is 8 minutes, start-up included


def left() -> float:
    return budget_s - (time.perf_counter() - started)


def guarded(results: dict, name: str, fn: Callable[[], object]) -> None:
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # a GPU check reports what broke and goes on
        results[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    row = results[name]
    timed = isinstance(row, dict) and "ms_per_step" in row
    figures = {k: row[k] for k in ("ms_per_step", "cifar_epoch_s")} if timed else ""
    print(f"[{time.perf_counter() - started:6.1f}s] {name}: {time.perf_counter() - t0:.1f}s {figures}", flush=True)


# ------------------------------------------------------------------------------------ environment


def environment() -> dict:
    props = torch.cuda.get_device_properties(0)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return {"gpu": props.name, "sm_count": props.multi_processor_count, "capability": f"{props.major}.{props.minor}",
            "nvidia_smi": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "bf16": torch.cuda.is_bf16_supported(), "python": platform.python_version()}


def cuda_tests() -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, capture_output=True, text=True, timeout=max(30, min(150, left() - 60)),
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return {"returncode": proc.returncode, "tail": (proc.stdout + proc.stderr)[-2500:]}


# ------------------------------------------------------------------------------------------ speed


def plain_step(model, opt, x, y, *, eps=8 / 255, step=2 / 255, steps=7, backward_style: bool) -> None:
    """IAT with Mixup written plainly: Algorithm 1 with input mixup and PGD-7 (for comparison)."""

    def mix_loss(inp):
        lam = torch.distributions.Beta(1.0, 1.0).sample().item()
        perm = torch.randperm(len(inp), device=inp.device)
        logits = model(lam * inp + (1 - lam) * inp[perm])
        return lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])

    loss_clean = mix_loss(x)
    model.eval()
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y)
        if backward_style:  # locuslab train_pgd.py: gradients reach the parameters too
            loss.backward()
            grad = delta.grad.detach()
            delta.grad.zero_()
        else:
            (grad,) = torch.autograd.grad(loss, delta)
        d = (delta + step * grad.sign()).clamp(-eps, eps)
        delta = ((x + d).clamp(0, 1) - x).detach().requires_grad_(True)
    model.train()
    loss = (loss_clean + mix_loss((x + delta).detach())) / 2
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def cfg_for(variant: str, batch: int) -> TrainConfig:
    kw = dict(method="iat-mixup", dataset="cifar10", arch="preactresnet18", batch_size=batch, device="cuda")
    if "tf32" in variant:
        kw["tf32"] = "on"
    if "amp" in variant:
        kw["amp"] = True
    if "amp-attack" in variant:  # the attack under autocast too (--attack-precision amp)
        kw["attack_precision"] = "amp"
    if "cudnn" in variant:  # --cudnn-benchmark
        kw["cudnn_benchmark"] = "on"
    if "contiguous" in variant:
        kw["channels_last"] = False
    if "graphs" in variant:
        kw["cuda_graphs"] = True
    if "compile" in variant:
        kw["compile"] = True
    return TrainConfig(**kw)


def time_steps(step: Callable[[torch.Tensor, torch.Tensor], None], batch: int, warmup: int, timed: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.rand(batch, 3, 32, 32, device="cuda", generator=g) for _ in range(4)]
    ys = [torch.randint(0, 10, (batch,), device="cuda", generator=g) for _ in range(4)]
    t0 = time.perf_counter()
    for i in range(warmup):
        step(xs[i % 4], ys[i % 4])
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(timed):
        step(xs[i % 4], ys[i % 4])
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / timed
    ips = batch / ms * 1000
    return {"ms_per_step": round(ms, 2), "images_per_s": round(ips), "cifar_epoch_s": round(CIFAR_EPOCH / ips, 1),
            "warmup_s": round(warm_s, 1), "tflops": round(ips * FLOP_PER_IMAGE * 3 * 9.5 / 1e12, 1)}


# Measured on an H100 already (benchmarks/README.md): plain-input-grad, iat-fp32, iat-tf32, iat-amp,
# iat-graphs, iat-graphs-tf32, iat-graphs-amp, iat-compile-amp, the -cudnn variants (run with --variants).
# The default list: the reference (20.9 ms), the attack in bf16 under graphs, and (last: each compiles
# for about 35 s) torch.compile inside graphs, with the attack in bf16 (8.3 s per CIFAR-10 epoch on an
# H100, issue 13's goal) and in TF32.
SPEED_VARIANTS = ["plain-backward", "iat-graphs-tf32-amp", "iat-graphs-tf32-amp-attack-cudnn"]
COMPILED_VARIANTS = ["iat-graphs-compile-tf32-amp-attack-cudnn", "iat-graphs-compile-tf32-amp-cudnn"]


def speed(variants: list[str] = SPEED_VARIANTS, reserve: float = 200, batches: tuple[int, ...] = (64, 512)) -> dict:
    """Each variant at each batch size, while more than `reserve` seconds of the budget are left."""
    out: dict = {}
    for batch in batches:
        warmup, timed = (5, 30) if batch <= 128 else (3, 8)  # about as many images timed at every size
        for variant in variants:
            if left() < reserve:
                out[f"{variant}@{batch}"] = {"skipped": "time budget"}
                continue
            torch.manual_seed(0)
            cfg = cfg_for(variant, batch)

            def run(variant=variant, cfg=cfg, batch=batch, warmup=warmup, timed=timed):
                if variant.startswith("plain"):
                    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
                    model = build_model(cfg).cuda()
                    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
                    step = lambda x, y: plain_step(model, opt, x, y, backward_style=variant == "plain-backward")  # noqa: E731
                else:
                    step = build_update(cfg, torch.device("cuda"))
                return time_steps(step, batch, warmup + (5 if "compile" in variant else 0), timed)

            guarded(out, f"{variant}@{batch}", run)
    return out


def sync_check() -> dict:
    """Training steps with torch's sync debug mode set to error: any host sync inside raises."""
    report = {}
    for variant in ("iat-fp32", "iat-graphs"):
        step = build_update(cfg_for(variant, 64), torch.device("cuda"))
        x, y = torch.rand(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
        for _ in range(5):  # warm-up (cudnn autotuning, graph capture) outside the check
            step(x, y)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(5):
                step(x, y)
            report[variant] = "no host sync in 5 steps"
        except RuntimeError as e:
            report[variant] = f"SYNC: {str(e).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
    return report


# -------------------------------------------------------------------------------------- real runs


# The short real runs' modes. eager and graphs (fp32) were run on an H100 already (benchmarks/README.md);
# the default pair asks what the fastest setting costs in robustness against fp32 under graphs.
FAST = ["--tf32", "--amp", "--attack-precision", "amp", "--cudnn-benchmark"]
RUN_MODES = {"eager": [], "graphs": ["--cuda-graphs"], "graphs-fast": ["--cuda-graphs", *FAST],
             "graphs-compile-fast": ["--cuda-graphs", "--compile", *FAST]}


def real_runs(data_dir: str | None, train_size: int, epochs: int,
              modes: tuple[str, ...] = ("graphs", "graphs-compile-fast")
              ) -> dict:
    out = {}
    root = Path(tempfile.mkdtemp(prefix="iat-gpu-"))
    for method in ("pgd", "iat-mixup"):
        for mode in modes:
            if left() < 45:
                out[f"{method}/{mode}"] = {"skipped": "time budget"}
                continue
            run = root / f"{method}-{mode}"
            cmd = [sys.executable, "-m", "iat", "train", "--method", method, "--dataset", "fashion-mnist-32",
                   "--arch", "preactresnet18", "--epochs", str(epochs), "--train-size", str(train_size),
                   "--eps", "0.1", "--step-size", "0.025", "--device", "cuda", "--out", str(run)]
            if data_dir:
                cmd += ["--data-dir", data_dir]
            cmd += RUN_MODES[mode]
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
            t0 = time.perf_counter()
            try:
                tr = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30, left() - 20))
            except subprocess.TimeoutExpired:
                out[f"{method}/{mode}"] = {"error": "training timed out (budget)"}
                continue
            row = {"train_s": round(time.perf_counter() - t0, 1), "returncode": tr.returncode}
            if tr.returncode != 0:
                row["error"] = (tr.stdout + tr.stderr)[-1500:]
                out[f"{method}/{mode}"] = row
                continue
            metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            row["epoch_s"] = [m["seconds"] for m in metrics]
            row["train_loss"] = [round(m["train_loss"], 4) for m in metrics]
            ev = [sys.executable, "-m", "iat", "eval", str(run), "--attacks", "clean,pgd20", "--limit", "2000"]
            if data_dir:
                ev += ["--data-dir", data_dir]
            try:
                er = subprocess.run(ev, capture_output=True, text=True, env=env, timeout=max(20, left()))
            except subprocess.TimeoutExpired:
                out[f"{method}/{mode}"] = {**row, "eval_error": "timed out (budget)"}
                continue
            if er.returncode == 0:
                res = json.loads((run / "eval.json").read_text())["results"]
                row.update({a: res[a]["error"] for a in ("clean", "pgd20")})
            else:
                row["eval_error"] = (er.stdout + er.stderr)[-800:]
            out[f"{method}/{mode}"] = row
    return out


# ---------------------------------------------------------------------------------------- report


def tables(results: dict) -> str:
    env = results.get("environment", {})
    lines = [f"# gpu_check: {env.get('gpu', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}", ""]
    tests = results.get("cuda_tests", {})
    lines += [f"CUDA tests: return code {tests.get('returncode', '?')}; "
              + (tests.get("tail", "").strip().splitlines() or ["?"])[-1], ""]
    lines += ["| step (PreActResNet18, 3x32x32) | batch | ms/step | images/s | CIFAR-10 epoch (s) | x plain-backward |",
              "|---|---|---|---|---|---|"]
    sp = results.get("speed", {})
    if "error" in sp:  # the whole section failed: its error, and no rows
        lines.append(f"| speed | | {str(sp['error'])[:80]} | | | |")
    for key, row in sp.items():
        if not isinstance(row, dict):
            continue
        variant, _, batch = key.partition("@")
        base = sp.get(f"plain-backward@{batch}", {}).get("images_per_s")
        if "images_per_s" in row:
            ratio = f"{row['images_per_s'] / base:.2f}x" if base else "-"
            lines.append(f"| {variant} | {batch} | {row['ms_per_step']} | {row['images_per_s']} | "
                         f"{row['cifar_epoch_s']} | {ratio} |")
        else:
            lines.append(f"| {variant} | {batch} | {(row.get('error') or row.get('skipped', '?'))[:80]} | | | |")
    lines += ["", f"Sync check: {results.get('sync_check')}", "",
              "| run (Fashion-MNIST 32x32) | train s | s/epoch | clean err % | PGD-20 err % |", "|---|---|---|---|---|"]
    for key, row in results.get("real_runs", {}).items():
        if not isinstance(row, dict):
            continue
        epochs = row.get("epoch_s", row.get("error", row.get("skipped", "-")))
        lines.append(f"| {key} | {row.get('train_s', '-')} | {epochs} | {row.get('clean', '-')} | "
                     f"{row.get('pgd20', '-')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    global budget_s
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's idx files (default: iat's search path)")
    p.add_argument("--train-size", type=int, default=5_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--variants", default=",".join(SPEED_VARIANTS), help="speed variants to time")
    p.add_argument("--run-modes", default="graphs,graphs-compile-fast",
                   help=f"modes of the short real runs: {', '.join(RUN_MODES)}")
    p.add_argument("--skip", default="", help="comma-separated sections to skip: speed,sync,tests,runs,compile")
    p.add_argument("--batches", default=None,
                   help="batch sizes of the speed section (default 64,512; the compiled variants: 64 unless given)")
    p.add_argument("--budget", type=float, default=budget_s, help="seconds after which no new work starts")
    args = p.parse_args()
    budget_s = args.budget
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; nothing to check", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(","))
    results: dict = {}

    def save() -> str:  # after every section: a run stopped by its time limit still returns what it measured
        results["seconds"] = round(time.perf_counter() - started, 1)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
        md = tables(results)
        (out / "gpu_check.md").write_text(md)
        return md

    guarded(results, "environment", environment)
    save()
    if "speed" not in skip:
        reserve = 0 if {"tests", "runs"} <= skip else 200  # time kept for the sections after it
        batches = tuple(int(b) for b in (args.batches or "64,512").split(","))
        guarded(results, "speed", lambda: speed(args.variants.split(","), reserve, batches))
        save()
        if "compile" not in skip:  # about 35 s of compilation per variant: batch 64 only unless --batches says
            compiled_batches = batches if args.batches else (64,)
            guarded(results, "speed_compiled", lambda: speed(COMPILED_VARIANTS, max(reserve - 60, 0), compiled_batches))
            compiled = results.pop("speed_compiled")
            results["speed"].update(compiled if "error" not in compiled else {"compiled": compiled})
            save()
    if "sync" not in skip:
        guarded(results, "sync_check", sync_check)
        save()
    if "tests" not in skip and left() > 120:
        guarded(results, "cuda_tests", cuda_tests)
        save()
    if "runs" not in skip:
        guarded(results, "real_runs", lambda: real_runs(args.data_dir, args.train_size, args.epochs,
                                                             tuple(args.run_modes.split(","))))
    print(save())
    return 0


if __name__ == "__main__":
    sys.exit(main())
