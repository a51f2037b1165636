"""Child process for the crash tests: runs one engine operation on a local vault and kills itself
with SIGKILL (no cleanup, no finally blocks, no flush) at the ``kill_at``-th event.

An event is any backend call (store, load, exists, list, delete) or a disk read. ``when`` says
whether the kill comes before the call, after it, or (stores only) half-way through writing the
object's temporary file. With ``kill_at`` = 0 nothing is killed and the number of events is
printed, so the parent can draw points uniformly over the whole operation.

    python _crash_child.py backup <vault> <image> <item> <point> <kill_at> <when>
    python _crash_child.py gc     <vault> -      -      -       <kill_at> <when>
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from datetime import timedelta

from haven.engine import LocalBackend, LocalKeyWrapper, RawFileSource, Repository
from haven.engine.local import _TMP_SUFFIX

KEK = LocalKeyWrapper(b"reliability-master-key-000000000")


class Killer:
    def __init__(self, kill_at: int, when: str):
        self.kill_at, self.when, self.n, self.lock = kill_at, when, 0, threading.Lock()
        self.kinds: dict[str, int] = {}

    def event(self, kind: str) -> bool:
        """Counts the event; True if this is the one to die at."""
        with self.lock:
            self.n += 1
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            return self.n == self.kill_at

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class KillingBackend(LocalBackend):
    killer: Killer

    def _op(self, kind: str, name: str, call):
        hit = self.killer.event(f"{kind}:{name.split('/')[0]}")
        if hit and self.killer.when == "before":
            self.killer.die()
        out = call()
        if hit:
            self.killer.die()
        return out

    def store(self, name, data):
        hit = self.killer.event(f"store:{name.split('/')[0]}")
        if hit and self.killer.when == "torn":
            path = self._path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(f"{path.name}{_TMP_SUFFIX}torn00000000"), "wb") as fh:
                fh.write(data[: len(data) // 2])
            self.killer.die()
        if hit and self.killer.when == "before":
            self.killer.die()
        LocalBackend.store(self, name, data)
        if hit:
            self.killer.die()

    def load(self, name):
        return self._op("load", name, lambda: LocalBackend.load(self, name))

    def exists(self, name):
        return self._op("exists", name, lambda: LocalBackend.exists(self, name))

    def list(self, prefix=""):
        return self._op("list", prefix, lambda: LocalBackend.list(self, prefix))

    def delete(self, name):
        return self._op("delete", name, lambda: LocalBackend.delete(self, name))


class KillingSource(RawFileSource):
    killer: Killer

    def read(self, offset, length):
        hit = self.killer.event("read:disk")
        if hit and self.killer.when == "before":
            self.killer.die()
        data = RawFileSource.read(self, offset, length)
        if hit:
            self.killer.die()
        return data


def main() -> None:
    op, vault, image, item, point, kill_at, when = sys.argv[1:8]
    killer = Killer(int(kill_at), when)
    backend = KillingBackend(vault)
    backend.killer = killer
    repo = Repository.open(backend, KEK)
    if op == "backup":
        src = KillingSource(image, name="vda")
        src.killer = killer
        summary = repo.backup(item, point, [src], {"crash-test": True})
        out = {"events": killer.n, "kinds": killer.kinds, "summary": summary.as_dict()}
    else:
        # the parent advanced no clock here: GC runs with grace 0 so that it does delete
        report = repo.gc(grace=timedelta(0))
        out = {"events": killer.n, "kinds": killer.kinds, "gc": report.__dict__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
