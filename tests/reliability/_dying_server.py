"""``haven serve`` that kills itself with SIGKILL at a chosen point of a backup. For
``test_process_kill.py`` only; run as ``python -m tests.reliability._dying_server serve …`` with:

- ``HAVEN_DIE_RECORDING_POINT=1``: inside the transaction that records a backup's point, after the
  point row was sent to the database (flushed) and before the commit;
- ``HAVEN_DIE_AT_STORE=n``: just before the n-th object a backup writes to a folder vault (a chunk,
  the manifest or a lock), or half-way through writing it (``HAVEN_DIE_HALF_WRITTEN=1``).

Before dying it writes what it was doing to ``$HAVEN_HOME/died.json``."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from haven.cli.main import app
from haven.engine.local import LocalBackend
from haven.jobs.queue import JobQueue

_finish, _store = JobQueue.finish, LocalBackend.store
_stores = {"n": 0}
_lock = threading.Lock()


def _die(**what) -> None:
    Path(os.environ["HAVEN_HOME"], "died.json").write_text(json.dumps(what))
    os.kill(os.getpid(), signal.SIGKILL)


def _finish_or_die(self, session, job_id, worker, result=None):
    if os.environ.get("HAVEN_DIE_RECORDING_POINT") == "1" and (result or {}).get("recovery_point_id"):
        session.flush()
        _die(phase="database commit", store=_stores["n"])
    return _finish(self, session, job_id, worker, result)


def _store_or_die(self, name, data):
    target = int(os.environ.get("HAVEN_DIE_AT_STORE", "0"))
    if target and not name.startswith(("config", "meta/")):
        with _lock:
            _stores["n"] += 1
            n = _stores["n"]
        if n == target:
            phase = name.split("/", 1)[0]
            if os.environ.get("HAVEN_DIE_HALF_WRITTEN") == "1":
                path = self._path(name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.with_name(path.name + ".tmp-dying").write_bytes(data[: len(data) // 2])
                _die(phase=phase, store=n, name=name, half_written=True)
            _die(phase=phase, store=n, name=name, half_written=False)
    return _store(self, name, data)


JobQueue.finish = _finish_or_die
LocalBackend.store = _store_or_die

if __name__ == "__main__":
    app()
