"""Client of ``qemu-guest-agent`` (the seeds' "VM agent") over the host end of its virtio-serial channel.

The channel takes one client at a time and may hold stale replies from an earlier client, so every
connection starts with ``guest-sync-delimited`` and a random id, and so does every exchange after a
time-out. Commands are serialised by a lock, so the thaw watchdog of :meth:`GuestAgent.frozen` can
run on another thread.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from haven.domain.guest import parse_version

__all__ = [
    "GuestAgent",
    "GuestAgentError",
    "GuestAgentTimeout",
    "GuestAgentCommandError",
    "ExecResult",
    "Freeze",
    "parse_version",
]

_SENTINEL = b"\xff"


class GuestAgentError(Exception):
    """Base of the client's low-level failures (the adapters turn them into typed Haven errors)."""


class GuestAgentTimeout(GuestAgentError):
    """The agent did not answer in time (missing, stopped, or busy)."""


class GuestAgentCommandError(GuestAgentError):
    def __init__(self, command: str, error_class: str, desc: str):
        self.command, self.error_class, self.desc = command, error_class, desc
        super().__init__(f"{command}: {error_class}: {desc}")

    @property
    def disabled(self) -> bool:
        return "disabled" in self.desc.lower() or self.error_class == "CommandNotFound"


@dataclass(frozen=True)
class ExecResult:
    exitcode: int | None
    stdout: str
    stderr: str
    signal: int | None = None

    @property
    def ok(self) -> bool:
        return self.exitcode == 0 and self.signal is None


@dataclass
class Freeze:
    """What happened to one freeze: how many file systems, for how long, and whether the watchdog thawed."""

    frozen: int = 0
    started: float = 0.0
    ended: float | None = None
    thawed_by_watchdog: bool = False
    thaw_error: str | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    @property
    def held(self) -> bool:
        """True while the file systems are (as far as Haven knows) still frozen."""
        return not self._done.is_set()


class GuestAgent:
    """One connection to a guest agent. ``timeout`` bounds every exchange unless a call says otherwise."""

    def __init__(self, path: str, timeout: float = 60.0, connect_timeout: float | None = None):
        self.path = str(path)
        self.timeout = timeout
        self._lock = threading.RLock()
        self._buf = b""
        self._dirty = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.settimeout(5.0)
            self._sock.connect(self.path)
        except OSError as exc:
            self._sock.close()
            raise GuestAgentError(f"cannot connect to {self.path}: {exc}") from exc
        try:
            self.sync(connect_timeout if connect_timeout is not None else timeout)
        except BaseException:
            self._sock.close()
            raise

    # ---- wire ----

    def _send(self, payload: bytes) -> None:
        try:
            self._sock.sendall(payload)
        except OSError as exc:
            raise GuestAgentError(f"{self.path}: {exc}") from exc

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestAgentTimeout(f"{self.path}: no answer in time")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout as exc:
                raise GuestAgentTimeout(f"{self.path}: no answer in time") from exc
            except OSError as exc:
                raise GuestAgentError(f"{self.path}: {exc}") from exc
            if not chunk:
                raise GuestAgentError(f"{self.path}: channel closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        if _SENTINEL in line:  # a delimited sync answer: drop everything before the sentinel
            line = line[line.rindex(_SENTINEL) + 1 :]
        line = line.strip()
        if not line:
            return None
        try:
            return json.loads(line)
        except ValueError:
            return None  # a torn message from an earlier client: ignore it

    def sync(self, timeout: float | None = None) -> None:
        """Bring the channel in step: flush the agent's parser, then wait for our own random id."""
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            sid = random.randint(1, 2**31 - 1)
            self._buf = b""
            msg = {"execute": "guest-sync-delimited", "arguments": {"id": sid}}
            self._send(_SENTINEL + json.dumps(msg).encode() + b"\n")
            deadline = time.monotonic() + limit
            self._dirty = True
            while True:
                reply = self._read_message(deadline)
                if reply and reply.get("return") == sid:
                    self._dirty = False
                    return

    def execute(self, command: str, timeout: float | None = None, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            if self._dirty:
                self.sync(max(limit, 5.0))
            self._send(json.dumps(msg).encode() + b"\n")
            if command in ("guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"):
                return None  # these never answer on success
            deadline = time.monotonic() + limit
            try:
                while True:
                    reply = self._read_message(deadline)
                    if reply is None:
                        continue
                    if "error" in reply:
                        err = reply["error"]
                        raise GuestAgentCommandError(command, err.get("class", "GenericError"), err.get("desc", ""))
                    if "return" in reply:
                        return reply["return"]
            except GuestAgentTimeout:
                # its late answer would be taken for the next command's: resynchronise before that one
                self._dirty = True
                raise GuestAgentTimeout(f"{command}: no answer within {limit:g}s") from None

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> GuestAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- information ----

    def ping(self, timeout: float | None = None) -> None:
        self.execute("guest-ping", timeout=timeout)

    def info(self) -> dict[str, Any]:
        """``guest-info``: ``version`` and ``supported_command`` (name, enabled)."""
        return self.execute("guest-info")

    def version(self) -> str:
        return str(self.info().get("version", ""))

    def os_info(self) -> dict[str, Any]:
        try:
            return self.execute("guest-get-osinfo")
        except GuestAgentCommandError:
            return {}

    def hostname(self) -> str | None:
        try:
            return self.execute("guest-get-host-name").get("host-name")
        except GuestAgentCommandError:
            return None

    # ---- file systems ----

    def fsfreeze_status(self) -> str:
        return self.execute("guest-fsfreeze-status")

    def fsfreeze_freeze(self, timeout: float | None = None) -> int:
        return int(self.execute("guest-fsfreeze-freeze", timeout=timeout))

    def fsfreeze_thaw(self, timeout: float | None = None) -> int:
        return int(self.execute("guest-fsfreeze-thaw", timeout=timeout))

    @contextmanager
    def frozen(self, bound: float = 10.0, freeze_timeout: float | None = None) -> Iterator[Freeze]:
        """Freeze the guest's file systems for the ``with`` block, and never longer than ``bound`` seconds.

        A watchdog thread thaws at the bound even if the block hangs; ``Freeze.thawed_by_watchdog``
        then tells the caller that whatever it captured after the bound is not consistent. If the
        freeze itself fails or times out, a thaw is sent anyway (the guest may be half frozen) and the
        error propagates.
        """
        state = Freeze(started=time.monotonic())
        try:
            state.frozen = self.fsfreeze_freeze(timeout=freeze_timeout)
        except BaseException:
            self._thaw(state, watchdog=False)
            raise

        def watchdog() -> None:
            if state.held:
                self._thaw(state, watchdog=True)

        # the bound counts from the freeze request: a slow freeze leaves less time for the block
        timer = threading.Timer(max(0.0, bound - (time.monotonic() - state.started)), watchdog)
        timer.daemon = True
        timer.start()
        try:
            yield state
        finally:
            timer.cancel()
            if state.held:
                self._thaw(state, watchdog=False)

    def _thaw(self, state: Freeze, watchdog: bool) -> None:
        if state._done.is_set():
            return
        err: str | None = None
        for _attempt in range(3):
            try:
                self.fsfreeze_thaw(timeout=min(self.timeout, 30.0))
                err = None
                break
            except GuestAgentError as exc:
                err = str(exc)
        state.thaw_error = err
        state.thawed_by_watchdog = watchdog
        state.ended = time.monotonic()
        state._done.set()

    # ---- commands in the guest ----

    def exec(
        self,
        path: str,
        args: list[str] | None = None,
        *,
        timeout: float = 60.0,
        input_data: bytes | None = None,
        env: list[str] | None = None,
    ) -> ExecResult:
        """Run a program in the guest, wait for it (at most ``timeout``), return its exit code and output."""
        arguments: dict[str, Any] = {"path": path, "arg": list(args or []), "capture-output": True}
        if input_data is not None:
            arguments["input-data"] = base64.b64encode(input_data).decode()
        if env:
            arguments["env"] = env
        pid = self.execute("guest-exec", **arguments)["pid"]
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self.execute("guest-exec-status", pid=pid)
            if status.get("exited"):
                return ExecResult(
                    exitcode=status.get("exitcode"),
                    stdout=base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
                    stderr=base64.b64decode(status.get("err-data", "")).decode(errors="replace"),
                    signal=status.get("signal"),
                )
            if time.monotonic() > deadline:
                raise GuestAgentTimeout(f"guest-exec {path}: still running after {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def shell(self, script: str, timeout: float = 60.0) -> ExecResult:
        return self.exec("/bin/sh", ["-c", script], timeout=timeout)

    def write_file(self, path: str, data: bytes, chunk: int = 48 * 1024) -> None:
        """Write ``data`` to ``path`` in the guest (created or truncated) with guest-file-open/write/close."""
        handle = self.execute("guest-file-open", path=path, mode="w")
        try:
            for pos in range(0, len(data), chunk) or [0]:
                piece = data[pos : pos + chunk]
                self.execute("guest-file-write", handle=handle, **{"buf-b64": base64.b64encode(piece).decode()})
            self.execute("guest-file-flush", handle=handle)
        finally:
            self.execute("guest-file-close", handle=handle)

    def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
        handle = self.execute("guest-file-open", path=path, mode="r")
        out = bytearray()
        try:
            while len(out) < limit:
                res = self.execute("guest-file-read", handle=handle, count=min(48 * 1024, limit - len(out)))
                out += base64.b64decode(res.get("buf-b64", ""))
                if res.get("eof") or not res.get("count"):
                    break
        finally:
            self.execute("guest-file-close", handle=handle)
        return bytes(out)

    def shutdown(self, mode: str = "powerdown") -> None:
        self.execute("guest-shutdown", mode=mode)
