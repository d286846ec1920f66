"""The shape of the code a newcomer reads, measured: what one IAT update runs through, import circles (between
modules, and between packages: arrows back up), the longest function, the largest module, the README's length.
Run it on two checkouts to compare:

    python benchmarks/code_shape.py                      # this checkout (imports iat from src/)
    python benchmarks/code_shape.py --root /path/to/other/checkout

The update's path is traced, not read: a tiny IAT-Mixup step runs under a profiler hook, and the stack of
iat's own frames is taken at the first call of the attack's input gradient (`iat.attacks.core.input_grad`),
from the training loop (`run_steps`) down.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

TRACE = r"""
import json, sys, tempfile
import torch
from iat.config import TrainConfig
try:
    from iat.training.loop import train
except ImportError:  # a checkout from before the package was named iat.training
    from iat.train.loop import train

torch.set_num_threads(1)
stack = []

def hook(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "input_grad" and frame.f_code.co_filename.endswith("core.py"):
        if not stack:
            f = frame
            while f is not None:
                stack.append((f.f_code.co_filename, f.f_code.co_name))
                if f.f_code.co_name == "run_steps":
                    break
                f = f.f_back
cfg = TrainConfig(method="iat-mixup", dataset="digits", arch="cnn-small", width=4, epochs=1, batch_size=32,
                  train_size=32, eps=0.1, step_size=0.025, attack_steps=1, seed=0, device="cpu")
sys.setprofile(hook)
train(cfg, tempfile.mkdtemp() + "/run", progress=False)
sys.setprofile(None)
print(json.dumps([s for s in reversed(stack) if "/iat/" in s[0]]))
"""


def update_path(root: Path) -> list[tuple[str, str]]:
    env_path = str(root / "src")
    done = subprocess.run([sys.executable, "-c", TRACE], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, check=True)
    frames = json.loads(done.stdout.strip().splitlines()[-1])
    return [(str(Path(f).relative_to(root / "src")), name) for f, name in frames]


def module_name(path: Path, src: Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, name: str, modules: set[str]) -> set[str]:
    """iat modules this module imports, at module level or inside a function (a deferred import is still
    an arrow between the two)."""
    found = set()
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Import):
            found |= {a.name for a in stmt.names if a.name in modules}
        elif isinstance(stmt, ast.ImportFrom) and stmt.module:
            base = stmt.module
            if stmt.level:
                pkg = name.split(".")[: len(name.split(".")) - stmt.level + (1 if is_package(name, modules) else 0)]
                base = ".".join(pkg + [stmt.module])
            for alias in stmt.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def is_package(name: str, modules: set[str]) -> bool:
    return any(m.startswith(name + ".") for m in modules)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between iat's top-level modules and packages (iat.training.* as one node): a circle here
    is an arrow back up, a package whose parts import one that imports it (the parent `iat` left out)."""
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {top(m): set() for m in graph}
    for m, deps in graph.items():
        out[top(m)] |= {top(d) for d in deps if top(d) not in (top(m), "iat")}
    return out


def measure(root: Path) -> dict:
    src = root / "src"
    files = sorted((src / "iat").rglob("*.py"))
    trees = {module_name(f, src): (f, ast.parse(f.read_text())) for f in files}
    modules = set(trees)
    graph = {name: imports(tree, name, modules) for name, (_, tree) in trees.items()}
    longest = max(((n.end_lineno - n.lineno + 1, f"{f.relative_to(src)}:{n.name}") for _, (f, t) in trees.items()
                   for n in ast.walk(t) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))))
    largest = max((len(f.read_text().splitlines()), str(f.relative_to(src))) for f, _ in trees.values())
    stems = [f.name for f in files if f.name != "__init__.py"]
    path = update_path(root)
    return {
        "update_calls": len(path) - 1,  # calls from run_steps down to the attack's input gradient
        "update_files": len({f for f, _ in path}),
        "update_path": [f"{f}:{name}" for f, name in path],
        "import_circles": circles(graph),
        "arrows_back_up": circles(package_graph(graph)),
        "modules_sharing_a_name": sorted({s for s in stems if stems.count(s) > 1}),
        "longest_function": {"lines": longest[0], "where": longest[1]},
        "largest_module": {"lines": largest[0], "where": largest[1]},
        "readme_lines": len((root / "README.md").read_text().splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    print(json.dumps(measure(parser.parse_args().root.resolve()), indent=1))


if __name__ == "__main__":
    main()
