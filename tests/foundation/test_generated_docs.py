"""docs/openapi.json and docs/errors.md are generated from the code and committed: keep them current."""

from pathlib import Path

from haven.errors import CATEGORIES, HavenError, all_errors
from haven.tools.gendocs import errors_markdown, openapi_document

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_openapi_document_is_current():
    assert (DOCS / "openapi.json").read_text() == openapi_document(), "run 'make docs' and commit docs/openapi.json"


def test_errors_document_is_current():
    assert (DOCS / "errors.md").read_text() == errors_markdown(), "run 'make docs' and commit docs/errors.md"


def test_every_error_has_a_unique_code_a_message_a_fix_and_a_category():
    seen: dict[str, type] = {}
    stack = [HavenError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls is HavenError or cls in CATEGORIES:
            continue
        assert cls.code not in seen or seen[cls.code] is cls, f"{cls} and {seen[cls.code]} share {cls.code}"
        seen[cls.code] = cls
        assert cls.message and cls.recommendation, cls
        assert any(issubclass(cls, c) for c in CATEGORIES) or cls.http_status, cls
    assert len(all_errors()) >= len(seen)
