"""Haven's backup extension: the guest side of application-consistent backups.

Put into a running guest through its guest agent (``guest-file-open``/``write``, ``guest-exec``),
never by the user. It is a folder in the guest::

    /var/lib/haven-extension/
        manifest.json      {"version": ..., "content_id": ..., "installed_at": ...}
        runner.sh          runs every script of pre.d/ or post.d/ in name order, each bounded
        config.json        the configuration it was installed with
        pre.d/NN-name      pre-snapshot scripts pushed by Haven (flush an application, stop writes)
        post.d/NN-name     post-snapshot scripts pushed by Haven (resume)

and the guest's owner may keep their own scripts in ``/etc/haven/pre-snapshot.d/`` and
``/etc/haven/post-snapshot.d/`` (like Azure's in-guest script configuration): the runner runs them
after Haven's, and upgrades never touch them. A point is application-consistent when at least one
pre-snapshot script ran, all of them succeeded, and the freeze held.

Haven runs ``runner.sh pre`` before the file-system freeze and ``runner.sh post`` after the thaw
(the guest agent refuses ``guest-exec`` while frozen). The folder is written beside the old one
and swapped in with one ``mv``; an ``updating`` marker makes the runner refuse to run meanwhile,
and the host holds the VM's lock so no backup starts during an update.

The installed version is compared with Haven's at every backup and the extension is upgraded
(or re-installed when its scripts changed) by itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import haven
from haven.hypervisor.errors import ExtensionInstallFailed
from haven.hypervisor.qga import GuestAgent, GuestAgentError

__all__ = [
    "EXTENSION_DIR",
    "GUEST_SCRIPTS_DIR",
    "EXTENSION_VERSION",
    "ExtensionConfig",
    "ExtensionState",
    "PhaseResult",
    "ensure_extension",
    "installed_extension",
    "run_phase",
]

EXTENSION_DIR = "/var/lib/haven-extension"
#: scripts the guest's owner keeps in the guest (pre-snapshot.d/, post-snapshot.d/); never touched by Haven
GUEST_SCRIPTS_DIR = "/etc/haven"
EXTENSION_VERSION = haven.__version__

ExtensionStatus = Literal["installed", "upgraded", "current", "outdated", "missing", "unavailable", "failed"]

_SCRIPT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

RUNNER = r"""#!/bin/sh
# Haven backup extension runner @VERSION@ - runs the pre- or post-snapshot scripts in name order:
# first those Haven put in (pre.d/, post.d/), then the guest's own (@GUEST_DIR@/pre-snapshot.d/, ...).
# usage: runner.sh pre|post        output: one "haven-ext:" line per script and a summary line
dir=@DIR@
phase="$1"
case "$phase" in pre|post) ;; *) echo "usage: $0 pre|post" >&2; exit 64 ;; esac
[ -e "$dir/updating" ] && { echo "haven-ext: update in progress"; exit 75; }
limit=$(cat "$dir/timeout" 2>/dev/null || echo 60)
ran=0; failed=0
for s in "$dir/$phase.d"/* "@GUEST_DIR@/$phase-snapshot.d"/*; do
  [ -f "$s" ] || continue
  ran=$((ran + 1))
  if command -v timeout >/dev/null 2>&1; then timeout "$limit" /bin/sh "$s"; else /bin/sh "$s"; fi
  rc=$?
  echo "haven-ext: $phase ${s##*/} rc=$rc"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
done
echo "haven-ext: $phase ran=$ran failed=$failed"
[ "$failed" -eq 0 ]
"""


@dataclass(frozen=True)
class ExtensionConfig:
    """What to put into the guest. ``pre_scripts``/``post_scripts``: file name -> shell script text."""

    pre_scripts: dict[str, str] = field(default_factory=dict)
    post_scripts: dict[str, str] = field(default_factory=dict)
    script_timeout: float = 60.0
    version: str = EXTENSION_VERSION
    install: bool = True  # False: use what is installed, never write into the guest

    def __post_init__(self) -> None:
        for name in [*self.pre_scripts, *self.post_scripts]:
            if not _SCRIPT_NAME.match(name):
                raise ValueError(f"invalid extension script name {name!r}")

    @property
    def has_scripts(self) -> bool:
        return bool(self.pre_scripts or self.post_scripts)

    def files(self) -> dict[str, bytes]:
        """Relative path -> content of everything installed (the manifest aside)."""
        files: dict[str, bytes] = {
            "runner.sh": RUNNER.replace("@VERSION@", self.version).replace("@DIR@", EXTENSION_DIR)
            .replace("@GUEST_DIR@", GUEST_SCRIPTS_DIR).encode(),
            "timeout": f"{int(self.script_timeout)}\n".encode(),
            "config.json": json.dumps(self.to_dict(), indent=1, sort_keys=True).encode(),
        }
        for name, text in sorted(self.pre_scripts.items()):
            files[f"pre.d/{name}"] = text.encode()
        for name, text in sorted(self.post_scripts.items()):
            files[f"post.d/{name}"] = text.encode()
        return files

    @property
    def content_id(self) -> str:
        h = hashlib.sha256()
        for path, data in sorted(self.files().items()):
            h.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pre_scripts": sorted(self.pre_scripts),
            "post_scripts": sorted(self.post_scripts),
            "script_timeout": self.script_timeout,
        }


@dataclass
class ExtensionState:
    """The extension's state in one VM, as reported per VM."""

    vm: str
    status: ExtensionStatus
    version: str | None = None
    previous_version: str | None = None
    content_id: str | None = None
    pre_scripts: int = 0
    post_scripts: int = 0
    message: str | None = None
    error_code: str | None = None
    checked_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return self.status in ("installed", "upgraded", "current")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PhaseResult:
    phase: str
    ran: int
    failed: int
    ok: bool
    output: str
    seconds: float


def installed_extension(agent: GuestAgent) -> dict[str, Any] | None:
    """The manifest of the extension in the guest, or None when there is none (or it is unreadable)."""
    try:
        data = agent.read_file(f"{EXTENSION_DIR}/manifest.json", limit=64 * 1024)
    except GuestAgentError:
        return None
    try:
        manifest = json.loads(data)
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) else None


def ensure_extension(agent: GuestAgent, vm: str, config: ExtensionConfig | None = None) -> ExtensionState:
    """Install, upgrade or keep the extension so that the guest runs ``config``; returns its state.

    Raises :class:`ExtensionInstallFailed` when writing into the guest fails (the old version, if
    any, stays in place).
    """
    config = config or ExtensionConfig()
    manifest = installed_extension(agent)
    previous = manifest.get("version") if manifest else None
    counts = {"pre_scripts": len(config.pre_scripts), "post_scripts": len(config.post_scripts)}
    if manifest and manifest.get("version") == config.version and manifest.get("content_id") == config.content_id:
        return ExtensionState(vm, "current", config.version, previous, config.content_id, **counts)
    if not config.install:
        return ExtensionState(vm, "unavailable", previous, previous, manifest.get("content_id") if manifest else None,
                              message="the extension is not installed and installing is turned off")
    _install(agent, vm, config)
    status: ExtensionStatus = "upgraded" if manifest else "installed"
    msg = None
    if manifest and previous == config.version:
        msg = "configuration changed: re-installed"
    elif manifest:
        msg = f"upgraded from {previous} to {config.version}"
    return ExtensionState(vm, status, config.version, previous, config.content_id, message=msg, **counts)


def _install(agent: GuestAgent, vm: str, config: ExtensionConfig) -> None:
    new, old = f"{EXTENSION_DIR}.new", f"{EXTENSION_DIR}.old"

    def sh(script: str) -> None:
        res = agent.shell(script, timeout=60)
        if not res.ok:
            raise ExtensionInstallFailed(name=vm, version=config.version,
                                         reason=f"'{script}' exited {res.exitcode}: {res.stderr.strip()}")

    try:
        sh(f"rm -rf {new} && mkdir -p {new}/pre.d {new}/post.d")
        for rel, data in config.files().items():
            agent.write_file(f"{new}/{rel}", data)
        manifest = {"version": config.version, "content_id": config.content_id, "installed_at": time.time()}
        agent.write_file(f"{new}/manifest.json", json.dumps(manifest).encode())
        # swap: mark the old one as updating, move the new one in, drop the old one, persist
        sh(
            f"chmod 0755 {new}/runner.sh {new}/pre.d {new}/post.d && chmod 0700 {new}; "
            f"for f in {new}/pre.d/* {new}/post.d/*; do [ -f \"$f\" ] && chmod 0700 \"$f\"; done; "
            f"[ -d {EXTENSION_DIR} ] && touch {EXTENSION_DIR}/updating; "
            f"rm -rf {old}; if [ -d {EXTENSION_DIR} ]; then mv {EXTENSION_DIR} {old}; fi; "
            f"mv {new} {EXTENSION_DIR} && rm -rf {old} && sync"
        )
    except GuestAgentError as exc:
        raise ExtensionInstallFailed(name=vm, version=config.version, reason=str(exc)) from exc


def run_phase(agent: GuestAgent, phase: str, timeout: float) -> PhaseResult:
    """Run the extension's ``pre`` or ``post`` scripts; never raises for a script's failure."""
    t0 = time.monotonic()
    try:
        res = agent.exec("/bin/sh", [f"{EXTENSION_DIR}/runner.sh", phase], timeout=timeout)
    except GuestAgentError as exc:
        return PhaseResult(phase, 0, 1, False, str(exc), time.monotonic() - t0)
    ran = failed = 0
    m = re.search(r"haven-ext: \w+ ran=(\d+) failed=(\d+)", res.stdout)
    if m:
        ran, failed = int(m.group(1)), int(m.group(2))
    elif not res.ok:
        failed = 1
    output = (res.stdout + res.stderr).strip()
    return PhaseResult(phase, ran, failed, res.ok and failed == 0, output, time.monotonic() - t0)
