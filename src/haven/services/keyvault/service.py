"""Key vaults: management (subscription roles) and data plane (access policies), and the service
API the backup path uses for encrypted VMs (seed 003).

Management — create, list, show, delete (soft), recover, purge a key vault, set and delete access
policies — needs a subscription role: Reader to read, Contributor to change (:mod:`.vaults`).

Data plane — keys and secrets — needs Reader on the subscription (to see the vault at all) *and*
an access policy for the caller's principal granting the permission (``keys: get, list, create,
delete, recover, backup, restore, purge, wrapKey, unwrapKey``; ``secrets: get, list, set, delete,
recover, backup, restore, purge``). The creator of a key vault gets every permission. Keys and
secrets are one versioned-object core (:mod:`.objects`) parameterised by kind (:mod:`.kinds`);
what only keys do is :mod:`.keyops`, what only secrets do :mod:`.secretops`.

The backup path (no caller: the server acts as the built-in principal ``Backup Management
Service``) uses :meth:`KeyVaultService.check_backup_access`, :meth:`backup_keys`,
:meth:`check_restore`, :meth:`check_restore_vm` and :meth:`restore_keys_from_backup` (:mod:`.vmkeys`).
"""

from __future__ import annotations

from functools import partialmethod
from typing import Any, Callable

from haven.services.keyvault.objects import VersionedObjects
from haven.services.keyvault.vaults import VaultManagement
from haven.services.keyvault.vmkeys import VmKeys

__all__ = ["KeyVaultService", "keyvault_service"]


def keyvault_service(core: Any) -> "KeyVaultService":
    """The core's key vault service (``core.keyvault`` once the core wires it; made on first use until then)."""
    svc = getattr(core, "keyvault", None)
    if svc is None:
        svc = KeyVaultService(core)
        core.keyvault = svc
    return svc


def _per_kind(op: Callable[..., Any]) -> tuple[partialmethod, partialmethod]:
    return partialmethod(op, "key"), partialmethod(op, "secret")


class KeyVaultService(VmKeys, VaultManagement):
    # The data plane's operations under the names the API, the CLI and the other services use.
    list_keys, list_secrets = _per_kind(VersionedObjects.list_objects)
    show_key, show_secret = _per_kind(VersionedObjects.show_object)
    delete_key, delete_secret = _per_kind(VersionedObjects.delete_object)
    recover_key, recover_secret = _per_kind(VersionedObjects.recover_object)
    purge_key, purge_secret = _per_kind(VersionedObjects.purge_object)
    backup_key, backup_secret = _per_kind(VersionedObjects.backup_object)
    restore_key, restore_secret = _per_kind(VersionedObjects.restore_object)
