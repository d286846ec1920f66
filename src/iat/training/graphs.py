"""CUDA graphs for the training step: capture one whole update once, then replay it.

An IAT step at batch 64 launches about 1,500 small kernels (PGD-7 alone is 8 forward and 7 backward
passes), so on a fast GPU eager execution waits on the CPU launching kernels, not on arithmetic.
A CUDA graph records the launches of one update (attack, both mixed losses, backward, optimizer
step) and replays them with one call.

What a graph fixes at capture time, and how each is handled:
- shapes: the update is captured for the run's batch size; another size (the last, partial batch of
  an epoch) runs eagerly, and with `--compile` as the uncompiled code, so the training step is never
  recompiled or padded (the overfitting guard, outside the graphs, may still compile its own batch shape);
- Python-side choices: Manifold Mixup's layer is drawn on the CPU before the step (`choose`), and
  each choice gets its own graph (3 layers x 2 mixed losses: at most 9 per learning rate);
- scalars: the learning rate is baked into the optimizer's kernels, so a new rate means new graphs;
- random numbers (attack starts, mixing lambdas and partners, augmentation) are drawn on the GPU
  inside the graph, and each replay draws fresh ones: the CUDA generator advances as in eager mode.

The first `warmup` updates run eagerly (on a side stream, as torch.cuda.graphs requires): they are
real training steps, and they create the optimizer's momentum buffers before anything is captured.
So does the first update of each Manifold Mixup choice: with `--compile`, its forward is compiled
then, never inside a capture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

log = logging.getLogger(__name__)

Update = Callable[[torch.Tensor, torch.Tensor], object]
Choice = tuple[Hashable, AbstractContextManager]


def no_choice() -> Choice:
    """For updates with no Python-side random choice (ERM, PGD, Mixup at the input)."""
    return (), nullcontext()


class GraphedUpdate:
    """`step(x, y)`: one training update, replayed from a CUDA graph whenever the batch is full.

    update:     update(x, y) does one whole step without host syncs (no .item(), no data-dependent
                Python branches) and returns its output (e.g. the loss, a tensor). A replay returns
                the same tensor object as the capture did, refilled: read it before the next call.
    batch_size: the size the graphs are captured for; other sizes run `update` eagerly.
    choose:     draws this step's Python-side choices: returns (key, context); `update` run inside
                `context` must take exactly those choices. Graphs are cached per (key, lr).
    optimizer:  its learning rates are part of the cache key.
    warmup:     eager updates before the first capture (at least 1: creates the optimizer's state);
                after it, each choice's first update still runs eagerly.
    graph_factory: for tests on machines without CUDA (default torch.cuda.CUDAGraph).
    """

    def __init__(self, update: Update, *, batch_size: int, optimizer: torch.optim.Optimizer,
                 choose: Callable[[], Choice] = no_choice, warmup: int = 3,
                 graph_factory: Callable[[], object] | None = None):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.update, self.batch_size, self.optimizer, self.choose = update, batch_size, optimizer, choose
        self.warmup = warmup
        self.graph_factory = graph_factory or torch.cuda.CUDAGraph
        self.graphs: dict[Hashable, object] = {}
        self.outputs: dict[Hashable, object] = {}
        self.static_x: torch.Tensor | None = None
        self.static_y: torch.Tensor | None = None
        self.eager_steps = 0
        self.warmed: set[Hashable] = set()  # choices that have run eagerly once (see __call__)
        self.replays = 0
        self.pool = None
        self.stream = None  # the side stream of the eager steps (see _side_stream)

    # ------------------------------------------------------------------------------------------ call

    def __call__(self, x: torch.Tensor, y: torch.Tensor, grad_weight: float = 1.0) -> object:
        if grad_weight != 1.0:
            raise ValueError("a graphed update runs in one process: its gradient weight is 1 (no DDP)")
        with _no_autocast_cache():  # no cast weights cached across a capture, nor between its replays
            return self._graphed_or_eager(x, y)

    def _graphed_or_eager(self, x: torch.Tensor, y: torch.Tensor) -> object:
        key, context = self.choose()
        if len(x) != self.batch_size:
            with context, _uncompiled():  # the last batch of an epoch: eager, no new graph, no recompilation
                return self.update(x, y)
        if x.device.type != "cuda" and self.graph_factory is torch.cuda.CUDAGraph:
            with context:  # no GPU: eager
                return self.update(x, y)
        if self.eager_steps < self.warmup or key not in self.warmed:
            # the first updates, and the first of each new choice, run eagerly: whatever is lazy
            # (torch.compile's compilation, cuDNN's autotuning) then happens outside any capture
            self.eager_steps += 1
            self.warmed.add(key)
            with context:
                return self._eager_on_side_stream(x, y)
        key = (key, self._lrs())
        graph = self.graphs.get(key)
        if graph is None:
            graph = self._capture(key, context, x, y)  # the capture itself updates nothing
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        graph.replay()
        self.replays += 1
        return self.outputs[key]

    # ------------------------------------------------------------------------------------ internals

    def _lrs(self) -> tuple[float, ...]:
        return tuple(float(g["lr"]) for g in self.optimizer.param_groups)

    def _side_stream(self) -> AbstractContextManager:
        """The one side stream of this update's eager steps (created once: a new stream per step would leak
        streams and their events), after whatever the current stream queued."""
        if not torch.cuda.is_available():
            return nullcontext()
        if self.stream is None:
            self.stream = torch.cuda.Stream()
        self.stream.wait_stream(torch.cuda.current_stream())
        return _StreamScope(self.stream)

    def _eager_on_side_stream(self, x: torch.Tensor, y: torch.Tensor) -> object:
        with self._side_stream():
            return self.update(x, y)

    def _capture(self, key: Hashable, context: AbstractContextManager, x: torch.Tensor, y: torch.Tensor):
        """Record one update into a new graph (the recorded launches do not run until replay)."""
        lrs = key[1]
        stale = [k for k in self.graphs if k[1] != lrs]
        for k in stale:  # graphs of an earlier learning rate will not be replayed again
            del self.graphs[k], self.outputs[k]
        if self.static_x is None:
            self.static_x, self.static_y = torch.empty_like(x), torch.empty_like(y)
        if not self.graphs:  # a memory pool dies with the last graph captured into it: start a new one
            self.pool = _new_pool()
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        graph = self.graph_factory()
        with context, _recording(graph, self.pool):
            self.outputs[key] = self.update(self.static_x, self.static_y)
        self.graphs[key] = graph
        log.debug("captured a CUDA graph of the training update for %s (%d cached)", key, len(self.graphs))
        return graph


class _StreamScope:
    """`with torch.cuda.stream(s)`, then make the current stream wait for s."""

    def __init__(self, stream):
        self.stream, self.scope = stream, torch.cuda.stream(stream)

    def __enter__(self):
        self.scope.__enter__()
        return self.stream

    def __exit__(self, *exc):
        self.scope.__exit__(*exc)
        torch.cuda.current_stream().wait_stream(self.stream)
        return False


@contextmanager
def _no_autocast_cache() -> Iterator[None]:
    """Autocast regions opened inside (the update's, with cache_enabled unset) keep no cache of cast weights."""
    was = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(was)


def _uncompiled() -> AbstractContextManager:
    """torch.compile'd code runs as the plain code it came from (torch >= 2.6; before, it may recompile)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


def _new_pool():
    return torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None


def _recording(graph, pool) -> AbstractContextManager:
    """torch.cuda.graph(graph, pool=pool) for real graphs; the fake graphs of tests record themselves."""
    if isinstance(graph, torch.cuda.CUDAGraph):
        return torch.cuda.graph(graph, pool=pool)
    return graph.recording()


@contextmanager
def preset_layers(mix, layers: tuple[int, ...]) -> Iterator[None]:
    """Inside, `mix.draw` takes `layers` in order instead of drawing them: a graph is captured for one choice of
    layers, drawn on the CPU before the step. An instance attribute shadows the method for the step only, so
    the mixing code itself knows nothing of graphs."""
    queue = list(layers)
    mix.draw_layer = lambda: queue.pop(0)
    try:
        yield
    finally:
        del mix.draw_layer


def layer_choices(mix, draws: int) -> Callable[[], Choice]:
    """A `choose` for an update that calls `mix` `draws` times (2 for IAT: clean and adversarial):
    draws the layers on the CPU now, and returns a context in which the mix uses them in order."""
    if len(getattr(mix, "layers", ())) <= 1:
        return no_choice

    def choose() -> Choice:
        layers = tuple(mix.draw_layer() for _ in range(draws))
        return layers, preset_layers(mix, layers)

    return choose


def iter_keys(graphed: GraphedUpdate) -> Iterator[Hashable]:
    """The cache keys of the graphs captured so far (for logs and tests)."""
    return iter(list(graphed.graphs))
