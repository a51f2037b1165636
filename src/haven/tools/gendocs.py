"""Writes the documents generated from the code: ``docs/openapi.json`` and ``docs/errors.md``.

``make docs`` runs it; tests fail when the committed files differ from what the code says.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from haven.errors import CATEGORIES, all_errors

__all__ = ["openapi_document", "errors_markdown", "main"]

DOCS = Path(__file__).resolve().parents[3] / "docs"


def openapi_document() -> str:
    from haven.api.app import create_app
    from haven.config import load_settings
    from haven.services.core import Haven

    with tempfile.TemporaryDirectory() as tmp:
        core = Haven(load_settings(Path(tmp)))
        try:
            doc = create_app(core).openapi()
        finally:
            core.close()
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def errors_markdown() -> str:
    lines = [
        "# Errors",
        "",
        "Generated from the code by `make docs` (`python -m haven.tools.gendocs`); a test keeps it current.",
        "Every error has a stable code, a message, a recommendation (the fix), an HTTP status and a CLI exit code.",
        "The status and exit code come from the error's category:",
        "",
        "| category | HTTP status | CLI exit code |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {c.__name__} | {c.http_status} | {c.exit_code} |" for c in CATEGORIES]
    lines += ["", "| code | HTTP | exit | message | recommendation | defined in |", "| --- | --- | --- | --- | --- | --- |"]
    for cls in all_errors():
        msg = cls.message.replace("|", "\\|").replace("\n", " ")
        fix = cls.recommendation.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{cls.code}` | {cls.http_status} | {cls.exit_code} | {msg} | {fix} | `{cls.__module__}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "openapi.json").write_text(openapi_document())
    (DOCS / "errors.md").write_text(errors_markdown())
    print(f"wrote {DOCS / 'openapi.json'} and {DOCS / 'errors.md'}")


if __name__ == "__main__":
    main()
