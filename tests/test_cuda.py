"""On a real GPU: every method trains, attacks keep their promises, CUDA graphs and AMP work, no host sync.

Marked `cuda` and skipped without a GPU; benchmarks/gpu_check.sh runs them (`pytest -m cuda`).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import DIGITS_EPS, DIGITS_STEP, tiny_config

from iat.attacks import PGD
from iat.config import build_model
from iat.data import load_data
from iat.methods import method_names
from iat.rundir.tensors import load_checkpoint, load_weights
from iat.training import train
from iat.training.engine import build_update

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

logging.getLogger("iat").setLevel(logging.WARNING)


@pytest.mark.parametrize("method", method_names())
def test_every_method_trains_on_cuda(tmp_path, method):
    run = train(tiny_config(method, epochs=1, device="cuda"), tmp_path / method, progress=False)
    weights = load_weights(run / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    ckpt = load_checkpoint(run / "checkpoint.pt")
    cuda_state = ckpt["rng"].get("cuda")  # the training device's generator only, not one per visible GPU
    assert isinstance(cuda_state, torch.Tensor) and cuda_state.dtype == torch.uint8


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_pgd_on_cuda_stays_in_the_ball_and_leaves_the_model_as_found(bn_mode):
    torch.manual_seed(0)
    model = build_model(tiny_config("erm")).cuda().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = load_data("digits", "test", limit=64)
    x, y = x.cuda(), y.cuda()
    x_adv = PGD(model, DIGITS_EPS, DIGITS_STEP, 5, bn_mode=bn_mode)(x, y)
    assert (x_adv - x).abs().max() <= DIGITS_EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_amp_trains_on_cuda(tmp_path, dtype):
    cfg = tiny_config("iat-mixup", epochs=1, device="cuda", amp=True, amp_dtype=dtype)
    run = train(cfg, tmp_path / dtype, progress=False)
    assert all(torch.isfinite(w).all() for w in load_weights(run / "model.safetensors").values())


def test_cuda_graphs_match_eager_on_a_deterministic_method(tmp_path):
    """ERM on mlp6 has no randomness inside the step: a replayed graph must compute what eager does."""
    kw = dict(arch="mlp6", epochs=2, device="cuda", batch_size=64)
    eager = train(tiny_config("erm", **kw), tmp_path / "eager", progress=False)
    graphed = train(tiny_config("erm", cuda_graphs=True, **kw), tmp_path / "graphed", progress=False)
    a, b = load_weights(eager / "model.safetensors"), load_weights(graphed / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["pgd", "iat-manifold-mixup"])
def test_cuda_graphs_train_adversarial_methods(tmp_path, method):
    run = train(tiny_config(method, epochs=2, device="cuda", cuda_graphs=True), tmp_path / method, progress=False)
    assert all(torch.isfinite(w).all() for w in load_weights(run / "model.safetensors").values())


def test_compile_inside_cuda_graphs_matches_eager_on_a_deterministic_method(tmp_path):
    """The compiled forward's kernels, captured and replayed, compute what eager does (up to fusion rounding)."""
    kw = dict(arch="mlp6", epochs=2, device="cuda", batch_size=64)
    eager = train(tiny_config("erm", **kw), tmp_path / "eager", progress=False)
    fast = train(tiny_config("erm", compile=True, cuda_graphs=True, **kw), tmp_path / "fast", progress=False)
    assert json.loads((fast / "config.json").read_text())["cuda_graphs_used"]
    a, b = load_weights(eager / "model.safetensors"), load_weights(fast / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method,compile", [("iat-mixup", False), ("iat-mixup", True), ("iat-manifold-mixup", True)])
def test_the_fastest_gpu_settings_train_and_config_json_says_so(tmp_path, method, compile):
    cfg = tiny_config(method, epochs=2, device="cuda", cuda_graphs=True, tf32=True, amp=True,
                      attack_precision="amp", cudnn_benchmark=True, compile=compile)
    run = train(cfg, tmp_path / "fast", progress=False)
    assert all(torch.isfinite(w).all() for w in load_weights(run / "model.safetensors").values())
    config = json.loads((run / "config.json").read_text())
    assert config["cuda_graphs_used"] and config["cudnn_benchmark_used"] and config["compile"] == compile
    assert config["precision"] == {"autocast": "bf16", "attack": "amp", "tf32": True, "grad_scaler": False}


@pytest.mark.parametrize("graphs", [False, True])
def test_training_update_does_not_sync(graphs):
    cfg = tiny_config("iat-manifold-mixup", device="cuda", cuda_graphs=graphs, batch_size=64)
    step = build_update(cfg, torch.device("cuda"))
    x, y = load_data("digits", "train", limit=64)
    x, y = x.cuda(), y.cuda()
    for _ in range(12):  # warm-up and every layer pair captured outside the check
        step(x, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
