"""What only secrets do: be set to a value, a new version each time (a BEK is one, see :mod:`.vmkeys`)."""

from __future__ import annotations

from haven.keyvault import errors as E
from haven.services.auth import Caller
from haven.services.keyvault.kinds import SECRET
from haven.services.keyvault.objects import VersionedObjects, check_name

__all__ = ["SecretOperations"]

MAX_SECRET = 25 * 1024


class SecretOperations(VersionedObjects):
    def set_secret(self, caller: Caller, subscription: str, vault: str, name: str, value: str, content_type: str | None = None,
                   tags: dict | None = None) -> dict:
        check_name(SECRET, name)
        if not isinstance(value, str) or len(value.encode()) > MAX_SECRET:
            raise E.UserError("A secret value must be text of at most 25 KiB.", "Base64-encode binary values (such as a wrapped BEK).")
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "secret", "set")
            row = self._new_row(s, SECRET, kv, name, tags, content_type=content_type)
            row.value = SECRET.seal(self, kv, name, row.version, value.encode())
            s.add(row)
            s.flush()
            return SECRET.view(kv, row)
