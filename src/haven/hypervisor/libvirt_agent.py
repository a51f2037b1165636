"""The guest agent of a libvirt domain, spoken through ``virDomainQemuAgentCommand`` (no socket of our own)."""

from __future__ import annotations

import json
from typing import Any

from haven.hypervisor.errors import LibvirtUnavailable
from haven.hypervisor.qga import GuestAgent, GuestAgentCommandError, GuestAgentError, GuestAgentTimeout

__all__ = ["LibvirtGuestAgent", "libvirt_module"]


def libvirt_module():
    try:
        import libvirt
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise LibvirtUnavailable(uri="(any)", reason="libvirt-python is not installed") from exc
    return libvirt


class LibvirtGuestAgent(GuestAgent):
    """The guest agent reached through libvirt (which owns the channel and does guest-sync itself)."""

    def __init__(self, domain: Any, timeout: float = 60.0, connect_timeout: float | None = None):
        self._dom = domain
        self.path = f"libvirt:{domain.name()}"
        self.timeout = timeout
        import threading

        self._lock = threading.RLock()
        self._buf = b""
        self._dirty = False
        self.execute("guest-ping", timeout=connect_timeout if connect_timeout is not None else timeout)

    def sync(self, timeout: float | None = None) -> None:
        return None

    def execute(self, command: str, timeout: float | None = None, **arguments: Any) -> Any:
        import libvirt_qemu

        libvirt = libvirt_module()
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            try:
                if command in ("guest-shutdown",):
                    libvirt_qemu.qemuAgentCommand(self._dom, json.dumps(msg), 0, 0)
                    return None
                out = libvirt_qemu.qemuAgentCommand(self._dom, json.dumps(msg), max(1, int(round(limit))), 0)
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                text = exc.get_error_message() or str(exc)
                if code in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, getattr(libvirt, "VIR_ERR_AGENT_COMMAND_TIMEOUT", -99)):
                    raise GuestAgentTimeout(f"{command}: {text}") from exc
                if code == libvirt.VIR_ERR_OPERATION_INVALID or "not connected" in text or "not running" in text:
                    raise GuestAgentError(f"{command}: {text}") from exc
                raise GuestAgentCommandError(command, "GenericError", text) from exc
        if out is None:
            return None
        reply = json.loads(out)
        return reply.get("return")

    def fsfreeze_freeze(self, timeout: float | None = None) -> int:
        libvirt = libvirt_module()
        try:
            return int(self._dom.fsFreeze())
        except libvirt.libvirtError as exc:
            raise GuestAgentCommandError("guest-fsfreeze-freeze", "GenericError", str(exc)) from exc

    def fsfreeze_thaw(self, timeout: float | None = None) -> int:
        libvirt = libvirt_module()
        try:
            return int(self._dom.fsThaw())
        except libvirt.libvirtError as exc:
            raise GuestAgentCommandError("guest-fsfreeze-thaw", "GenericError", str(exc)) from exc

    def close(self) -> None:
        return None


# ---- domain XML ----
