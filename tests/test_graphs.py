"""CUDA-graph capture of the training step: the dispatch logic, tested on the CPU with a stand-in graph.

A real CUDA graph records the kernels an update launches and replays them; the stand-in records the
update as a closure over the static input tensors and the layers chosen at capture, which is what a
replay computes. The real thing runs in benchmarks/gpu_check.sh (tests marked cuda below).
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from iat.mixing import ManifoldMixup, Mixup
from iat.training.graphs import GraphedUpdate, layer_choices

CAPTURING: list = []


class FakeGraph:
    """Records `update` during capture without running it; replay runs what was recorded."""

    def __init__(self):
        self.recorded = None
        self.replays = 0

    @contextmanager
    def recording(self):
        CAPTURING.append(self)
        try:
            yield
        finally:
            CAPTURING.pop()

    def replay(self):
        self.replays += 1
        self.recorded()


class Recorder:
    """An update that logs (batch values, layers used) and, under capture, defers itself to replay."""

    def __init__(self, mix=None, draws=1):
        self.calls: list[tuple[list[float], tuple[int, ...]]] = []
        self.mix, self.draws = mix, draws

    def layers(self) -> tuple[int, ...]:
        if self.mix is None:
            return ()
        return tuple(self.mix.draw(4, torch.device("cpu")).layer for _ in range(self.draws))

    def __call__(self, x, y):
        layers = self.layers()  # taken at capture time, like a graph does
        if CAPTURING:
            CAPTURING[-1].recorded = lambda: self.calls.append((x[:, 0].tolist(), layers))
        else:
            self.calls.append((x[:, 0].tolist(), layers))


def optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def batch(value, n=4):
    return torch.full((n, 1), float(value)), torch.zeros(n, dtype=torch.long)


def test_warmup_is_eager_then_one_capture_and_replays_see_new_inputs():
    rec, opt = Recorder(), optimizer()
    step = GraphedUpdate(rec, batch_size=4, optimizer=opt, warmup=2, graph_factory=FakeGraph)
    for v in range(6):
        step(*batch(v))
    assert [c[0][0] for c in rec.calls] == [0, 1, 2, 3, 4, 5]  # every update ran once, in order
    assert step.eager_steps == 2 and step.replays == 4 and len(step.graphs) == 1


def test_partial_batch_runs_eagerly_without_a_new_graph():
    rec, opt = Recorder(), optimizer()
    step = GraphedUpdate(rec, batch_size=4, optimizer=opt, warmup=1, graph_factory=FakeGraph)
    for v in range(3):
        step(*batch(v))
    step(*batch(9, n=3))
    assert [c[0] for c in rec.calls][-1] == [9.0] * 3
    assert len(step.graphs) == 1 and step.replays == 2


def test_partial_batch_of_a_compiled_update_does_not_recompile():
    """--compile with --cuda-graphs: the last batch of each epoch must not compile a second shape."""
    torch._dynamo.reset()
    compiled_shapes = []

    def backend(graph_module, inputs):
        compiled_shapes.append([tuple(t.shape) for t in inputs if isinstance(t, torch.Tensor)])
        return graph_module.forward

    net = torch.nn.Linear(1, 1)
    net.compile(backend=backend)  # in place, as iat.training.model_prep does
    sizes = []

    def update(x, y):
        sizes.append(len(x))
        return net(x)

    step = GraphedUpdate(update, batch_size=4, optimizer=optimizer(), warmup=1, graph_factory=FakeGraph)
    step(*batch(0))  # warm-up: eager, compiled for batch 4
    step(*batch(1, n=3))
    assert sizes == [4, 3] and len(compiled_shapes) == 1 and (4, 1) in compiled_shapes[0]


def test_new_learning_rate_recaptures_and_drops_the_old_graphs():
    rec, opt = Recorder(), optimizer(0.1)
    step = GraphedUpdate(rec, batch_size=4, optimizer=opt, warmup=1, graph_factory=FakeGraph)
    for v in range(3):
        step(*batch(v))
    opt.param_groups[0]["lr"] = 0.01
    step(*batch(3))
    assert len(step.graphs) == 1 and next(iter(step.graphs))[1] == (0.01,)
    assert len(rec.calls) == 4


def test_manifold_layers_are_drawn_before_the_step_and_each_choice_has_its_graph():
    torch.manual_seed(0)
    mix = ManifoldMixup(alpha=2.0)
    rec, opt = Recorder(mix, draws=2), optimizer()
    step = GraphedUpdate(rec, batch_size=4, optimizer=opt, warmup=1, choose=layer_choices(mix, 2),
                         graph_factory=FakeGraph)
    keys = []
    for v in range(40):
        before = set(step.graphs)
        step(*batch(v))
        keys += [k for k in step.graphs if k not in before]
    assert len(rec.calls) == 40
    # the graph replayed for a step computes with the layers its key names
    for key in keys:
        assert len(key[0]) == 2 and all(layer in mix.layers for layer in key[0])
    assert 2 <= len(step.graphs) <= 9
    assert "draw_layer" not in vars(mix)  # the preset is gone after each step: the mix draws its own again


def test_each_choice_runs_eagerly_once_before_its_graph_is_captured():
    """With --compile, a choice's forward compiles on its first use: that use must not be a capture."""
    torch.manual_seed(0)
    mix = ManifoldMixup(alpha=2.0)
    rec, opt = Recorder(mix, draws=2), optimizer()
    choose, seen = layer_choices(mix, 2), []

    def logged_choose():
        key, context = choose()
        seen.append(key)
        return key, context

    step = GraphedUpdate(rec, batch_size=4, optimizer=opt, warmup=1, choose=logged_choose, graph_factory=FakeGraph)
    ran_eagerly = set()
    for v in range(40):
        eager_steps, graphs = step.eager_steps, set(step.graphs)
        step(*batch(v))
        if step.eager_steps > eager_steps:
            ran_eagerly.add(seen[-1])
        assert all(key[0] in ran_eagerly for key in set(step.graphs) - graphs)
    assert len(rec.calls) == 40
    assert step.eager_steps == len(set(seen))  # the warm-up step, then once per other choice
    assert step.graphs and step.replays == 40 - step.eager_steps  # a capture is then replayed


def test_layer_choices_is_a_no_op_for_input_mixup():
    key, context = layer_choices(Mixup(alpha=1.0), 2)()
    assert key == ()
    with context:
        pass


def test_warmup_must_create_optimizer_state():
    with pytest.raises(ValueError, match="warmup"):
        GraphedUpdate(Recorder(), batch_size=4, optimizer=optimizer(), warmup=0)


def test_eager_steps_share_one_side_stream(monkeypatch):
    """torch.cuda.graphs wants warm-up steps on a side stream; one stream per update, not one per step."""
    created = []

    class Stream:
        def __init__(self):
            created.append(self)

        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream.__new__(Stream))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextmanager(lambda: (yield s))())
    rec = Recorder()
    step = GraphedUpdate(rec, batch_size=4, optimizer=optimizer(), warmup=3, graph_factory=FakeGraph)
    for v in range(3):
        step(*batch(v))
    assert step.eager_steps == 3 and len(created) == 1


def test_the_graphed_update_keeps_no_autocast_cache_and_leaves_the_setting_as_it_was():
    """Cast weights cached by autocast would be captured once and go stale in every replay: the graphed update
    turns the cache off around its eager steps and captures (the Step's autocast inherits it), and back after."""
    seen = []

    def update(x, y):
        seen.append(torch.is_autocast_cache_enabled())
        if CAPTURING:
            CAPTURING[-1].recorded = lambda: None

    step = GraphedUpdate(update, batch_size=4, optimizer=optimizer(), warmup=1, graph_factory=FakeGraph)
    assert torch.is_autocast_cache_enabled()
    for value in range(3):
        step(*batch(value))  # eager warm-up, then the capture
    step(*batch(9, n=3))  # a partial batch: eager
    assert seen == [False, False, False] and torch.is_autocast_cache_enabled()
    with pytest.raises(ValueError, match="one process"):
        step(*batch(1), 0.5)  # DDP's weights never reach a graph
