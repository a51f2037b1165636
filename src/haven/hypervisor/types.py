"""The hypervisor layer's data: VMs, disks, guest-agent state, extension state, and the adapter interface."""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from haven.domain.guest import DEFAULT_MIN_AGENT_VERSION
from haven.engine.source import DiskSource

if TYPE_CHECKING:
    from haven.hypervisor.extension import ExtensionConfig, ExtensionState
    from haven.hypervisor.qga import GuestAgent

__all__ = [
    "PowerState",
    "ConsistencyLevel",
    "DiskInfo",
    "GuestAgentInfo",
    "VmInfo",
    "Snapshot",
    "HypervisorAdapter",
    "DEFAULT_MIN_AGENT_VERSION",
]

PowerState = Literal["running", "stopped", "paused", "suspended", "crashed", "unknown"]
ConsistencyLevel = Literal["application", "filesystem", "crash"]


@dataclass(frozen=True)
class DiskInfo:
    name: str  # stable name inside the VM: vda, sdb, or the file's stem for folder VMs
    path: str  # the image file (or block device) on the host
    format: str  # raw | qcow2 | ...
    size: int  # virtual size in bytes
    #: Why this disk cannot be backed up (an error's code, message and recommendation), or None.
    problem: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["problem"] is None:
            del out["problem"]
        return out


@dataclass
class GuestAgentInfo:
    """What Haven knows about the guest agent (the seeds' VM agent) of one VM."""

    present: bool  # the VM has a guest-agent channel
    answering: bool = False
    version: str | None = None
    minimum_version: str = DEFAULT_MIN_AGENT_VERSION
    version_ok: bool | None = None
    os: dict[str, Any] = field(default_factory=dict)
    hostname: str | None = None
    supported_commands: list[str] = field(default_factory=list)
    problem_code: str | None = None  # stable error code when not usable
    problem: str | None = None  # what is wrong
    recommendation: str | None = None  # the fix
    #: when the facts were read from the guest agent (ISO 8601, UTC); None: not probed (VM stopped, no channel)
    checked_at: str | None = None
    #: the backup extension in the guest, as the probe read it (ExtensionState.to_dict())
    extension: dict[str, Any] | None = None
    #: why this round did not probe the agent (the VM was busy with a backup): the last facts still hold
    skipped: str | None = None

    @property
    def usable(self) -> bool:
        return self.present and self.answering and self.version_ok is not False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["usable"] = self.usable
        return d


@dataclass
class VmInfo:
    name: str
    uuid: str | None
    power_state: PowerState
    disks: list[DiskInfo]
    nics: list[dict[str, Any]] = field(default_factory=list)
    guest_agent: GuestAgentInfo | None = None
    definition: dict[str, Any] | str | None = None  # vm.json content, or libvirt domain XML
    encryption: dict[str, Any] | None = None
    memory_mib: int | None = None
    vcpus: int | None = None
    host: str | None = None

    def disk(self, name: str) -> DiskInfo | None:
        return next((d for d in self.disks if d.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "power_state": self.power_state,
            "disks": [d.to_dict() for d in self.disks],
            "nics": self.nics,
            "guest_agent": self.guest_agent.to_dict() if self.guest_agent else None,
            "definition": self.definition,
            "encryption": self.encryption,
            "memory_mib": self.memory_mib,
            "vcpus": self.vcpus,
            "host": self.host,
        }


class Snapshot(abc.ABC):
    """A point-in-time view of a VM's disks, valid until released (leave the ``with`` block).

    ``disks``            one :class:`DiskSource` per included disk
    ``consistency``      ``application`` | ``filesystem`` | ``crash``
    ``warnings``         human-readable reasons for anything less than asked (for the job)
    ``checkpoint``       token to store with the recovery point; pass it back as ``previous_checkpoint``
    ``tracking_lost``    a previous checkpoint was given but is gone: ``changed_extents()`` is None
    ``incremental``      changed extents are known for every disk
    """

    def __init__(self, vm: str) -> None:
        self.vm = vm
        self.disks: list[DiskSource] = []
        self.consistency: ConsistencyLevel = "crash"
        self.warnings: list[str] = []
        self.checkpoint: str | None = None
        self.previous_checkpoint: str | None = None
        self.tracking_lost: bool = False
        self.power_state: PowerState = "unknown"
        self.extension: ExtensionState | None = None
        self.frozen_seconds: float | None = None
        self._released = False
        self._finalizers: list[Callable[[], None]] = []

    def on_release(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` after the view is released (adapters free their per-VM lock this way)."""
        self._finalizers.append(fn)

    @property
    def incremental(self) -> bool:
        return bool(self.disks) and all(d.changed_extents() is not None for d in self.disks)

    def disk(self, name: str) -> DiskSource:
        for d in self.disks:
            if d.name == name:
                return d
        raise KeyError(name)

    @abc.abstractmethod
    def _release(self, ok: bool) -> None:
        """Free exports, scratch files, jobs. ``ok`` False: the backup failed, keep the previous checkpoint usable."""

    def release(self, ok: bool = True) -> None:
        if self._released:
            return
        self._released = True
        try:
            self._release(ok)
        finally:
            for fn in reversed(self._finalizers):
                fn()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(ok=exc_type is None)

    def summary(self) -> dict[str, Any]:
        return {
            "vm": self.vm,
            "consistency": self.consistency,
            "warnings": list(self.warnings),
            "checkpoint": self.checkpoint,
            "previous_checkpoint": self.previous_checkpoint,
            "tracking_lost": self.tracking_lost,
            "disks": [{"name": d.name, "size": d.size, "format": d.format} for d in self.disks],
        }


class HypervisorAdapter(abc.ABC):
    """One host's VMs. Implementations: :class:`~haven.hypervisor.folder.ImageFolderAdapter`,
    :class:`~haven.hypervisor.libvirt_adapter.LibvirtAdapter`."""

    kind: str = "abstract"
    uri: str = ""
    #: the one minimum version of the guest agent; below it the agent is not used (the server's, for a remote host)
    min_agent_version: str = DEFAULT_MIN_AGENT_VERSION

    def __init__(self) -> None:
        self._vm_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._vm_busy: dict[str, str] = {}

    def vm_lock(self, name: str) -> threading.Lock:
        """One lock per VM: no backup runs while the extension is updated, and one backup at a time."""
        with self._locks_guard:
            return self._vm_locks.setdefault(name, threading.Lock())

    def acquire_vm(self, name: str, purpose: str) -> Callable[[], None]:
        """Take the VM's lock for ``purpose`` ('backup' or 'extension') or raise; returns the release."""
        from haven.hypervisor.errors import BackupAlreadyRunning, ExtensionUpdateInProgress

        lock = self.vm_lock(name)
        if not lock.acquire(blocking=False):
            if self._vm_busy.get(name) == "extension":
                raise ExtensionUpdateInProgress(name=name)
            raise BackupAlreadyRunning(name=name)
        self._vm_busy[name] = purpose

        def release() -> None:
            self._vm_busy.pop(name, None)
            lock.release()

        return release

    @abc.abstractmethod
    def list_vms(self) -> list[VmInfo]: ...

    @abc.abstractmethod
    def describe(self, name: str) -> VmInfo: ...

    @abc.abstractmethod
    def snapshot(
        self,
        name: str,
        previous_checkpoint: str | None = None,
        include_disks: list[str] | None = None,
        freeze_timeout: float = 60.0,
        extension: ExtensionConfig | None = None,
    ) -> AbstractContextManager[Snapshot]:
        """Take a point-in-time view of ``name``'s disks (use it as a context manager; leaving releases it).

        ``previous_checkpoint``: the ``checkpoint`` of the VM's previous point; its changes since then
        come as ``changed_extents()``, or ``tracking_lost`` is set when it is gone.
        ``include_disks``: disk names to include (None: all). ``freeze_timeout``: the longest the guest
        stays frozen (the thaw is guaranteed at that bound). ``extension``: what Haven's backup extension
        puts into the guest; None means Haven's default (installed/upgraded as needed, the guest's own
        scripts run), ``ExtensionConfig(install=False)`` writes nothing into the guest.
        Raises ``BackupAlreadyRunning`` / ``ExtensionUpdateInProgress`` when the VM is busy.
        """

    @abc.abstractmethod
    def define_vm(self, name: str, disk_paths: dict[str, str], definition: Any) -> VmInfo: ...

    def new_vm_staging(self, name: str, tag: str) -> Path | None:
        """Where a restore writes the disks of a new VM ``name`` before defining it, when this host keeps
        a VM's disks in a home of its own (``adopt_new_vm_disks`` moves them there afterwards); ``tag``
        tells concurrent restores apart. None: the restore puts them where it likes."""
        return None

    def adopt_new_vm_disks(self, name: str, files: dict[str, str]) -> tuple[dict[str, str], Path] | None:
        """Move a just-defined VM's restored disks (disk name -> path) into its home; returns their new
        paths and the home, or None when the VM uses its disks where they are."""
        return None

    @abc.abstractmethod
    def guest_agent_status(self, name: str) -> GuestAgentInfo: ...

    @abc.abstractmethod
    def _open_agent(self, name: str) -> tuple[GuestAgentInfo, GuestAgent | None]:
        """Probe the guest agent of a VM; the agent is returned open (caller closes) when usable."""

    def ensure_extension(self, name: str, version: str | None = None, config: ExtensionConfig | None = None) -> ExtensionState:
        """Install or upgrade Haven's backup extension in a running VM (no backup runs meanwhile)."""
        from haven.hypervisor.extension import ExtensionConfig, ExtensionState
        from haven.hypervisor.extension import ensure_extension as _ensure

        release = self.acquire_vm(name, "extension")
        try:
            info, agent = self._open_agent(name)
            if agent is None:
                return ExtensionState(name, "unavailable", message=_agent_problem(info), error_code=info.problem_code)
            try:
                cfg = config or ExtensionConfig()
                if version is not None and version != cfg.version:
                    cfg = ExtensionConfig(cfg.pre_scripts, cfg.post_scripts, cfg.script_timeout, version, cfg.install)
                return _ensure(agent, name, cfg)
            finally:
                agent.close()
        finally:
            release()

    def extension_state(self, name: str, version: str | None = None) -> ExtensionState:
        """What is installed in the guest, compared with ``version`` (Haven's by default); changes nothing."""
        from haven.hypervisor.extension import EXTENSION_VERSION, ExtensionState, installed_extension

        info, agent = self._open_agent(name)
        if agent is None:
            return ExtensionState(name, "unavailable", message=_agent_problem(info), error_code=info.problem_code)
        try:
            manifest = installed_extension(agent)
        finally:
            agent.close()
        want = version or EXTENSION_VERSION
        if manifest is None:
            return ExtensionState(name, "missing", message="not installed yet: Haven installs it at the next backup")
        have = str(manifest.get("version"))
        status = "current" if have == want else "outdated"
        return ExtensionState(name, status, have, content_id=manifest.get("content_id"),
                              message=None if status == "current" else f"{have} installed, {want} expected: upgraded at the next backup")

    def close(self) -> None:
        return None

    def __enter__(self) -> HypervisorAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _agent_problem(info: GuestAgentInfo) -> str:
    if info.problem:
        return f"{info.problem} {info.recommendation or ''}".strip()
    if info.present:
        return "The VM is not running: the extension is put into the guest at the next backup while it runs."
    return "The VM has no guest agent."
