"""What only keys do: be created (in software, sealed by the master key, or in the HSM), wrap and unwrap.
A key's material never leaves the key vault; :class:`KeyVaultKeyWrapper` lends a key to the engine."""

from __future__ import annotations

from haven.keyvault import errors as E
from haven.keyvault.crypto import AES_ALGS, MAX_WRAP, RSA_ALGS, SoftwareKey, WrapError, b64d, b64e
from haven.keyvault.tables import KeyVault, KvKey
from haven.services.auth import Caller
from haven.services.keyvault.kinds import KEY, kid
from haven.services.keyvault.objects import VersionedObjects, check_name

__all__ = ["KeyOperations", "KeyVaultKeyWrapper", "check_alg"]

_SIZES = {"RSA": (3072, 4096), "AES": (256,)}


def check_alg(row: KvKey, alg: str | None) -> str:
    allowed = RSA_ALGS if row.kty == "RSA" else AES_ALGS
    alg = alg or allowed[0]
    if alg not in allowed:
        raise E.AlgorithmInvalid(alg=alg, kty=row.kty, name=row.name, allowed=", ".join(allowed))
    return alg


class KeyOperations(VersionedObjects):
    def create_key(self, caller: Caller, subscription: str, vault: str, name: str, kty: str = "RSA", size: int | None = None,
                   hsm: bool = False, tags: dict | None = None) -> dict:
        check_name(KEY, name)
        kty = str(kty).upper().replace("OCT", "AES").removesuffix("-HSM")
        if kty not in _SIZES:
            raise E.KeyTypeInvalid(what="type", value=kty)
        size = int(size or _SIZES[kty][0])
        if size not in _SIZES[kty] or (hsm and kty != "AES"):
            raise E.KeyTypeInvalid(what="size" if size not in _SIZES[kty] else "type for an HSM", value=f"{kty}-{size}")
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", "create")
            row = self._new_row(s, KEY, kv, name, tags, kty=kty, size=size, protection="hsm" if hsm else "software", enabled=True)
            if hsm:
                if self.hsm is None:
                    raise E.HsmNotConfigured(what="created")
                row.hsm_ref = self.hsm.generate(f"haven-kv-{row.id}")
            else:
                material, row.public = SoftwareKey.generate(kty, size)
                row.material = KEY.seal(self, kv, name, row.version, material)
            s.add(row)
            s.flush()
            return KEY.view(kv, row)

    def wrap(self, caller: Caller | None, subscription: str, vault: str, name: str, value: bytes, alg: str | None = None,
             version: str | None = None) -> dict:
        if not 1 <= len(value) <= MAX_WRAP:
            raise E.WrapInputInvalid(limit=MAX_WRAP, size=len(value))
        return self._use_key("wrap", caller, subscription, vault, name, value, alg, version)

    def unwrap(self, caller: Caller | None, subscription: str, vault: str, name: str, value: bytes, alg: str | None = None,
               version: str | None = None) -> dict:
        return self._use_key("unwrap", caller, subscription, vault, name, value, alg, version)

    def _use_key(self, op: str, caller: Caller | None, subscription: str, vault: str, name: str, value: bytes, alg: str | None,
                 version: str | None) -> dict:
        """Wrap or unwrap ``value`` with the key (its newest version, or the one named); no caller: the server itself."""
        with self.core.db.session() as s:
            kv = self._data(s, caller, subscription, vault, "key", op + "Key") if caller else self._system_vault(s, subscription, vault)
            row = self._row(s, KEY, kv, name, version)
            alg = check_alg(row, alg)
            try:
                out = self._key_impl(kv, row, op, value, alg)
            except WrapError as exc:
                if op == "wrap":
                    raise E.WrapInputInvalid(limit=MAX_WRAP, size=len(value)) from exc
                raise E.UnwrapFailed(kid=kid(kv, row)) from None
            return {"kid": kid(kv, row), "alg": alg, "value": b64e(out)}

    def _key_impl(self, kv: KeyVault, row: KvKey, op: str, data: bytes, alg: str) -> bytes:
        if not row.enabled:
            raise E.KeyDisabled(name=row.name, vault=kv.name)
        if row.protection == "hsm":
            if self.hsm is None:
                raise E.HsmNotConfigured(what="used")
            return getattr(self.hsm, op)(row.hsm_ref["label"], data)
        material = KEY.open(self, kv, row, row.material)
        return getattr(SoftwareKey(row.kty, material), op)(data, alg)

    def key_wrapper(self, subscription: str, vault: str, key: str) -> "KeyVaultKeyWrapper":
        """A ``haven.engine.keys.KeyWrapper`` backed by a key vault KEK (for vaults' data keys)."""
        return KeyVaultKeyWrapper(self, subscription, vault, key)


class KeyVaultKeyWrapper:
    """Wraps with the key's newest version; unwraps with the version named in the wrapped bytes,
    so a rotated KEK (a new version) still opens what older versions wrapped."""

    def __init__(self, service: KeyOperations, subscription: str, vault: str, key: str):
        self.service, self.subscription, self.vault, self.key = service, subscription, vault, key
        self.key_id = f"keyvault:{vault}/keys/{key}"

    def wrap(self, plaintext: bytes) -> bytes:
        out = self.service.wrap(None, self.subscription, self.vault, self.key, plaintext)
        version = out["kid"].rsplit("/", 1)[1]
        return b"HKW1" + version.encode() + b64d(out["value"])

    def unwrap(self, wrapped: bytes) -> bytes:
        from haven.engine.keys import UnwrapFailed as EngineUnwrapFailed

        if wrapped[:4] != b"HKW1" or len(wrapped) < 36:
            raise EngineUnwrapFailed("not wrapped by a key vault key")
        try:
            out = self.service.unwrap(None, self.subscription, self.vault, self.key, wrapped[36:], version=wrapped[4:36].decode())
        except (E.UnwrapFailed, E.KeyNotFound) as exc:
            raise EngineUnwrapFailed(str(exc)) from exc
        return b64d(out["value"])
