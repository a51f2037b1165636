"""Talking to a running guest around a snapshot: probe the guest agent, run the extension, freeze, thaw.

:func:`probe_agent` answers "is there a usable guest agent, which version, which OS" and says what
is wrong (with the fix) when it is missing, old or silent.

:class:`Quiescer` does the guest side of one consistent point, in this order::

    q.prepare()                # extension: install/upgrade if needed, run pre-snapshot scripts
    with q.hold():             # fsfreeze, with a watchdog that thaws at the bound
        <take the point in time: a QMP transaction / libvirt backupBegin>
    q.finish()                 # post-snapshot scripts
    q.consistency, q.warnings  # application | filesystem | crash, and why
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from haven.domain.guest import GuestOsUnsupported, classify_guest_os

from haven.errors import HavenError
from haven.hypervisor.errors import (
    ExtensionInstallFailed,
    FreezeFailed,
    GuestAgentCommandDisabled,
    GuestAgentNotConfigured,
    GuestAgentNotResponding,
    GuestAgentVersionUnsupported,
)
from haven.hypervisor.extension import ExtensionConfig, ExtensionState, ensure_extension, run_phase
from haven.hypervisor.qga import Freeze, GuestAgent, GuestAgentCommandError, GuestAgentError, parse_version
from haven.hypervisor.types import DEFAULT_MIN_AGENT_VERSION, ConsistencyLevel, GuestAgentInfo

if TYPE_CHECKING:
    from haven.hypervisor.types import HypervisorAdapter, VmInfo

__all__ = ["probe_agent", "probe_guest", "probe_inventory", "Quiescer", "REQUIRED_COMMANDS", "PROBE_SECONDS", "PROBE_WORKERS"]

#: the longest one VM's guest-agent probe may take in an inventory round (its facts are "not answering" after)
PROBE_SECONDS = 10.0
#: VMs probed at once
PROBE_WORKERS = 8

#: what consistent backups need from the agent
REQUIRED_COMMANDS = ("guest-fsfreeze-freeze", "guest-fsfreeze-thaw")


def _problem(info: GuestAgentInfo, err: HavenError) -> GuestAgentInfo:
    info.problem_code, info.problem, info.recommendation = err.code, err.text, err.fix
    return info


def probe_agent(
    vm: str,
    connect: Callable[[], GuestAgent] | None,
    *,
    min_version: str = DEFAULT_MIN_AGENT_VERSION,
    timeout: float = 30.0,
) -> tuple[GuestAgentInfo, GuestAgent | None]:
    """Connect and read version, commands and OS. Returns the info and, when usable, the open agent.

    ``connect`` is None when the VM has no guest-agent channel at all.
    """
    info = GuestAgentInfo(present=connect is not None, minimum_version=min_version)
    if connect is None:
        return _problem(info, GuestAgentNotConfigured(name=vm)), None
    try:
        agent = connect()
    except GuestAgentError as exc:
        return _problem(info, GuestAgentNotResponding(name=vm, timeout=timeout, reason=str(exc))), None
    try:
        ginfo = agent.info()
        info.answering = True
        info.version = str(ginfo.get("version", "")) or None
        info.supported_commands = sorted(
            c["name"] for c in ginfo.get("supported_commands", []) if c.get("enabled", True)
        )
        info.os = agent.os_info()
        info.hostname = agent.hostname()
    except GuestAgentError as exc:
        agent.close()
        return _problem(info, GuestAgentNotResponding(name=vm, timeout=timeout, reason=str(exc))), None
    info.version_ok = bool(info.version) and parse_version(info.version) >= parse_version(min_version)
    if not info.version_ok:
        _problem(info, GuestAgentVersionUnsupported(name=vm, version=info.version or "unknown", minimum=min_version))
        agent.close()
        return info, None
    missing = [c for c in REQUIRED_COMMANDS if info.supported_commands and c not in info.supported_commands]
    if missing:
        _problem(info, GuestAgentCommandDisabled(name=vm, command=missing[0]))
    return info, agent


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def probe_guest(adapter: HypervisorAdapter, name: str) -> GuestAgentInfo:
    """Ask the guest agent of a running VM for its facts now: version and commands (``guest-info``), OS
    (``guest-get-osinfo``) and the backup extension's state (its manifest in the guest); stamped with the time."""
    from haven.hypervisor.extension import EXTENSION_VERSION, installed_extension

    info, agent = adapter._open_agent(name)
    if info.answering or info.present:
        info.checked_at = _now()
    if agent is None:
        return info
    try:
        manifest = installed_extension(agent)
    finally:
        agent.close()
    if manifest is None:
        info.extension = {"status": "missing", "version": None,
                          "message": "not installed yet: Haven installs it at the next backup"}
    else:
        have = str(manifest.get("version"))
        status = "current" if have == EXTENSION_VERSION else "outdated"
        info.extension = {"status": status, "version": have, "content_id": manifest.get("content_id"),
                          "message": None if status == "current" else
                          f"{have} installed, {EXTENSION_VERSION} expected: upgraded at the next backup"}
    info.extension["checked_at"] = info.checked_at
    return info


def probe_inventory(adapter: HypervisorAdapter, *, timeout: float = PROBE_SECONDS, workers: int = PROBE_WORKERS,
                    only: str | None = None) -> list[VmInfo]:
    """The adapter's VMs with the facts of each running VM's guest agent, probed in parallel, each within ``timeout``.

    A probe that has not answered by its bound counts as an agent that does not answer (the thread is left to
    end by itself: the adapter's own agent time-out bounds it). A VM busy with a backup or an extension update
    is not probed (its guest may be frozen): its facts say ``skipped`` and the last ones seen still hold.
    ``only``: that VM alone, described and probed (``prepare check``'s and protection's fresh probe): the cost of
    one VM, not of the host's whole list (protecting 1,000 VMs must not describe a million).
    """
    vms = [adapter.describe(only, probe_guest=False)] if only is not None else adapter.list_vms()
    running = [vm for vm in vms if vm.power_state == "running" and vm.guest_agent is not None and vm.guest_agent.present]
    if only is not None:
        for vm in running:
            if vm.name != only:
                vm.guest_agent.skipped = "not asked"  # type: ignore[union-attr]
        running = [vm for vm in running if vm.name == only]
    busy = getattr(adapter, "_vm_busy", {})
    slots = threading.Semaphore(max(1, workers))
    results: dict[str, GuestAgentInfo] = {}
    started: dict[str, float] = {}
    done: dict[str, threading.Event] = {}

    def run(vm_name: str) -> None:
        with slots:
            started[vm_name] = time.monotonic()
            try:
                results[vm_name] = probe_guest(adapter, vm_name)
            except Exception as exc:  # a VM that vanished or a channel that broke: that VM's facts say so
                results[vm_name] = _problem(GuestAgentInfo(present=True, checked_at=_now()),
                                            GuestAgentNotResponding(name=vm_name, timeout=timeout, reason=str(exc)))
            finally:
                done[vm_name].set()

    for vm in running:
        if vm.name in busy:
            vm.guest_agent.skipped = f"the VM is busy ({busy[vm.name]})"  # type: ignore[union-attr]
            continue
        done[vm.name] = threading.Event()
        threading.Thread(target=run, args=(vm.name,), daemon=True, name=f"probe-{vm.name}").start()
    pending = set(done)
    while pending:
        for vm_name in list(pending):
            if done[vm_name].is_set():
                pending.discard(vm_name)
            elif vm_name in started and time.monotonic() - started[vm_name] > timeout:
                pending.discard(vm_name)
                results.setdefault(vm_name, _problem(
                    GuestAgentInfo(present=True, checked_at=_now()),
                    GuestAgentNotResponding(name=vm_name, timeout=timeout, reason="no answer within the probe's bound")))
        if pending:
            time.sleep(0.02)
    for vm in vms:
        if vm.name in results:
            vm.guest_agent = results[vm.name]
    return vms


class Quiescer:
    """The guest's part of one point in time; see the module docstring."""

    def __init__(
        self,
        vm: str,
        agent: GuestAgent | None,
        info: GuestAgentInfo | None,
        *,
        extension: ExtensionConfig | None = None,
        freeze_timeout: float = 60.0,
    ):
        """``extension`` None: Haven's default extension (no pushed scripts; the guest's own scripts run).
        ``ExtensionConfig(install=False)``: use what the guest has, write nothing."""
        self.vm, self.agent, self.info = vm, agent, info
        self.extension_config = extension if extension is not None else ExtensionConfig()
        self.freeze_timeout = freeze_timeout
        self.warnings: list[str] = []
        self.extension: ExtensionState | None = None
        self.freeze: Freeze | None = None
        self.freeze_ok = False
        self.pre_ok: bool | None = None
        self.pre_ran = 0
        self.post_ok: bool | None = None
        self.scripts_ran = 0
        if agent is None:
            self._warn_no_agent()

    def _warn(self, err: HavenError | str) -> None:
        if isinstance(err, HavenError):
            self.warnings.append(f"{err.code}: {err.text} {err.fix}")
        else:
            self.warnings.append(err)

    def _warn_no_agent(self) -> None:
        if self.info and self.info.problem:
            self.warnings.append(
                f"{self.info.problem_code}: {self.info.problem} {self.info.recommendation} "
                "The recovery point is crash-consistent."
            )
        else:
            self.warnings.append("No guest agent: the recovery point is crash-consistent.")

    # ---- before the freeze ----

    def check_support(self) -> None:
        """The support matrix's OS rule on what the guest agent reports now: an unsupported guest is not backed up."""
        if self.info is None or not self.info.answering:
            return
        _family, label, problem = classify_guest_os(self.info.os or {})
        if problem:
            if self.agent is not None:
                self.agent.close()
            raise GuestOsUnsupported(vm=self.vm, os=label, reason=problem)

    def prepare(self) -> None:
        self.check_support()
        if self.agent is None or self.extension_config is None:
            return
        try:
            self.extension = ensure_extension(self.agent, self.vm, self.extension_config)
        except ExtensionInstallFailed as exc:
            self._warn(exc)
            self.extension = ExtensionState(self.vm, "failed", message=exc.text, error_code=exc.code)
            return
        if not self.extension.ready:
            if self.extension_config.install:
                self._warn(f"Haven's backup extension is not available in VM '{self.vm}': {self.extension.message}")
            return
        res = run_phase(self.agent, "pre", timeout=self.extension_config.script_timeout + 30)
        self.pre_ok, self.pre_ran = res.ok, res.ran
        self.scripts_ran += res.ran
        if not res.ok:
            self._warn(
                f"The pre-snapshot scripts of VM '{self.vm}' failed ({res.failed} of {res.ran}): {res.output[-500:]}. "
                "The point is at most file-system-consistent; fix the scripts in the extension's configuration."
            )

    # ---- the freeze ----

    @contextmanager
    def hold(self) -> Iterator[Freeze | None]:
        if self.agent is None:
            yield None
            return
        try:
            with self.agent.frozen(bound=self.freeze_timeout, freeze_timeout=self.freeze_timeout) as fr:
                self.freeze = fr
                self.freeze_ok = True
                yield fr
        except GuestAgentCommandError as exc:
            if self.freeze is not None:
                raise
            self._freeze_failed(exc)
            yield None
        except GuestAgentError as exc:
            if self.freeze is not None:
                raise
            self._freeze_failed(exc)
            yield None

    def _freeze_failed(self, exc: Exception) -> None:
        self.freeze_ok = False
        if isinstance(exc, GuestAgentCommandError) and exc.disabled:
            self._warn(GuestAgentCommandDisabled(name=self.vm, command=exc.command))
        else:
            self._warn(FreezeFailed(name=self.vm, reason=str(exc)))

    # ---- after the thaw ----

    def finish(self) -> None:
        fr = self.freeze
        if fr is not None:
            if fr.thawed_by_watchdog:
                self.freeze_ok = False
                self._warn(
                    f"The guest stayed frozen longer than the bound of {self.freeze_timeout:g} s and was thawed "
                    "before the point in time was taken; the point is crash-consistent. Retry when the host is less busy."
                )
            if fr.thaw_error:
                self._warn(f"Thawing the file systems of VM '{self.vm}' reported: {fr.thaw_error}")
        if self.agent is not None and self.extension is not None and self.extension.ready and self.extension_config:
            res = run_phase(self.agent, "post", timeout=self.extension_config.script_timeout + 30)
            self.post_ok, self.scripts_ran = res.ok, self.scripts_ran + res.ran
            if not res.ok:
                self._warn(f"The post-snapshot scripts of VM '{self.vm}' failed: {res.output[-500:]}")

    @property
    def frozen_seconds(self) -> float | None:
        return self.freeze.duration if self.freeze else None

    @property
    def consistency(self) -> ConsistencyLevel:
        if not self.freeze_ok:
            return "crash"
        if self.pre_ran > 0 and self.pre_ok:
            return "application"
        return "filesystem"
