"""Recovery points of an item, and restore requests (the restore itself runs as a job)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from haven.db.models import RecoveryPoint
from haven.domain.enums import JobType, PointState, ProtectionState, Role
from haven.errors import Conflict, NotFound, UserError
from haven.services.auth import Caller
from haven.services.paging import Keyset
from haven.work.errors import RestoreTargetInvalid, refuse_existing, would_overwrite

__all__ = ["PointService", "PointNotFound", "PointCorrupt", "refuse_corrupt"]


#: newest first; the id breaks ties
POINTS = Keyset("recovery-points", ((RecoveryPoint.time, True), (RecoveryPoint.id, True)))

class PointNotFound(NotFound):
    code = "UserErrorRecoveryPointNotFound"
    message = "Recovery point {point!r} does not exist for VM {vm!r}."
    recommendation = "List the recovery points with 'haven recoverypoint list --vault VAULT --vm {vm}'."


class PointSoftDeleted(Conflict):
    code = "UserErrorRecoveryPointSoftDeleted"
    message = "The backup data of {vm!r} is soft-deleted; its recovery points cannot be restored until it is undeleted."
    recommendation = "Undelete it first: haven protection undelete --vm {vm}."


class PointCorrupt(Conflict):
    code = "UserErrorRecoveryPointCorrupt"
    message = "Recovery point {point!r} of VM {vm!r} is Corrupt: the last verify of vault {vault!r} found data it needs missing or damaged, so a restore from it would fail."
    recommendation = ("Restore another point (haven recoverypoint list --vault {vault} --vm {vm}), or heal this one: back up the VM "
                      "(the backup stores damaged data again while the VM still holds it), then run "
                      "'haven vault verify --name {vault} --read-data'; a point found whole is Available again.")


def refuse_corrupt(vault, point: RecoveryPoint, vm: str) -> None:
    """A restore from the vault's own storage starts only from a point the last verify did not find damaged."""
    if point.state == PointState.CORRUPT.value:
        raise PointCorrupt(point=point.id, vm=vm, vault=vault.name)




class RestoreFormatInvalid(UserError):
    code = "UserErrorRestoreFormatInvalid"
    message = "Disk format {fmt!r} is not supported for restore."
    recommendation = "Use raw or qcow2."


class PointService:
    def __init__(self, core):
        self.core = core

    def list(self, caller: Caller, subscription: str, vault_name: str, vm: str) -> list[dict]:
        with self.core.db.session() as s:
            _, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm)
            rows = s.scalars(select(RecoveryPoint).where(RecoveryPoint.item_id == item.id).order_by(RecoveryPoint.time.desc())).all()
            return [view(p, vm) for p in rows]

    def page(self, caller: Caller, subscription: str, vault_name: str, vm: str, limit: int = 100,
             cursor: str | None = None) -> tuple[list[dict], str | None]:
        """Newest first, ``limit`` at a time (``services/paging.py``)."""
        with self.core.db.session() as s:
            _, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm)
            rows, following = POINTS.page(s, select(RecoveryPoint).where(RecoveryPoint.item_id == item.id), limit, cursor,
                                          lambda p: (p.time, p.id))
            return [view(p, vm) for p in rows], following

    def find(self, s, caller, subscription, vault_name, vm, point_id, needed=Role.READER):
        vault, item = self.core.protection.find_item(s, caller, subscription, vault_name, vm, needed)
        point = s.get(RecoveryPoint, point_id)
        if point is None or point.item_id != item.id:
            raise PointNotFound(point=point_id, vm=vm)
        return vault, item, point

    def show(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str) -> dict:
        with self.core.db.session() as s:
            return view(self.find(s, caller, subscription, vault_name, vm, point_id)[2], vm)

    def key_backup(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str) -> dict | None:
        """The sealed backup of the BEK and KEK an encrypted VM's recovery point carries (None if not encrypted)."""
        with self.core.db.session() as s:
            vault, item, point = self.find(s, caller, subscription, vault_name, vm, point_id)
        manifest = self.core.storage.open(vault).load_point(item.id, point.id)
        return (manifest.meta or {}).get("key_backup")

    def restore_disks(self, caller: Caller, subscription: str, vault_name: str, vm: str, point_id: str,
                      target: str, disks: list[str] | None = None, fmt: str = "raw", host: str | None = None) -> dict:
        """Queue a restore of the point's disks into ``target``: on this server, or on ``host`` (its agent writes them)."""
        with self.core.db.session() as s:
            vault, item, point = self.find(s, caller, subscription, vault_name, vm, point_id, Role.OPERATOR)
            if item.state == ProtectionState.SOFT_DELETED.value:
                raise PointSoftDeleted(vm=vm)
            refuse_corrupt(vault, point, vm)
            if fmt not in ("raw", "qcow2"):
                raise RestoreFormatInvalid(fmt=fmt)
            host_row = self.core.restore.pick_host(s, vault.region, host, None, vault.subscription_id) if host else None
            if host_row is not None:
                self.core.agents.require_runs(host_row, JobType.RESTORE.value, "RestoreDisks")
            # a remote host's folders are checked by its agent; the server can only see its own
            local = host_row is None or not host_row.remote
            target_path = check_target(target, self.core.settings.restore_roots, local=local)
            names = [d["name"] for d in point.disks]
            chosen = disks or names
            unknown = sorted(set(chosen) - set(names))
            if unknown:
                raise UserError(f"Recovery point {point_id} has no disk(s) {', '.join(unknown)}; it has {', '.join(names)}.",
                                "Pick disks from the recovery point's disk list (haven recoverypoint show).")
            if local:
                refuse_existing(target_path, chosen, fmt, target)
            job = self.core.queue.enqueue(
                s, type=JobType.RESTORE.value, operation="RestoreDisks",
                params={"point_id": point.id, "target": str(target_path), "disks": chosen, "format": fmt},
                subscription_id=vault.subscription_id, vault_id=vault.id, item_id=item.id,
                host_id=host_row.id if host_row is not None else None,
            )
            return self.core.jobs.view(job, s)


def check_target(target: str, roots: tuple[Path, ...] = (), local: bool = True) -> Path:
    """The restore target as a normalised absolute folder path, or ``RestoreTargetInvalid``.

    With ``roots`` (the ``restore_roots`` setting) it must lie in one of them; on this server the
    check follows symlinks, so a symlinked folder cannot lead out of them."""
    if not isinstance(target, str) or not target or "\x00" in target or len(target) > 4096:
        raise RestoreTargetInvalid(target=str(target)[:100], reason="it must be a non-empty path.")
    path = Path(target)
    if not path.is_absolute():
        raise RestoreTargetInvalid(target=target, reason="it must be an absolute path.")
    if any(part == ".." for part in path.parts):
        raise RestoreTargetInvalid(target=target, reason="'..' is not allowed in the path.")
    if local and path.exists() and not path.is_dir():
        raise RestoreTargetInvalid(target=target, reason="it exists and is not a folder.")
    if roots:
        canonical = os.path.realpath if local else os.path.normpath  # the server cannot see a remote host's symlinks
        real = Path(canonical(path))
        if not any(real == r or r in real.parents for r in map(Path, map(canonical, roots))):
            raise RestoreTargetInvalid(target=target, reason=f"it is outside the folders restores may write to (restore_roots: {', '.join(map(str, roots))}).")
    return Path(os.path.normpath(path))


def view(p: RecoveryPoint, vm: str) -> dict:
    return {
        "id": p.id,
        "vm": vm,
        "time": p.time,
        "consistency": p.consistency,
        "size_bytes": p.size_bytes,
        "stored_bytes": p.stored_bytes,
        "disks": p.disks,
        "expires_at": p.expires_at,
        "retain_until": p.retain_until,
        "state": p.state,
    }
