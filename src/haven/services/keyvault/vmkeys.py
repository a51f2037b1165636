"""The key vault's part in backing up and restoring encrypted VMs (seed 003). The server acts as the
built-in principal ``Backup Management Service``: before a backup it checks its access
(:meth:`VmKeys.check_backup_access`), with each recovery point it stores the VM's KEK and BEK(s)
sealed (:meth:`VmKeys.backup_keys`), before a restore it checks they exist (:meth:`VmKeys.check_restore`,
:meth:`VmKeys.check_restore_vm`) and it brings them back from a point (:meth:`VmKeys.restore_keys_from_backup`).
A BEK is a secret holding a disk's LUKS key wrapped by the KEK its tags name (:meth:`VmKeys.set_bek`).
"""

from __future__ import annotations

from typing import Iterable

from haven.db.models import Subscription
from haven.domain.enums import Role
from haven.keyvault import errors as E
from haven.keyvault.crypto import AES_ALGS, RSA_ALGS, SoftwareKey, WrapError, b64d
from haven.keyvault.permissions import BACKUP_NEEDS
from haven.keyvault.tables import KeyVault
from haven.services.auth import Caller
from haven.services.keyvault.encryption import _ref, parse_encryption
from haven.services.keyvault.keyops import KeyOperations, check_alg
from haven.services.keyvault.kinds import KEY, SECRET, kid
from haven.services.keyvault.secretops import SecretOperations

__all__ = ["VmKeys", "VM_KEYS_FORMAT"]

VM_KEYS_FORMAT = "haven-vm-keys/1"


class VmKeys(SecretOperations, KeyOperations):
    def set_bek(self, caller: Caller, subscription: str, vault: str, name: str, disk_key: bytes, kek: str,
                alg: str | None = None) -> dict:
        """Store a disk's LUKS key as a BEK secret, wrapped by the KEK (the secret's tags name the KEK)."""
        wrapped = self.wrap(caller, subscription, vault, kek, disk_key, alg)
        return self.set_secret(caller, subscription, vault, name, wrapped["value"], content_type="application/x-haven-wrapped-bek",
                               tags={"kek": wrapped["kid"], "alg": wrapped["alg"], "method": "luks"})

    def _vm_key_vault(self, s, enc: dict, subscription: str | None) -> KeyVault:
        """The key vault an encrypted VM's settings name, in the protecting vault's ``subscription`` only.

        A subscription's backups never read (nor copy into its recovery points) another subscription's keys.
        """
        if subscription is None:
            return self._system_vault(s, enc["subscription"], enc["key_vault"])
        own = self.core.subscriptions.find(s, subscription)
        if enc["subscription"] and enc["subscription"] not in (own.id, own.name):
            raise E.KeyVaultNotFound(name=enc["key_vault"], subscription=enc["subscription"])
        return self._system_vault(s, own.id, enc["key_vault"], missing=E.KeyVaultNotFound(name=enc["key_vault"], subscription=own.name))

    def check_backup_access(self, vm_encryption: dict | None, subscription: str | None = None) -> None:
        """Before enabling backup and before every backup of a VM: ``None`` when it may be backed up.

        Raises ``BekOnlyEncryption`` (seed row 1), ``BackupServiceKeyVaultAccessDenied`` (row 5),
        ``KeyVaultNotFound``, ``KeyNotFound``/``SecretNotFound`` or ``EncryptionSettingsInvalid``.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return
        if enc["kek"] is None:
            raise E.BekOnlyEncryption(vm=enc["vm"])
        with self.core.db.session() as s:
            kv = self._vm_key_vault(s, enc, subscription)
            self._check_backup_principal(s, kv)
            self._row(s, KEY, kv, *enc["kek"])
            for name, version in enc["beks"]:
                self._row(s, SECRET, kv, name, version)

    def _check_backup_principal(self, s, kv: KeyVault) -> None:
        keys, secrets = self._perms(s, kv, self._backup_principal(s).id)
        missing = [f"keys:{p}" for p in BACKUP_NEEDS["keys"] if p not in keys] + [f"secrets:{p}" for p in BACKUP_NEEDS["secrets"] if p not in secrets]
        if missing:
            raise E.BackupServiceKeyVaultAccessDenied(key_vault=kv.name, missing=", ".join(missing))

    def backup_keys(self, vm_encryption: dict | None, subscription: str | None = None) -> dict | None:
        """The backup of the VM's KEK and BEK(s), to store with each recovery point (``None`` if not encrypted).

        The ``blob`` is sealed by this server's master key; the other fields are for display.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return None
        self.check_backup_access(vm_encryption, subscription)
        with self.core.db.session() as s:
            kv = self._vm_key_vault(s, enc, subscription)
            sub = s.get(Subscription, kv.subscription_id)
            kek_rows = self._versions(s, KEY, kv, enc["kek"][0])
            bek_docs = [self._doc(SECRET, kv, self._versions(s, SECRET, kv, n)) for n, _ in enc["beks"]]
            doc = {"key_vault": kv.name, "subscription_id": sub.id, "subscription": sub.name, "region": kv.region,
                   "settings": enc["raw"], "keys": [self._doc(KEY, kv, kek_rows)], "secrets": bek_docs,
                   "made_at": self._now().isoformat()}
            return {"format": VM_KEYS_FORMAT, "key_vault": kv.name, "subscription": sub.name, "region": kv.region,
                    "kek_key": enc["kek"][0], "bek_secrets": [n for n, _ in enc["beks"]],
                    "blob": self.sealer.seal_blob("vmkeys", doc)}

    def check_restore(self, vm_encryption: dict | None, subscription: str | None = None, where: dict | None = None) -> None:
        """Before restoring an encrypted VM's disks: its key vault, KEK and BEK(s) must exist.

        Raises ``KeyVaultMissingForRestore`` (seed row 2) or ``KeysMissingForRestore`` (row 3); ``where``
        (subscription, vault, vm, point, region of the restore) goes into their fixes so they run as printed.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return
        at = {**E.UNKNOWN_WHERE, **(where or {})}
        with self.core.db.session() as s:
            kv = self._system_vault(s, enc["subscription"] or subscription, enc["key_vault"],
                                    missing=E.KeyVaultMissingForRestore(key_vault=enc["key_vault"], **at))
            missing = []
            if enc["kek"] is not None and not [r for r in self._versions(s, KEY, kv, enc["kek"][0]) if enc["kek"][1] in (None, r.version)]:
                missing.append(f"key {enc['kek'][0]}")
            for name, version in enc["beks"]:
                if not [r for r in self._versions(s, SECRET, kv, name) if version in (None, r.version)]:
                    missing.append(f"secret {name}")
            if missing:
                raise E.KeysMissingForRestore(key_vault=kv.name, missing=", ".join(missing), **at)

    def check_restore_vm(self, vm_encryption: dict | None, subscription: str | None = None, where: dict | None = None) -> None:
        """Before *creating a VM* (not just its disks) from a recovery point of an encrypted VM.

        The backup service holds only the ``Haven Backup`` permissions (get, list, backup): it has no
        access to the keys it would need to attach the encrypted disks to a new VM (seed row 4), so the
        restore must be: restore disks, then create the VM from them. Raises
        ``BackupServiceNoAccessForRestore`` unless the backup principal was also given
        ``keys: unwrapKey`` and ``secrets: get`` on the key vault.
        """
        enc = parse_encryption(vm_encryption)
        if enc is None:
            return
        self.check_restore(vm_encryption, subscription, where)
        with self.core.db.session() as s:
            kv = self._system_vault(s, enc["subscription"] or subscription, enc["key_vault"])
            keys, secrets = self._perms(s, kv, self._backup_principal(s).id)
            if "unwrapKey" not in keys or "get" not in secrets:
                sub = s.get(Subscription, kv.subscription_id)
                raise E.BackupServiceNoAccessForRestore(**{**E.UNKNOWN_WHERE, **(where or {}), "subscription": sub.name})

    def restore_keys_from_backup(self, backup: dict | str, caller: Caller | None = None, subscription: str | None = None,
                                 key_vault: str | None = None, what: Iterable[str] = ("keys", "secrets")) -> dict:
        """Bring back a VM's KEK and BEK(s) (from ``backup_keys``) into their key vault, or into ``key_vault``.

        With a ``caller`` (the CLI's ``restore-key``/``restore-secret``), the caller needs Reader on the
        subscription and ``keys: restore`` / ``secrets: restore`` in the target key vault; without one the
        server does it itself. The target key vault must exist (``KeyVaultMissingForRestore`` otherwise).
        Idempotent: versions already present are kept; soft-deleted ones are recovered.
        """
        blob = backup.get("blob") if isinstance(backup, dict) else backup
        if caller is not None and subscription and key_vault:  # access first, then the blob
            with self.core.db.session() as s:
                self._sub(s, caller, subscription, Role.READER)
        try:
            _, doc = self.sealer.open_blob(blob or "", ("vmkeys",))
        except WrapError as exc:
            raise E.BackupBlobInvalid(reason=str(exc)) from None
        what = set(what)
        target = key_vault or doc["key_vault"]
        with self.core.db.session() as s:
            sub_ref = subscription or doc["subscription_id"]
            if caller is not None:
                try:
                    kv = self._data(s, caller, sub_ref, target, "key" if "keys" in what else "secret", "restore")
                except E.KeyVaultNotFound:
                    raise E.KeyVaultMissingForRestore(key_vault=target, **E.UNKNOWN_WHERE) from None
                if "secrets" in what and "keys" in what:
                    self._data(s, caller, sub_ref, target, "secret", "restore")
            else:
                kv = self._system_vault(s, sub_ref, target, missing=E.KeyVaultMissingForRestore(key_vault=target, **E.UNKNOWN_WHERE))
            out: dict[str, list] = {"key_vault": kv.name, "keys": [], "secrets": []}
            if "keys" in what:
                out["keys"] = [self._restore_doc(s, KEY, kv, d) for d in doc["keys"]]
            if "secrets" in what:
                out["secrets"] = [self._restore_doc(s, SECRET, kv, d) for d in doc["secrets"]]
            return out

    def restore_from_recovery_point(self, caller: Caller, subscription: str, vault: str, vm: str, point: str,
                                    what: Iterable[str], key_vault: str | None = None) -> dict:
        """``haven keyvault restore-key|restore-secret --recovery-point``: the point's key backup, restored."""
        with self.core.db.session() as s:  # access first
            self._sub(s, caller, subscription, Role.READER)
        if self.recovery_point_key_backup is None:
            raise E.BackupBlobInvalid(reason="this server's protection service does not expose recovery points' key backups yet")
        backup = self.recovery_point_key_backup(caller, subscription, vault, vm, point)
        if not backup:
            raise E.BackupBlobInvalid(reason=f"recovery point {point!r} of {vm!r} holds no key backup (the VM was not encrypted)")
        return self.restore_keys_from_backup(backup, caller=caller, subscription=subscription, key_vault=key_vault, what=what)

    def disk_keys_from_backup(self, backup: dict | None, caller: Caller, disk: str) -> list[bytes]:
        """The LUKS key(s) of ``disk`` a recovery point's key backup holds, unwrapped by the KEK backed up with them,
        so the server can read the disk's files. The caller needs what restoring those keys needs: Reader on the key
        vault's subscription and ``keys: restore`` and ``secrets: restore`` in the key vault (which must exist).
        The disk's own BEK first (``"disks": {disk: {"bek_secret": …}}``), else the VM's; ``[]`` without a backup."""
        if not backup:
            return []
        with self.core.db.session() as s:  # access first, then the blob
            try:
                self._data(s, caller, backup.get("subscription") or "", backup.get("key_vault") or "", "secret", "restore")
                self._data(s, caller, backup.get("subscription") or "", backup.get("key_vault") or "", "key", "restore")
            except E.KeyVaultNotFound:
                raise E.KeyVaultMissingForRestore(key_vault=backup.get("key_vault"), **E.UNKNOWN_WHERE) from None
        try:
            _, doc = self.sealer.open_blob(backup.get("blob") or "", ("vmkeys",))
        except WrapError as exc:
            raise E.BackupBlobInvalid(reason=str(exc)) from None
        settings = doc.get("settings") or {}
        per_disk = ((settings.get("disks") or {}).get(disk) or {}).get("bek_secret") if isinstance(settings.get("disks"), dict) else None
        ref = per_disk or settings.get("bek_secret")
        wanted = _ref(ref, "secret", doc["key_vault"])[1:] if ref else None
        keys = {k["name"]: k for k in doc["keys"]}
        out: list[bytes] = []
        for secret in doc["secrets"]:
            if wanted and secret["name"] != wanted[0]:
                continue
            versions = [v for v in secret["versions"] if not wanted or wanted[1] in (None, v["version"])]
            for v in reversed(versions):  # the newest first
                key = self._backed_up_key(keys, (v.get("tags") or {}).get("kek") or "")
                if key is None:
                    continue
                try:
                    wrapped = b64d(b64d(v["value"]).decode())
                    if key.get("protection") == "hsm":
                        if self.hsm is None:
                            raise E.HsmNotConfigured(what="used")
                        out.append(self.hsm.unwrap(key["hsm_ref"]["label"], wrapped))
                    else:
                        alg = (v.get("tags") or {}).get("alg") or (RSA_ALGS if key["kty"] == "RSA" else AES_ALGS)[0]
                        out.append(SoftwareKey(key["kty"], b64d(key["material"])).unwrap(wrapped, alg))
                except (WrapError, ValueError, KeyError):
                    continue  # this version does not unwrap with its KEK: the next one may
        return out

    @staticmethod
    def _backed_up_key(keys: dict, kek: str) -> dict | None:
        """The version of a backed-up KEK a BEK's ``kek`` tag (``kv/keys/name/version``) names."""
        parts = kek.split("/")
        if len(parts) < 3 or parts[2] not in keys:
            return None
        versions = keys[parts[2]]["versions"]
        named = [v for v in versions if len(parts) < 4 or v["version"] == parts[3]]
        return named[-1] if named else None

    def unwrap_bek(self, caller: Caller | None, subscription: str | None, vault: str, secret: str, version: str | None = None) -> bytes:
        """The disk key a BEK secret holds, unwrapped by the KEK its tags name (fails closed on a wrong KEK)."""
        with self.core.db.session() as s:
            if caller is not None:
                kv = self._data(s, caller, subscription, vault, "secret", "get")
                self._data(s, caller, subscription, vault, "key", "unwrapKey")
            else:
                kv = self._system_vault(s, subscription, vault)
            row = self._row(s, SECRET, kv, secret, version)
            value = SECRET.open(self, kv, row, row.value).decode()
            kek = (row.tags or {}).get("kek")
            if not kek:
                raise E.BekOnlyEncryption(vm=f" (secret {secret!r})")
            _, _, kname, kversion = (kek.split("/") + [None])[:4]
            key = self._row(s, KEY, kv, kname, kversion)
            try:
                return self._key_impl(kv, key, "unwrap", b64d(value), check_alg(key, (row.tags or {}).get("alg")))
            except WrapError:
                raise E.UnwrapFailed(kid=kid(kv, key)) from None
