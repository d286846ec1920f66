"""GPU check: is iat correct and fast on a real GPU? One script, under 8 minutes on one H100.

    bash benchmarks/gpu_check.sh [OUT_DIR]        # or: python benchmarks/gpu_check.py --out OUT_DIR
    python benchmarks/gpu_check.py --device cpu --quick --profile --out OUT_DIR   # its code paths, on a CPU

Sections (each one guarded: a failure is recorded and the next section runs):
1. environment: GPU, driver, torch, bf16 support;
2. FLOPs: what one IAT-Mixup PGD-7 step of PreActResNet18 computes (torch.utils.flop_counter: convolutions and
   matmuls, forward and backward), for the plain steps and iat's, in forward-equivalents (FLOPs / FLOPs of one
   forward pass at the same batch): the input-only attack's backward computes no parameter gradients;
3. speed: images/s of one training step of PreActResNet18 on CIFAR-shaped batches (3x32x32, random
   images; the numbers do not depend on the pixels), batch 64 and 512, for iat's step (`--variants`:
   eager fp32, TF32, bf16 AMP, the attack in bf16, cuDNN autotuning, CUDA graphs, torch.compile, and
   torch.compile inside CUDA graphs) against the plain step of examples/iat_in_one_page.py run in the same
   process: with the attack's parameter gradients computed and dropped (plain-backward, the cost of locuslab's
   train_pgd.py) and with input-only attack gradients (plain-inputgrad). Every variant starts from PyTorch's
   stock numeric flags (cuDNN convolutions in TF32, matmuls in fp32, no cuDNN autotuning) and its own changes to
   them are undone after it; a plain variant named -tf32-cudnn runs with the flags of iat's fast setting (TF32
   everywhere, cuDNN autotuning). The profile of one step of the fastest variant (compiled, graphed): its top
   10 kernels by CUDA time;
4. sync check: training steps under torch.cuda.set_sync_debug_mode("error") (no host sync inside);
5. two short real runs each of pgd and iat-mixup (PreActResNet18 on Fashion-MNIST padded to 32x32) in
   two modes (`--run-modes`: eager, graphs, graphs-fast, graphs-compile-fast), with their clean and PGD-20 error.
Writes OUT/gpu_check.json (every figure) and OUT/gpu_check.md (the tables), and prints the tables.
On a CPU (`--device cpu`), sections 1-3 run (the CUDA-only ones are skipped), `--quick` on a PreActResNet18 of
width 4 at batch 8, and `--profile` prints the top 10 CPU ops.
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
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from train_step import FAST_FLAGS, STOCK_FLAGS, own_flags, plain_update, torch_flags  # noqa: E402

from iat.config import TrainConfig, build_model  # noqa: E402
from iat.training.engine import build_update  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))
from iat_in_one_page import pgd  # noqa: E402

CIFAR_EPOCH = 50_000  # images per CIFAR-10 epoch
CUDA = torch.device("cuda")
ON = "on" if isinstance(TrainConfig().tf32, str) else True  # --tf32, --cudnn-benchmark: the words of 0.1.0, or a bool
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


def environment(device: torch.device) -> dict:
    common = {"torch": torch.__version__, "python": platform.python_version(), "flags_at_start": torch_flags()}
    if device.type != "cuda":
        return {**common, "gpu": f"none (CPU: {platform.processor() or platform.machine()})",
                "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(0)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return {**common, "gpu": props.name, "sm_count": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}", "nvidia_smi": smi, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "bf16": torch.cuda.is_bf16_supported()}


def cuda_tests() -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, capture_output=True, text=True, timeout=max(30, min(150, left() - 60)),
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    return {"returncode": proc.returncode, "tail": (proc.stdout + proc.stderr)[-2500:]}


# ------------------------------------------------------------------------------------------ FLOPs


class NoModules:
    """FlopCounterMode's per-module attribution, turned off: torch's ModuleTracker fails in torch.autograd.grad
    with respect to a leaf (the attack's input), and only the total is wanted."""
    parents = {"Global"}

    def __enter__(self) -> NoModules:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def counted(fn: Callable[[], object]) -> int:
    """FLOPs of the convolutions and matmuls `fn` runs (forward and backward), as torch's flop counter counts them."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = NoModules()
    with counter:
        fn()
    return counter.get_total_flops()


def flop_count(device: torch.device, batch: int = 64, width: int | None = None) -> dict:
    """FLOPs of one IAT-Mixup PGD-7 step of PreActResNet18 on 3x32x32 images, per implementation, per image and in
    forward-equivalents (FLOPs / FLOPs of one forward pass of the same batch); and of one attack step alone, with
    input gradients only and with the parameters' too. The counts do not depend on the device."""
    cfg = cfg_for("iat-fp32", batch, device, width)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    out = {"arch": cfg.arch, "width": width, "batch": batch, "attack_steps": cfg.attack_steps}
    with own_flags(STOCK_FLAGS):
        model = build_model(cfg).to(device)
        with torch.no_grad():
            forward = counted(lambda: model(x))
        out["forward_gflop_per_image"] = round(forward / batch / 1e9, 4)
        steps = {"plain-backward": plain_update(cfg, device, attack_param_grads=True),
                 "plain-inputgrad": plain_update(cfg, device, attack_param_grads=False),
                 "iat": build_update(cfg, device)}
        for name, step in steps.items():
            flops = counted(lambda step=step: step(x, y))
            out[name] = {"gflop_per_image": round(flops / batch / 1e9, 3),
                         "forward_equivalents": round(flops / forward, 2)}
        for name, param_grads in (("attack_step_inputgrad", False), ("attack_step_backward", True)):
            model.requires_grad_(param_grads)
            flops = counted(lambda g=param_grads: pgd(model, x, y, cfg.eps, cfg.step_size, 1, param_grads=g))
            out[name] = {"forward_equivalents": round(flops / forward, 2)}
    return out


# ------------------------------------------------------------------------------------------ speed


def cfg_for(variant: str, batch: int, device: torch.device = CUDA, width: int | None = None
            ) -> TrainConfig:
    kw = dict(method="iat-mixup", dataset="cifar10", arch="preactresnet18", width=width, batch_size=batch,
              attack_steps=7, device=device.type)
    if variant.startswith("plain"):  # the plain step takes eps, step and lr from here; its flags: flags_for
        return TrainConfig(**kw)
    if "tf32" in variant:
        kw["tf32"] = ON
    if "amp" in variant:
        kw["amp"] = True
    if "amp-attack" in variant:  # the attack under autocast too (--attack-precision amp)
        kw["attack_precision"] = "amp"
    if "cudnn" in variant:  # --cudnn-benchmark
        kw["cudnn_benchmark"] = ON
    if "contiguous" in variant:
        kw["channels_last"] = False
    if "graphs" in variant:
        kw["cuda_graphs"] = True
    if "compile" in variant:
        kw["compile"] = True
    return TrainConfig(**kw)


def flags_for(variant: str) -> dict:
    """The flags a variant starts from: PyTorch's stock ones; iat's fast ones for a plain variant named -tf32-cudnn
    (iat's variants set their own from their options, as `iat train` does)."""
    return FAST_FLAGS if variant.startswith("plain") and variant.endswith("-tf32-cudnn") else STOCK_FLAGS


def make_step(variant: str, cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    if variant.startswith("plain"):
        return plain_update(cfg, device, attack_param_grads=variant.startswith("plain-backward"))
    return build_update(cfg, device)


def batches_on(device: torch.device, batch: int, n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator(device=device).manual_seed(0)
    return [(torch.rand(batch, 3, 32, 32, device=device, generator=g),
             torch.randint(0, 10, (batch,), device=device, generator=g)) for _ in range(n)]


def time_steps(step: Callable[[torch.Tensor, torch.Tensor], None], batch: int, warmup: int, timed: int,
               device: torch.device = CUDA) -> dict:
    data = batches_on(device, batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for i in range(warmup):
        step(*data[i % 4])
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(timed):
            step(*data[i % 4])
        end.record()
        sync()
        ms = start.elapsed_time(end) / timed
    else:
        t0 = time.perf_counter()
        for i in range(timed):
            step(*data[i % 4])
        ms = (time.perf_counter() - t0) * 1000 / timed
    ips = batch / ms * 1000
    return {"ms_per_step": round(ms, 2), "images_per_s": round(ips, 1), "cifar_epoch_s": round(CIFAR_EPOCH / ips, 1),
            "warmup_s": round(warm_s, 1)}


def profile_top(step: Callable[[torch.Tensor, torch.Tensor], None], batch: int, device: torch.device,
                steps: int = 3, top: int = 10) -> dict:
    """torch.profiler over `steps` steps: the `top` kernels by CUDA time (on a CPU, or where the profiler saw no
    kernel: the ops by their own CPU time), in microseconds per step and as a share of all of them."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    data = batches_on(device, batch)
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(steps):
            step(*data[i % 4])
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    rows = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    by, time_of = "CUDA time", lambda e: e.self_device_time_total
    if not rows:
        rows = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
        by, time_of = "own CPU time", lambda e: e.self_cpu_time_total
    total = sum(time_of(e) for e in rows) or 1
    rows.sort(key=time_of, reverse=True)
    return {"by": by, "steps": steps,
            "top": [{"name": e.key[:110], "us_per_step": round(time_of(e) / steps, 1),
                     "calls_per_step": round(e.count / steps, 2), "share": round(time_of(e) / total, 4)}
                    for e in rows[:top]]}


# The default list: the plain step with PyTorch's stock flags, without and with the attack's parameter
# gradients, then with iat's fast flags; iat's default (true fp32, eager); the attack in bf16 under graphs;
# and (last: each compiles for about 35 s) torch.compile inside graphs, with the attack in bf16 (iat's fastest
# setting, `--speed fast`) and in TF32. Measured on an H100 before (benchmarks/README.md): iat-tf32, iat-amp,
# iat-graphs, iat-graphs-tf32, iat-graphs-amp, iat-compile-amp, the -cudnn variants (run with --variants).
SPEED_VARIANTS = ["plain-backward", "plain-inputgrad", "plain-inputgrad-tf32-cudnn", "iat-fp32",
                  "iat-graphs-tf32-amp", "iat-graphs-tf32-amp-attack-cudnn"]
COMPILED_VARIANTS = ["iat-graphs-compile-tf32-amp-attack-cudnn", "iat-graphs-compile-tf32-amp-cudnn"]
PROFILED = COMPILED_VARIANTS[0]  # at the first batch size: iat's fastest setting, one compiled graphed step
QUICK_VARIANTS = ["plain-backward", "plain-inputgrad", "plain-inputgrad-tf32-cudnn", "iat-fp32", "iat-amp-attack"]


def speed(variants: list[str] = SPEED_VARIANTS, reserve: float = 200, batches: tuple[int, ...] = (64, 512), *,
          device: torch.device = CUDA, width: int | None = None, profiled: str | None = None,
          steps: tuple[int, int] | None = None) -> dict:
    """Each variant at each batch size, while more than `reserve` seconds of the budget are left, each under its
    own flags (`own_flags`): what it ran under is recorded, and the next variant starts from the stock flags
    again. `profiled` at the first batch size is profiled too (`profile_top`)."""
    out: dict = {}
    for batch in batches:
        warmup, timed = steps or ((5, 30) if batch <= 128 else (3, 8))  # about as many images timed at every size
        for variant in variants:
            if left() < reserve:
                out[f"{variant}@{batch}"] = {"skipped": "time budget"}
                continue
            torch.manual_seed(0)
            cfg = cfg_for(variant, batch, device, width)

            def run(variant=variant, cfg=cfg, batch=batch, warmup=warmup, timed=timed):
                with own_flags(flags_for(variant)):
                    step = make_step(variant, cfg, device)
                    row = time_steps(step, batch, warmup + (5 if "compile" in variant else 0), timed, device=device)
                    row["flags"] = torch_flags()
                    if variant == profiled and batch == batches[0]:
                        try:  # a profiler that fails keeps the row's timing
                            row["profile"] = profile_top(step, batch, device)
                        except Exception as e:
                            row["profile_error"] = f"{type(e).__name__}: {e}"
                return row

            guarded(out, f"{variant}@{batch}", run)
    return out


def sync_check() -> dict:
    """Training steps with torch's sync debug mode set to error: any host sync inside raises."""
    report = {}
    for variant in ("iat-fp32", "iat-graphs"):
        with own_flags(STOCK_FLAGS):
            report[variant] = sync_checked(build_update(cfg_for(variant, 64), torch.device("cuda")))
    return report


def sync_checked(step: Callable[[torch.Tensor, torch.Tensor], None]) -> str:
    x, y = torch.rand(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    for _ in range(5):  # warm-up (cudnn autotuning, graph capture) outside the check
        step(x, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            step(x, y)
        return "no host sync in 5 steps"
    except RuntimeError as e:
        return f"SYNC: {str(e).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


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


def flags_text(flags: dict | None) -> str:
    if not flags:
        return "?"
    tf32 = {(False, False): "fp32", (False, True): "conv TF32", (True, False): "matmul TF32", (True, True): "TF32"}
    return tf32[flags["matmul_tf32"], flags["cudnn_tf32"]] + (", autotune" if flags["cudnn_benchmark"] else "")


def step_kind(variant: str) -> str:
    """The FLOP count a variant's step does: its row of the FLOPs section."""
    return "plain-backward" if variant.startswith("plain-backward") else "plain-inputgrad" if variant.startswith(
        "plain") else "iat"


FAST_PLAIN = "plain-inputgrad-tf32-cudnn"  # the plain step with iat's fast flags: the second reference


def tables(results: dict) -> str:
    env = results.get("environment", {})
    lines = [f"# gpu_check: {env.get('gpu', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}", ""]
    tests = results.get("cuda_tests")
    if tests:
        lines += [f"CUDA tests: return code {tests.get('returncode', '?')}; "
                  + (tests.get("tail", "").strip().splitlines() or ["?"])[-1], ""]
    fl = results.get("flops", {})
    if "error" in fl:
        lines += [f"FLOPs: {str(fl['error'])[:200]}", ""]
    elif fl:
        lines += [f"FLOPs of one IAT-Mixup PGD-{fl['attack_steps']} step ({fl['arch']}, width "
                  f"{fl['width'] or 'default'}, batch {fl['batch']}, 3x32x32; torch.utils.flop_counter: convolutions "
                  f"and matmuls, forward and backward); one forward pass is {fl['forward_gflop_per_image']} GFLOP "
                  "per image:", "",
                  "| step | GFLOP per image | forward-equivalents |", "|---|---|---|"]
        names = {"plain-backward": "plain-backward (the attack's parameter gradients computed too)",
                 "plain-inputgrad": "plain-inputgrad (input-only attack gradients)", "iat": "iat (build_update)"}
        lines += [f"| {names[k]} | {fl[k]['gflop_per_image']} | {fl[k]['forward_equivalents']} |" for k in names]
        attack = {k: fl[k]["forward_equivalents"] for k in ("attack_step_inputgrad", "attack_step_backward")}
        lines += [f"| one attack step, input gradients only | | {attack['attack_step_inputgrad']} |",
                  f"| one attack step, parameter gradients too | | {attack['attack_step_backward']} |", ""]
    lines += ["Every step starts from PyTorch's stock flags (cuDNN convolutions in TF32, matmuls in fp32, no cuDNN "
              "autotuning), restored after it; `flags` is what it ran under. TFLOP/s: the FLOPs above per second.", "",
              "| step (PreActResNet18, 3x32x32) | batch | flags | ms/step | images/s | CIFAR-10 epoch (s) | TFLOP/s | "
              f"x plain-backward | x {FAST_PLAIN} |", "|---|---|---|---|---|---|---|---|---|"]
    sp = results.get("speed", {})
    if "error" in sp:  # the whole section failed: its error, and no rows
        lines.append(f"| speed | | | {str(sp['error'])[:80]} | | | | | |")
    profiled = None
    for key, row in sp.items():
        if not isinstance(row, dict):
            continue
        variant, _, batch = key.partition("@")
        if "images_per_s" in row:
            ratios = []
            for ref in ("plain-backward", FAST_PLAIN):
                base = sp.get(f"{ref}@{batch}", {}).get("images_per_s")
                ratios.append(f"{row['images_per_s'] / base:.2f}x" if base else "-")
            gflop = fl.get(step_kind(variant), {}).get("gflop_per_image") if "error" not in fl else None
            tflops = f"{row['images_per_s'] * gflop / 1000:.3g}" if gflop else "-"
            lines.append(f"| {variant} | {batch} | {flags_text(row.get('flags'))} | {row['ms_per_step']} | "
                         f"{row['images_per_s']} | {row['cifar_epoch_s']} | {tflops} | {' | '.join(ratios)} |")
            profiled = (key, row["profile"]) if "profile" in row else profiled
            if "profile_error" in row:
                lines.append(f"| profile of {variant} | {batch} | | {row['profile_error'][:80]} | | | | | |")
        else:
            lines.append(f"| {variant} | {batch} | | {(row.get('error') or row.get('skipped', '?'))[:80]} | | | | | |")
    if profiled:
        key, prof = profiled
        lines += ["", f"Profile of {key} (torch.profiler, {prof['steps']} steps): the top {len(prof['top'])} "
                  f"{'kernels' if prof['by'] == 'CUDA time' else 'ops'} by {prof['by']}:", "",
                  "| kernel or op | us per step | calls per step | share |", "|---|---|---|---|"]
        lines += [f"| `{r['name']}` | {r['us_per_step']} | {r['calls_per_step']:g} | {r['share']:.1%} |"
                  for r in prof["top"]]
    if "sync_check" in results:
        lines += ["", f"Sync check: {results['sync_check']}"]
    if "real_runs" in results:
        lines += ["", "| run (Fashion-MNIST 32x32) | train s | s/epoch | clean err % | PGD-20 err % |",
                  "|---|---|---|---|---|"]
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
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: the FLOP count, speed and profile code paths on a CPU (the CUDA-only sections skipped)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny setting: PreActResNet18 of width 4, batch 8, 1 warm-up and 2 timed steps, no compile")
    p.add_argument("--profile", action="store_true",
                   help="on a CPU: profile one iat variant too (on CUDA the compiled graphed step always is)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST's idx files (default: iat's search path)")
    p.add_argument("--train-size", type=int, default=5_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--variants", default=None, help=f"speed variants to time (default {','.join(SPEED_VARIANTS)}; "
                                                     f"--quick: {','.join(QUICK_VARIANTS)})")
    p.add_argument("--run-modes", default="graphs,graphs-compile-fast",
                   help=f"modes of the short real runs: {', '.join(RUN_MODES)}")
    p.add_argument("--skip", default="",
                   help="comma-separated sections to skip: flops,speed,compile,profile,sync,tests,runs")
    p.add_argument("--batches", default=None,
                   help="batch sizes of the speed section (default 64,512; the compiled variants: 64 unless given)")
    p.add_argument("--budget", type=float, default=budget_s, help="seconds after which no new work starts")
    args = p.parse_args()
    budget_s = args.budget
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; nothing to check (--device cpu checks the code paths)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(args.skip.split(","))
    if device.type != "cuda":
        skip |= {"sync", "tests", "runs"}  # CUDA only
        skip |= set() if args.profile else {"profile"}
    if args.quick:
        skip.add("compile")
    width = 4 if args.quick else None
    variants = (args.variants or ",".join(QUICK_VARIANTS if args.quick else SPEED_VARIANTS)).split(",")
    batches = tuple(int(b) for b in (args.batches or ("8" if args.quick else "64,512")).split(","))
    steps = (1, 2) if args.quick else None
    iat_variants = [v for v in variants if v.startswith("iat")]
    profiled = None if "profile" in skip else PROFILED if "compile" not in skip else (iat_variants or [None])[-1]
    results: dict = {}

    def save() -> str:  # after every section: a run stopped by its time limit still returns what it measured
        results["seconds"] = round(time.perf_counter() - started, 1)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
        md = tables(results)
        (out / "gpu_check.md").write_text(md)
        return md

    guarded(results, "environment", lambda: environment(device))
    save()
    if "flops" not in skip:
        guarded(results, "flops", lambda: flop_count(device, batch=8 if args.quick else 64, width=width))
        save()
    if "speed" not in skip:
        reserve = 0 if {"tests", "runs"} <= skip else 200  # time kept for the sections after it
        guarded(results, "speed", lambda: speed(variants, reserve, batches, device=device, width=width,
                                                profiled=profiled, steps=steps))
        save()
        if "compile" not in skip:  # about 35 s of compilation per variant: batch 64 only unless --batches says
            compiled_batches = batches if args.batches else (64,)
            guarded(results, "speed_compiled", lambda: speed(COMPILED_VARIANTS, max(reserve - 60, 0), compiled_batches,
                                                             device=device, width=width, profiled=profiled))
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
