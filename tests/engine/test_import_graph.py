"""The engine's modules import each other without cycles (a cycle hid in a function-level import
between backup.py and pipeline.py; any import, at module level or inside a function, counts)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "src" / "haven" / "engine"


def _imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports, by module name (``backup``, ``pipeline``, ...)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("haven.engine."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.startswith("haven.engine."))
    return out


def test_engine_has_no_import_cycle():
    modules = {p.stem for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    graph = {m: _imports(ENGINE / f"{m}.py") & modules for m in modules}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])
    assert cycles == []
