"""docs/support-matrix.md lists every limitation of every seed, each with a status; every error code it
names exists; every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from haven.errors import all_errors

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "support-matrix.md").read_text()
STATUSES = ("enforced", "lifted", "planned", "not applicable")

# One key phrase per limitation of the seeds (000/002/004: classic list; 001: newer list; 003: encrypted VMs).
LIMITATIONS = [
    "Resource Manager (IaaS V2)", "more than 16 data disks", "Premium Storage", "multiple reserved IPs",
    "reserved IP and no defined endpoint", "multiple NICs", "load-balanced configuration", "Replacing an existing VM during restore",
    "Cross-region backup and restore", "all public regions", "bring your own Linux", "older than Windows Server 2008 R2",
    "domain-controller VM", "network drives", "special network configurations", "only for Resource Manager VMs",
    "BitLocker", "BEK alone",
]


def _rows() -> list[str]:
    return [line for line in DOC.splitlines() if re.match(r"^\| \d+ \|", line)]


def test_every_seed_limitation_has_a_row_with_a_status():
    rows = _rows()
    assert len(rows) == len(LIMITATIONS)
    for phrase in LIMITATIONS:
        row = next((r for r in rows if phrase.lower() in r.lower()), None)
        assert row is not None, phrase
        status = row.split("|")[3].lower()
        assert any(s in status for s in STATUSES), row


def test_named_error_codes_exist():
    known = {cls.code for cls in all_errors()}
    named = set(re.findall(r"`((?:UserError|TransientError|StorageError)[A-Za-z]+)`", DOC))
    missing = named - known
    assert not missing, missing


def test_named_tests_exist():
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DOC):
        assert f"def {name}(" in (ROOT / path).read_text(), (path, name)
