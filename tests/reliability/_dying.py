"""``haven serve`` or ``haven agent`` that kills itself with SIGKILL at a chosen point of a backup.
For ``test_process_kill.py`` only; run as ``python -m tests.reliability._dying serve|agent …`` with:

- ``HAVEN_DIE_AT_STORE=n``: just before the n-th object a backup writes (its lock, a chunk, the
  manifest) — to a folder vault, or through the storage endpoint for an agent — or, with
  ``HAVEN_DIE_HALF_WRITTEN=1`` and a folder vault, half-way through writing it;
- ``HAVEN_DIE_RECORDING_POINT=1`` (server): inside the transaction that records the point, after
  the point row was sent to the database and before the commit;
- ``HAVEN_DIE_BEFORE_REPORT=1`` (agent): with the backup stored, before it reports it done;
- ``HAVEN_PAUSE_RECORDING_POINT=FILE`` (server; it does not die): at the same place as
  ``HAVEN_DIE_RECORDING_POINT``, writes FILE and waits until the test removes it, then commits —
  so the test can kill the database under the open transaction.

Before dying it writes what it was doing to ``$HAVEN_DIED_FILE``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from haven.agent.remote import RemoteAgent
from haven.cli.main import app
from haven.engine.http import HttpBackend
from haven.engine.local import LocalBackend
from haven.jobs.queue import JobQueue

_stores = {"n": 0}
_lock = threading.Lock()


def _armed(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0")


def _die(**what) -> None:
    Path(os.environ["HAVEN_DIED_FILE"]).write_text(json.dumps(what))
    os.kill(os.getpid(), signal.SIGKILL)


def _dying_store(original):
    def store(self, name, data):
        target = int(os.environ.get("HAVEN_DIE_AT_STORE", "0"))
        if target and not name.startswith(("config", "meta/")):
            with _lock:
                _stores["n"] += 1
                n = _stores["n"]
            if n == target:
                half = _armed("HAVEN_DIE_HALF_WRITTEN") and isinstance(self, LocalBackend)
                if half:
                    path = self._path(name)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.with_name(path.name + ".tmp-dying").write_bytes(data[: len(data) // 2])
                _die(phase=name.split("/", 1)[0], store=n, name=name, half_written=half)
        return original(self, name, data)

    return store


def _pause(flag: Path) -> None:
    flag.write_text("recording")
    for _ in range(1200):
        if not flag.exists():
            return
        time.sleep(0.1)


def _dying_finish(original):
    def finish(self, session, job_id, worker, result=None):
        if (result or {}).get("recovery_point_id"):
            if _armed("HAVEN_DIE_RECORDING_POINT"):
                session.flush()
                _die(phase="database commit", store=_stores["n"])
            if os.environ.get("HAVEN_PAUSE_RECORDING_POINT"):
                session.flush()
                _pause(Path(os.environ.pop("HAVEN_PAUSE_RECORDING_POINT")))
        return original(self, session, job_id, worker, result)

    return finish


def _dying_complete(original):
    def complete(self, job_id, worker, outcome, attempts=5):
        if _armed("HAVEN_DIE_BEFORE_REPORT") and "consistency" in outcome:
            _die(phase="report", store=_stores["n"])
        return original(self, job_id, worker, outcome, attempts)

    return complete


LocalBackend.store = _dying_store(LocalBackend.store)
HttpBackend.store = _dying_store(HttpBackend.store)
JobQueue.finish = _dying_finish(JobQueue.finish)
RemoteAgent._complete = _dying_complete(RemoteAgent._complete)

if __name__ == "__main__":
    app()
