"""KEKs in a PKCS#11 token (an HSM; SoftHSM in tests).

An HSM key is an AES-256 secret key generated *in* the token: ``CKA_TOKEN``, ``CKA_SENSITIVE``,
not ``CKA_EXTRACTABLE``, usable only to wrap and unwrap. Haven stores just a reference to it
(token label and object label). To wrap bytes, they become a short-lived session object and the
token wraps it with ``CKM_AES_KEY_WRAP`` (RFC 3394) over the same length framing as software
keys; unwrapping makes a short-lived session object from which the value is read, then destroyed.
The token is found by its label (slot ids change between runs).

Configuration (environment of the server): ``HAVEN_PKCS11_MODULE`` (the PKCS#11 library),
``HAVEN_PKCS11_TOKEN_LABEL``, ``HAVEN_PKCS11_PIN`` or ``HAVEN_PKCS11_PIN_FILE``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from haven.keyvault.crypto import WrapError, frame, unframe
from haven.keyvault.errors import HsmError

__all__ = ["Pkcs11Backend", "from_environment"]


class Pkcs11Backend:
    def __init__(self, module: str, token_label: str, pin: str):
        import pkcs11

        self.module, self.token_label, self._pin = module, token_label, pin
        self._lib = pkcs11.lib(module)
        self._lock = threading.Lock()

    def _session(self):
        import pkcs11

        try:
            token = self._lib.get_token(token_label=self.token_label)
            return token.open(rw=True, user_pin=self._pin)
        except pkcs11.PKCS11Error as exc:
            raise HsmError(token=self.token_label, reason=type(exc).__name__) from None

    def _key(self, session, label: str):
        import pkcs11
        from pkcs11 import ObjectClass

        try:
            return session.get_key(label=label, object_class=ObjectClass.SECRET_KEY)
        except pkcs11.NoSuchKey:
            raise HsmError(token=self.token_label, reason=f"key {label!r} is not in the token") from None

    def generate(self, label: str) -> dict:
        from pkcs11 import Attribute, KeyType

        with self._lock, self._session() as s:
            s.generate_key(KeyType.AES, 256, label=label, store=True, template={
                Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.WRAP: True, Attribute.UNWRAP: True,
                Attribute.ENCRYPT: False, Attribute.DECRYPT: False, Attribute.PRIVATE: True})
        return {"token": self.token_label, "label": label}

    def wrap(self, label: str, data: bytes) -> bytes:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        with self._lock, self._session() as s:
            kek = self._key(s, label)
            tmp = s.create_object({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                                   Attribute.VALUE: frame(data), Attribute.TOKEN: False, Attribute.EXTRACTABLE: True,
                                   Attribute.SENSITIVE: False})
            try:
                return kek.wrap_key(tmp, mechanism=Mechanism.AES_KEY_WRAP)
            finally:
                tmp.destroy()

    def unwrap(self, label: str, wrapped: bytes) -> bytes:
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        with self._lock, self._session() as s:
            kek = self._key(s, label)
            try:
                obj = kek.unwrap_key(ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped, mechanism=Mechanism.AES_KEY_WRAP,
                                     store=False, template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
            except pkcs11.PKCS11Error as exc:
                raise WrapError("unwrap failed in the token") from exc
            try:
                return unframe(bytes(obj[Attribute.VALUE]))
            finally:
                obj.destroy()

    def exists(self, label: str) -> bool:
        import pkcs11
        from pkcs11 import ObjectClass

        with self._lock, self._session() as s:
            try:
                s.get_key(label=label, object_class=ObjectClass.SECRET_KEY)
                return True
            except pkcs11.NoSuchKey:
                return False

    def destroy(self, label: str) -> None:
        import pkcs11
        from pkcs11 import ObjectClass

        with self._lock, self._session() as s:
            try:
                s.get_key(label=label, object_class=ObjectClass.SECRET_KEY).destroy()
            except pkcs11.NoSuchKey:
                pass


def from_environment() -> Pkcs11Backend | None:
    module = os.environ.get("HAVEN_PKCS11_MODULE")
    label = os.environ.get("HAVEN_PKCS11_TOKEN_LABEL")
    pin = os.environ.get("HAVEN_PKCS11_PIN")
    if not pin and os.environ.get("HAVEN_PKCS11_PIN_FILE"):
        pin = Path(os.environ["HAVEN_PKCS11_PIN_FILE"]).read_text().strip()
    if not (module and label and pin):
        return None
    return Pkcs11Backend(module, label, pin)
