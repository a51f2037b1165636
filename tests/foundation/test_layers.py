"""The architecture of docs/architecture.md, held against the code.

- The layer contracts in pyproject.toml (``[tool.importlinter]``) run with import-linter: the domain
  is pure, the engine knows no SQL or web framework, routes and pages call services only, the CLI
  speaks only to the API.
- No import cycles between Haven's modules (imports inside functions count; imports made only for
  type checking do not, they never run).
- A module longer than ``LONG`` lines says at its top why it stays whole (a ``Size:`` paragraph).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
LONG = 400


def test_the_layer_contracts_hold():
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    nodes = sorted(m for m in graph.modules if m.startswith("haven"))
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i.startswith("haven")) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    sys.path.insert(0, str(SRC))
    try:
        graph = grimp.build_graph("haven", exclude_type_checking_imports=True)
    finally:
        sys.path.remove(str(SRC))
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in [("haven.a", "haven.b"), ("haven.b", "haven.c"), ("haven.c", "haven.a"), ("haven.c", "haven.d")]:
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["haven.a", "haven.b", "haven.c"]]


def test_long_modules_say_why_at_their_top():
    unexplained = []
    for path in sorted((SRC / "haven").rglob("*.py")):
        lines = path.read_text().count("\n")
        if lines <= LONG or "migrations" in path.parts:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if "Size:" not in doc:
            unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not unexplained, "modules over %d lines without a 'Size:' reason in their docstring:\n%s" % (LONG, "\n".join(unexplained))
