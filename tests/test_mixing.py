"""Mixup and Manifold Mixup: lambda's range, label mixing, and mixing only at the chosen layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iat.mixing import ManifoldMixup, MixDraw, Mixup, NoMix, mixed_cross_entropy, mixed_loss
from iat.models import create_model


@pytest.mark.parametrize("mix", [Mixup(1.0), ManifoldMixup(2.0), Mixup(0.2, lam_per="example")])
def test_lambda_in_unit_interval_and_partner_is_a_permutation(mix):
    torch.manual_seed(0)
    for _ in range(200):
        d = mix.draw(16, torch.device("cpu"))
        assert ((d.lam >= 0) & (d.lam <= 1)).all()
        assert sorted(d.perm.tolist()) == list(range(16))
        assert d.layer in mix.layers
    assert d.lam.shape == ((16,) if mix.lam_per == "example" else ())


def test_lambda_follows_beta():
    torch.manual_seed(0)
    lams = torch.stack([Mixup(2.0).draw(4, torch.device("cpu")).lam for _ in range(4000)])
    # Beta(2,2): mean 1/2, variance 1/20
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 0.05) < 0.006


def test_manifold_layer_uniform_over_input_block1_block2():
    torch.manual_seed(0)
    layers = [ManifoldMixup().draw(4, torch.device("cpu")).layer for _ in range(3000)]
    counts = [layers.count(k) for k in (0, 1, 2)]
    assert all(900 < c < 1100 for c in counts), counts


def test_mixed_cross_entropy_is_the_mixture_of_the_two_losses():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    perm = torch.randperm(8)
    lam = torch.tensor(0.3)
    expected = 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y[perm])
    assert torch.allclose(mixed_cross_entropy(logits, y, MixDraw(0, lam, perm)), expected)
    per = torch.rand(8)
    manual = (per * F.cross_entropy(logits, y, reduction="none")
              + (1 - per) * F.cross_entropy(logits, y[perm], reduction="none")).mean()
    assert torch.allclose(mixed_cross_entropy(logits, y, MixDraw(0, per, perm)), manual)
    assert torch.allclose(mixed_cross_entropy(logits, y, MixDraw(0, torch.tensor(1.0), perm)),
                          F.cross_entropy(logits, y))


def test_mix_interpolates_inputs_per_example():
    h = torch.arange(4.0).view(4, 1)
    d = MixDraw(0, torch.tensor([1.0, 0.0, 0.5, 0.25]), torch.tensor([1, 0, 3, 2]))
    assert d(h).flatten().tolist() == [0.0, 0.0, 2.5, 2.25]


@pytest.mark.parametrize("arch", ["cnn-small", "mlp6", "preactresnet18"])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_manifold_mixup_leaves_layers_below_k_untouched(arch, layer):
    """Stages before the mixing layer see exactly the un-mixed batch; the stage at it sees the mix."""
    torch.manual_seed(0)
    kw = {"width": 4} if arch != "mlp6" else {"width": 16, "input_size": 8}
    model = create_model(arch, in_channels=1, num_classes=10, **kw).eval()
    x = torch.rand(6, 1, 8, 8)
    seen: dict[str, list[torch.Tensor]] = {"plain": [], "mixed": []}
    key = ["plain"]
    hooks = [s.register_forward_pre_hook(lambda m, a: seen[key[0]].append(a[0].clone())) for s in model.stages]
    model(x)
    key[0] = "mixed"
    draw = MixDraw(layer, torch.tensor(0.4), torch.tensor([5, 4, 3, 2, 1, 0]))
    model(x, mix=draw)
    for h in hooks:
        h.remove()
    for k in range(len(model.stages)):
        same = torch.equal(seen["plain"][k], seen["mixed"][k])
        assert same == (k < layer), f"stage {k} input {'unchanged' if same else 'changed'} mixing at {layer}"
    if layer > 0:  # the input to stage `layer` is exactly the mix of the plain hidden states
        assert torch.allclose(seen["mixed"][layer], draw(seen["plain"][layer]), atol=1e-6)


def test_mixed_loss_with_no_mix_is_cross_entropy():
    torch.manual_seed(0)
    model = create_model("cnn-small", 1, 10, width=4).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    assert torch.allclose(mixed_loss(model, NoMix(), x, y), F.cross_entropy(model(x), y))


def test_unknown_mixing_layer_refused():
    model = create_model("cnn-small", 1, 10, width=4)
    with pytest.raises(ValueError, match="layer"):
        model(torch.rand(2, 1, 8, 8), mix=MixDraw(7, torch.tensor(0.5), torch.tensor([1, 0])))


@pytest.mark.parametrize("kwargs", [dict(alpha=0.0), dict(alpha=1.0, lam_per="pixel")])
def test_bad_mixing_options_refused(kwargs):
    with pytest.raises(ValueError):
        Mixup(**kwargs)


@pytest.mark.parametrize("mix", [Mixup(1.0), ManifoldMixup(2.0)])
def test_mixed_loss_runs_the_network_on_the_mix_it_draws(mix):
    """Loss(f, Mix, x, y) of Algorithm 1: the draw reaches the network (mixed inputs or hidden states), not
    only the labels: the loss equals the mixed cross-entropy of the mixed forward pass under the same draw."""
    model = create_model("cnn-small", 1, 10, width=4).eval()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    torch.manual_seed(3)
    loss = mixed_loss(model, mix, x, y)
    torch.manual_seed(3)
    draw = mix.draw(len(x), x.device)
    assert torch.allclose(loss, mixed_cross_entropy(model(x, mix=draw), y, draw))
    assert not torch.allclose(loss, mixed_cross_entropy(model(x), y, draw))  # labels mixed, inputs not
