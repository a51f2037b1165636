"""Private files: Haven's home folder is 0700; its database (with SQLite's -wal and -shm files), the
master key, the local Owner's credentials and every credential file it writes are 0600.

Files are created with these modes and, at every start, tightened if something made them looser
(an older version, a copy, a restore from backup). SQLite gives its -wal and -shm files the mode of
the database file, so the database is made 0600 before SQLite first opens it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "private_dir", "tighten", "write_private", "secure_home", "sqlite_path"]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
log = logging.getLogger(__name__)


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents, which keep the usual mode) and leave it 0700."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:
        pass
    tighten(path, PRIVATE_DIR)
    return path


def tighten(path: Path, mode: int = PRIVATE_FILE) -> None:
    """Take away what ``mode`` does not grant (group and others), if ``path`` exists and is ours."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    current = stat.S_IMODE(st.st_mode)
    if current & ~mode:
        try:
            os.chmod(path, current & mode)
        except PermissionError:
            log.warning("%s is mode %o and could not be made %o (owned by uid %d)", path, current, mode, st.st_uid)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, mode 0600 even when the file existed with a looser one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), PRIVATE_FILE)
        fh.write(data)


def sqlite_path(database_url: str) -> Path | None:
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def secure_home(home: Path, database_url: str, secrets: tuple[Path, ...] = ()) -> None:
    """Haven's start: the home folder 0700; the SQLite database (made now if missing), its -wal and -shm, and ``secrets`` 0600."""
    private_dir(home)
    db = sqlite_path(database_url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_name(db.name + "-journal")):
            tighten(p)
    for p in secrets:
        tighten(p)
