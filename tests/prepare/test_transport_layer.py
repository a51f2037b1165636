"""``haven.transport`` is shared by the server and the host agents: it may use the engine, ``config`` and
``errors``, never the layers above it (services, API, CLI, database, dashboard); and the CLI's
``prepare`` commands touch no agent file themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import haven

SRC = Path(haven.__file__).parent
FORBIDDEN = ("haven.services", "haven.api", "haven.cli", "haven.db", "haven.web", "haven.agent")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_transport_imports_no_upper_layer():
    files = sorted((SRC / "transport").glob("*.py"))
    assert files, "haven/transport is missing"
    bad = {f"{f.name}: {m}" for f in files for m in _imports(f) if m.startswith(FORBIDDEN)}
    assert not bad, bad


def test_transport_modules_stay_small():
    big = {f.name: n for f in (SRC / "transport").glob("*.py") if (n := len(f.read_text().splitlines())) > 400}
    assert not big, big


def test_the_agent_and_the_cli_no_longer_share_a_client_through_the_cli():
    assert "haven.cli.client" not in _imports(SRC / "agent" / "remote.py")
    assert not (SRC / "agent" / "network.py").exists() and not (SRC / "cli" / "client.py").exists()


def test_cli_prepare_reads_no_agent_file_itself():
    mods = _imports(SRC / "cli" / "commands" / "prepare.py")
    assert not {m for m in mods if m.startswith(("haven.services", "haven.agent", "haven.db"))}, mods
    text = (SRC / "cli" / "commands" / "prepare.py").read_text()
    assert "agent.conf\"" not in text and "read_text" not in text and "open(" not in text
