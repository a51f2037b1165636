"""A small, synchronous client for the QEMU Machine Protocol (QMP) over a unix socket.

One :class:`QmpClient` is one monitor connection. Commands are sent one at a time (a lock makes
the client safe to share between threads); asynchronous events that arrive in between are kept
and can be waited for with :meth:`QmpClient.wait_event`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["QmpClient", "QmpError", "QmpConnectionError"]


class QmpError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str):
        self.command, self.error_class, self.desc = command, error_class, desc
        super().__init__(f"{command}: {error_class}: {desc}")


class QmpConnectionError(Exception):
    """The monitor cannot be reached, or closed, or did not answer in time.

    ``refused`` is True when nothing listens on the socket (QEMU is not running), False when
    something does but did not answer (QEMU busy, or another client holds the monitor).
    """

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


class QmpClient:
    def __init__(self, path: str, timeout: float = 60.0):
        self.path = str(path)
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(min(timeout, 10.0))
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise QmpConnectionError(f"{self.path}: {exc}", refused=True) from exc
        try:
            greeting = self._read_message(timeout)
            if "QMP" not in greeting:
                raise QmpConnectionError(f"unexpected greeting from {self.path}: {greeting!r}")
            self.version: dict[str, Any] = greeting["QMP"].get("version", {})
            self.execute("qmp_capabilities")
        except (OSError, ValueError) as exc:
            self._sock.close()
            raise QmpConnectionError(f"{self.path}: {exc}") from exc
        except BaseException:
            self._sock.close()
            raise

    # ---- wire ----

    def _read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpConnectionError(f"{self.path}: no answer within {timeout:g}s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as exc:
                raise QmpConnectionError(f"{self.path}: no answer within {timeout:g}s") from exc
            if not chunk:
                raise QmpConnectionError(f"{self.path}: monitor closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._read_message(max(0.01, deadline - time.monotonic()))
        return json.loads(line)

    def execute(self, command: str, timeout: float | None = None, **arguments: Any) -> Any:
        """Run one command; returns its ``return`` value or raises :class:`QmpError`."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        with self._lock:
            try:
                self._sock.sendall(json.dumps(msg).encode() + b"\n")
            except OSError as exc:
                raise QmpConnectionError(f"{self.path}: {exc}") from exc
            limit = timeout if timeout is not None else self.timeout
            deadline = time.monotonic() + limit
            while True:
                reply = self._read_message(max(0.01, deadline - time.monotonic()))
                if "event" in reply:
                    self.events.append(reply)
                    continue
                if "error" in reply:
                    err = reply["error"]
                    raise QmpError(command, err.get("class", "GenericError"), err.get("desc", ""))
                if "return" in reply:
                    return reply["return"]

    def wait_event(
        self,
        name: str,
        timeout: float = 120.0,
        match: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait for (and consume) the first event ``name`` for which ``match`` holds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for i, ev in enumerate(self.events):
                    if ev.get("event") == name and (match is None or match(ev)):
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QmpConnectionError(f"{self.path}: event {name} not seen within {timeout:g}s")
                self.events.append(self._read_message(left))

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- small helpers ----

    def block_devices(self) -> list[dict[str, Any]]:
        return self.execute("query-block")

    def named_nodes(self) -> list[dict[str, Any]]:
        return self.execute("query-named-block-nodes", flat=True)

    def status(self) -> str:
        return self.execute("query-status").get("status", "unknown")
