"""The key vault's tables: on the metadata store's one ``Base`` without an import cycle, and the
same columns as the migrations made (keys and secrets share their versioned columns in code only)."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import inspect

import haven
from haven.db.session import Database

SRC = Path(haven.__file__).parent
TABLE_MODULES = {"haven.db.models": "db/models.py", "haven.keyvault.tables": "keyvault/tables.py",
                 "haven.db.guard_tables": "db/guard_tables.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_table_modules_import_the_base_not_each_other():
    for module, path in TABLE_MODULES.items():
        imported = _imports(SRC / path)
        assert "haven.db.base" in imported, module
        assert not imported & (set(TABLE_MODULES) - {module}), f"{module} imports another table module: an import cycle"


def test_the_tables_match_the_migrations(tmp_path):
    from haven.db.schema import metadata

    db = Database(f"sqlite:///{tmp_path / 'haven.db'}")
    try:
        inspector = inspect(db.engine)
        for name in ("key_vaults", "key_vault_keys", "key_vault_secrets", "key_vault_access_policies",
                     "resource_guards", "resource_guard_requests", "subscriptions"):
            migrated = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
            mapped = {c.name: c.nullable for c in metadata.tables[name].columns}
            assert migrated == mapped, name
    finally:
        db.dispose()
