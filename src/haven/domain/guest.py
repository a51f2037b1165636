"""The guest's facts and the support rules that act on them (pure): the guest agent's minimum version
and the guest OS (seeds 000-004: Windows older than Windows Server 2008 R2 is not supported).

The facts come from the guest agent (``guest-info``, ``guest-get-osinfo``); host agents probe them and
the server keeps them with the time they were seen. ``vm list``, ``prepare check``, ``enable-for-vm``
and every backup apply these rules to them.
"""

from __future__ import annotations

import re
from typing import Any

from haven.errors import PreconditionFailed

__all__ = [
    "DEFAULT_MIN_AGENT_VERSION",
    "FLOOR_AGENT_VERSION",
    "MIN_WINDOWS_NT",
    "parse_version",
    "agent_version_ok",
    "classify_guest_os",
    "GuestOsUnsupported",
]

#: the oldest qemu-guest-agent Haven relies on (guest-exec, guest-file-*, fsfreeze, guest-get-osinfo);
#: the one minimum, unless ``min_guest_agent_version`` in haven.toml raises it
FLOOR_AGENT_VERSION = "2.10.0"
DEFAULT_MIN_AGENT_VERSION = FLOOR_AGENT_VERSION
#: seeds 000-004: Windows older than Windows Server 2008 R2 (NT 6.1) is not supported.
MIN_WINDOWS_NT = (6, 1)
_OLD_WINDOWS_IDS = {"2000", "xp", "2003", "2003r2", "vista", "2008"}
_OTHER_OS_IDS = {"freebsd", "netbsd", "openbsd", "dragonfly", "solaris", "illumos", "openindiana", "darwin", "macos"}


class GuestOsUnsupported(PreconditionFailed):
    code = "UserErrorGuestOsUnsupported"
    message = "VM {vm!r} runs {os}, which backup does not support: {reason}."
    recommendation = ("Upgrade the guest to a supported version (Windows Server 2008 R2 / Windows 7 or newer; any Linux "
                      "distribution that runs qemu-guest-agent), see docs/support-matrix.md.")


def parse_version(text: str) -> tuple[int, ...]:
    """``"7.2.22"`` -> ``(7, 2, 22)``; non-numeric tails are ignored (``"8.0.0-rc1"`` -> ``(8, 0, 0)``)."""
    parts: list[int] = []
    for piece in str(text).split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def agent_version_ok(version: str | None, minimum: str) -> bool | None:
    """True when ``version`` is at least ``minimum``; None when the agent reported no version."""
    if not version:
        return None
    return parse_version(version) >= parse_version(minimum)


def _nt_version(os_info: dict) -> tuple[int, int] | None:
    m = re.match(r"^(\d+)\.(\d+)", str(os_info.get("kernel-version") or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def classify_guest_os(os_info: dict[str, Any]) -> tuple[str, str, str | None]:
    """(family, label, problem) from the guest agent's ``guest-get-osinfo``: family is linux, windows, other or unknown;
    problem is why the OS is unsupported (None when it is supported)."""
    if not os_info:
        return "unknown", "an unknown OS", None
    osid = str(os_info.get("id") or "").lower()
    label = str(os_info.get("pretty-name") or os_info.get("name") or osid or "an unknown OS")
    if osid == "mswindows" or "windows" in label.lower():
        nt = _nt_version(os_info)
        vid = str(os_info.get("version-id") or "").lower()
        if (nt is not None and nt < MIN_WINDOWS_NT) or (nt is None and vid in _OLD_WINDOWS_IDS):
            return "windows", label, "versions older than Windows Server 2008 R2 (NT 6.1) are not supported"
        return "windows", label, None
    if osid in _OTHER_OS_IDS:
        return "other", label, None
    return "linux", label, None
