"""The figures behind ``GET /metrics``, read from the metadata store at scrape time so every server
process reports the same numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from haven.db.models import Job, ProtectedItem, RecoveryPoint, Vault, VirtualMachine
from haven.domain.enums import ProtectionState

__all__ = ["Figures", "MetricsService"]


@dataclass
class Figures:
    seconds_since_good_backup: list[tuple[str, str, float]] = field(default_factory=list)  # vault, vm, seconds
    jobs: list[tuple[str, str, int]] = field(default_factory=list)  # type, status, count
    job_seconds: dict[str, float] = field(default_factory=dict)  # type -> total run time
    stored_bytes: list[tuple[str, float]] = field(default_factory=list)  # vault, bytes


class MetricsService:
    def __init__(self, core):
        self.core = core

    def figures(self) -> Figures:
        now = self.core.clock.now()
        out = Figures()
        with self.core.db.session() as s:
            rows = s.execute(select(Vault.name, VirtualMachine.name, ProtectedItem.last_success_time, ProtectedItem.created_at)
                             .join(Vault, ProtectedItem.vault_id == Vault.id).join(VirtualMachine, ProtectedItem.vm_id == VirtualMachine.id)
                             .where(ProtectedItem.state == ProtectionState.PROTECTED.value))
            for vault, vm, last, created in rows:
                out.seconds_since_good_backup.append((vault, vm, (now - (last or created)).total_seconds()))
            for jtype, status, count in s.execute(select(Job.type, Job.status, func.count()).group_by(Job.type, Job.status)):
                out.jobs.append((jtype, status, count))
            for jtype, started, ended in s.execute(select(Job.type, Job.started_at, Job.ended_at).where(Job.ended_at.is_not(None), Job.started_at.is_not(None))):
                out.job_seconds[jtype] = out.job_seconds.get(jtype, 0.0) + (ended - started).total_seconds()
            for vault, total in s.execute(select(Vault.name, func.coalesce(func.sum(RecoveryPoint.stored_bytes), 0))
                                          .join(RecoveryPoint, RecoveryPoint.vault_id == Vault.id, isouter=True).group_by(Vault.name)):
                out.stored_bytes.append((vault, float(total)))
        return out
