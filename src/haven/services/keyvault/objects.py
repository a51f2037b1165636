"""The versioned-object core of the key vault, one for keys and secrets (a :class:`~.kinds.ObjectKind`
says what differs): every write makes a new version of a named object; ``object_id`` ties the versions
together across deletes and restores; a delete is soft (all versions, until the vault's retention has
passed); recover undoes it; purge ends it (refused under purge protection); backup seals every version
into a blob only this server opens; restore brings them back, idempotently.

The data plane's permission of each operation has the same name for both kinds (``list``, ``get``,
``delete``, ``recover``, ``purge``, ``backup``, ``restore``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select

from haven.db.types import new_id
from haven.keyvault import errors as E
from haven.keyvault.crypto import WrapError
from haven.keyvault.tables import KeyVault
from haven.services.auth import Caller
from haven.services.keyvault.base import KeyVaultBase
from haven.services.keyvault.kinds import KINDS, ObjectKind

__all__ = ["VersionedObjects", "check_name", "new_version"]

_OBJ_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")


def check_name(kind: ObjectKind, name: str) -> None:
    if not isinstance(name, str) or not _OBJ_NAME.fullmatch(name):
        raise E.ObjectNameInvalid(kind=kind.name, name=name)


def new_version() -> str:
    """32 hex digits that sort by creation (wall-clock nanoseconds, then randomness)."""
    import secrets
    import time

    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


class VersionedObjects(KeyVaultBase):
    # ------------------------------------------------------------------ rows
    def _versions(self, s, kind: ObjectKind, kv: KeyVault, name: str, deleted: bool = False) -> list:
        model = kind.model
        rows = s.scalars(select(model).where(model.vault_id == kv.id, model.name == name).order_by(model.version)).all()
        return [r for r in rows if (r.deleted_at is not None) == deleted]

    def _row(self, s, kind: ObjectKind, kv: KeyVault, name: str, version: str | None = None):
        """The newest live version of ``name`` (or the one named), else the kind's not-found error."""
        rows = self._versions(s, kind, kv, name)
        if version:
            rows = [r for r in rows if r.version == version]
        if not rows:
            raise kind.not_found(name=name if not version else f"{name}/{version}", vault=kv.name)
        return rows[-1]

    def _new_row(self, s, kind: ObjectKind, kv: KeyVault, name: str, tags: dict | None, **columns):
        """A new version of ``name`` (not added): the object's id if it exists, refused while it is deleted."""
        rows = s.scalars(select(kind.model).where(kind.model.vault_id == kv.id, kind.model.name == name)).all()
        if rows and all(r.deleted_at is not None for r in rows):
            raise E.ObjectDeletedConflict(kind=kind.name, name=name, vault=kv.name)
        object_id = rows[0].object_id if rows else new_id()
        return kind.row(kv, name, new_version(), object_id, tags, self._now(), **columns)

    # ------------------------------------------------------------------ the data plane, for either kind
    def list_objects(self, kind: str, caller: Caller, subscription: str, vault: str, deleted: bool = False) -> list[dict]:
        k = KINDS[kind]
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, k.name, "list")
            latest: dict[str, object] = {}
            for r in s.scalars(select(k.model).where(k.model.vault_id == kv.id).order_by(k.model.version)):
                if (r.deleted_at is not None) == deleted:
                    latest[r.name] = r
            return [k.view(kv, r) for _, r in sorted(latest.items())]

    def show_object(self, kind: str, caller: Caller, subscription: str, vault: str, name: str, version: str | None = None) -> dict:
        k = KINDS[kind]
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, k.name, "get")
            return k.shown(self, s, kv, self._row(s, k, kv, name, version))

    def delete_object(self, kind: str, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        return self._mark_deleted(KINDS[kind], caller, subscription, vault, name, True)

    def recover_object(self, kind: str, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        return self._mark_deleted(KINDS[kind], caller, subscription, vault, name, False)

    def _mark_deleted(self, k: ObjectKind, caller: Caller, subscription: str, vault: str, name: str, deleted: bool) -> dict:
        """Soft-delete every version of ``name`` (purged once the vault's retention has passed), or recover them all."""
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, k.name, "delete" if deleted else "recover")
            rows = self._versions(s, k, kv, name, deleted=not deleted)
            if not rows or (not deleted and self._versions(s, k, kv, name)):
                raise k.not_found(name=name if deleted else f"{name} (deleted)", vault=vault)
            now = self._now()
            for r in rows:
                r.deleted_at, r.purge_at = (now, now + timedelta(days=kv.retention_days)) if deleted else (None, None)
            s.flush()
            return k.view(kv, rows[-1])

    def purge_object(self, kind: str, caller: Caller, subscription: str, vault: str, name: str) -> None:
        k = KINDS[kind]
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, k.name, "purge")
            rows = self._versions(s, k, kv, name, deleted=True)
            if not rows:
                raise k.not_found(name=f"{name} (deleted)", vault=vault)
            if kv.purge_protection:
                raise E.PurgeProtected(vault=vault, what=f"the {k.name} {name!r}", purge_at=rows[-1].purge_at.isoformat())
            k.before_purge(self, s, rows)
            for r in rows:
                s.delete(r)

    def backup_object(self, kind: str, caller: Caller, subscription: str, vault: str, name: str) -> dict:
        k = KINDS[kind]
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, k.name, "backup")
            rows = self._versions(s, k, kv, name)
            if not rows:
                raise k.not_found(name=name, vault=vault)
            return {"name": name, "value": self.sealer.seal_blob(k.name, self._doc(k, kv, rows))}

    def restore_object(self, kind: str, caller: Caller, subscription: str, vault: str, blob: str) -> dict:
        k = KINDS[kind]
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, k.name, "restore")  # access first, then the blob
            try:
                _, doc = self.sealer.open_blob(blob, (k.name,))
            except WrapError as exc:
                raise E.BackupBlobInvalid(reason=str(exc)) from None
            return self._restore_doc(s, k, kv, doc)

    # ------------------------------------------------------------------ single-object backups
    def _doc(self, kind: ObjectKind, kv: KeyVault, rows: list) -> dict:
        """Every version of one object, in clear: only ever stored sealed (``seal_blob``)."""
        versions = [{"version": r.version, **kind.version_doc(self, kv, r), "tags": r.tags or {}, "created_at": r.created_at.isoformat()}
                    for r in rows]
        return {"name": rows[0].name, "object_id": rows[0].object_id, "versions": versions}

    def _restore_doc(self, s, kind: ObjectKind, kv: KeyVault, doc: dict) -> dict:
        """Bring an object's versions back: those present are kept (and recovered if deleted), the others added."""
        name = doc["name"]
        existing = s.scalars(select(kind.model).where(kind.model.vault_id == kv.id, kind.model.name == name)).all()
        if existing and existing[0].object_id != doc["object_id"]:
            if all(r.deleted_at is not None for r in existing):
                raise E.ObjectDeletedConflict(kind=kind.name, name=name, vault=kv.name)
            raise E.ObjectExists(kind=kind.name, name=name, vault=kv.name)
        have = {r.version for r in existing}
        for r in existing:
            r.deleted_at = r.purge_at = None
        for v in doc["versions"]:
            if v["version"] in have:
                continue
            s.add(kind.row(kv, name, v["version"], doc["object_id"], v.get("tags"), datetime.fromisoformat(v["created_at"]),
                           **kind.version_columns(self, kv, name, v)))
        s.flush()
        return kind.view(kv, self._row(s, kind, kv, name))
