"""The CLI starts light: a command that only talks HTTP loads neither the server, the database, the storage
engine nor pydantic (issue 19: ``haven --help`` took 1.3-2.8 s)."""

import json
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAVY = ("sqlalchemy", "fastapi", "uvicorn", "starlette", "zstandard", "blake3", "haven.engine", "haven.services",
         "haven.db", "haven.api")


def _loaded(code: str, *argv: str) -> set[str]:
    script = f"import json, sys\nsys.argv = ['haven', *{list(argv)!r}]\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": SRC, "HAVEN_SERVER": "http://127.0.0.1:9", "HAVEN_HOME": "/nonexistent"})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str], heavy=HEAVY) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


def test_importing_the_cli_loads_no_server_engine_or_database():
    modules = _loaded("import haven.cli.main")
    assert _heavy(modules) == []
    assert not any(m.startswith("haven.cli.commands.") for m in modules)  # each command's module loads when it runs


def test_a_command_against_the_server_loads_only_its_own_module_and_no_pydantic():
    code = "from haven.cli.main import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    modules = _loaded(code, "-o", "json", "vault", "list", "-s", "s")
    assert "httpx" in modules  # it did try the server (refused: nothing listens on port 9)
    # httpx itself loads zstandard (a response decoder) when the request is made
    assert _heavy(modules, [h for h in HEAVY if h != "zstandard"]) == [] and "pydantic" not in modules and "httpx._main" not in modules
    assert {m for m in modules if m.startswith("haven.cli.commands.")} == {
        "haven.cli.commands.vaults", "haven.cli.commands.guard", "haven.cli.commands.restore",
        "haven.cli.commands.protection"}


def test_an_error_answer_is_printed_with_its_code_and_exit_code_without_loading_all_of_haven(tmp_path):
    from tests.services.haven_server import HavenServer

    server = HavenServer(tmp_path / "srv").start()
    try:
        script = ("import json, sys\nfrom haven.cli.main import app\ntry:\n    app()\nexcept SystemExit as e:\n"
                  "    print(json.dumps({'exit': e.code, 'modules': sorted(sys.modules)}))")
        out = subprocess.run([sys.executable, "-c", script, "vault", "show", "-s", "nosuch", "-n", "v1"], capture_output=True,
                             text=True, timeout=60, env={**server.cli_env(), "PYTHONPATH": SRC})
    finally:
        server.stop()
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["exit"] == 3 and "UserErrorSubscriptionNotFound" in out.stderr and "Fix" in out.stderr, out.stderr
    assert _heavy(set(answer["modules"]), [h for h in HEAVY if h != "zstandard"]) == []
