"""``haven serve`` that kills itself with SIGKILL inside the transaction recording a backup's point:
the point row has been sent to the database (flushed), the commit has not happened. For
``test_process_kill.py`` only. Run as ``python -m tests.reliability._dying_server serve …`` with
``HAVEN_DIE_RECORDING_POINT=1``."""

from __future__ import annotations

import os
import signal

from haven.cli.main import app
from haven.jobs.queue import JobQueue

_finish = JobQueue.finish


def _finish_or_die(self, session, job_id, worker, result=None):
    if os.environ.get("HAVEN_DIE_RECORDING_POINT") == "1" and (result or {}).get("recovery_point_id"):
        session.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _finish(self, session, job_id, worker, result)


JobQueue.finish = _finish_or_die

if __name__ == "__main__":
    app()
