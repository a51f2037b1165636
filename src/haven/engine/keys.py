"""Keys: the KEK protocol that wraps a vault's data key, and the keys derived from that data key.

A vault has one random 32-byte *data key*. It never leaves the process unwrapped; the vault's
``config`` object holds it wrapped by a key-encryption key (``KeyWrapper``). From the data key,
BLAKE3's key-derivation mode derives the AES-256-GCM key and the BLAKE3 chunk-id key.

What the KEK wraps is not the bare data key but a *bound* payload (``KeyBinding``): the data key
with the vault's storage id (``vault_uuid`` in ``config``) and the wrapping's version. Several
vaults share one KEK (the server's master key), so an unwrap must say which vault it is for:
a wrapped key copied into another vault's ``config`` fails with ``DataKeyBindingMismatch``. The
binding lives inside the KEK's ciphertext, so it works for every KEK kind (AES-GCM here, RSA-OAEP
and AES key wrap in a key vault or an HSM). Vaults made before this carry a bare wrapped key
(``config["key"]`` without ``format``); the server rewraps them on first open.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DataKeyBindingMismatch

__all__ = ["KeyWrapper", "LocalKeyWrapper", "DataKeys", "UnwrapFailed", "KeyBinding", "BOUND_KEY_FORMAT"]

_CTX_KEK = "haven 2024-01 local key-encryption key"
_CTX_KEK_ID = "haven 2024-01 local key-encryption key id"
_CTX_ENC = "haven 2024-01 vault object encryption key"
_CTX_ID = "haven 2024-01 vault chunk id key"
_CTX_MAC = "haven 2024-01 vault config mac key"
_WRAP_AAD = b"haven-data-key-v1"
_BOUND_MAGIC = b"HVDK2"
#: ``config["key"]["format"]`` of a bound wrapping (absent: the bare data key of the first format).
BOUND_KEY_FORMAT = 2


class UnwrapFailed(Exception):
    """A ``KeyWrapper`` could not unwrap: wrong key, or the wrapped bytes were altered."""


@runtime_checkable
class KeyWrapper(Protocol):
    """Wraps and unwraps a vault's data key. ``unwrap`` raises ``UnwrapFailed`` on a wrong key."""

    key_id: str

    def wrap(self, plaintext: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKeyWrapper:
    """A KEK derived from a server master key (any length >= 16 bytes); AES-256-GCM wrapping."""

    def __init__(self, master_key: bytes):
        if len(master_key) < 16:
            raise ValueError("master key must be at least 16 bytes")
        kek = blake3.blake3(master_key, derive_key_context=_CTX_KEK).digest()
        self._aead = AESGCM(kek)
        self.key_id = "local:" + blake3.blake3(master_key, derive_key_context=_CTX_KEK_ID).hexdigest()[:16]

    def wrap(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, _WRAP_AAD)

    def unwrap(self, wrapped: bytes) -> bytes:
        if len(wrapped) < 12 + 16:
            raise UnwrapFailed("wrapped key too short")
        try:
            return self._aead.decrypt(wrapped[:12], wrapped[12:], _WRAP_AAD)
        except InvalidTag as exc:
            raise UnwrapFailed("authentication failed") from exc


@dataclass(frozen=True)
class DataKeys:
    """The keys of one vault, derived from its data key."""

    enc_key: bytes
    id_key: bytes
    mac_key: bytes

    @classmethod
    def derive(cls, data_key: bytes) -> "DataKeys":
        if len(data_key) != 32:
            raise ValueError("data key must be 32 bytes")
        return cls(
            enc_key=blake3.blake3(data_key, derive_key_context=_CTX_ENC).digest(),
            id_key=blake3.blake3(data_key, derive_key_context=_CTX_ID).digest(),
            mac_key=blake3.blake3(data_key, derive_key_context=_CTX_MAC).digest(),
        )

    def mac(self, data: bytes) -> str:
        """A keyed BLAKE3 MAC (hex) authenticating plaintext vault documents such as ``config``."""
        return blake3.blake3(data, key=self.mac_key).hexdigest()

    @staticmethod
    def new_data_key() -> bytes:
        return os.urandom(32)


@dataclass(frozen=True)
class KeyBinding:
    """What a wrapped data key is bound to: the vault (its storage-level ``vault_uuid``) and the
    version of the wrapping (1 at creation, +1 at every rewrap)."""

    vault_uuid: str
    version: int

    def bind(self, data_key: bytes) -> bytes:
        """The payload a KEK wraps: magic, version, vault id, data key."""
        ident = self.vault_uuid.encode()
        if len(data_key) != 32 or not 0 < len(ident) < 256:
            raise ValueError("a data key is 32 bytes and a vault id 1-255 bytes")
        return _BOUND_MAGIC + struct.pack(">IB", self.version, len(ident)) + ident + data_key

    def unbind(self, payload: bytes) -> bytes:
        """The data key inside ``payload``; ``DataKeyBindingMismatch`` unless it is bound to this vault and version."""
        head = len(_BOUND_MAGIC) + 5
        if len(payload) < head or payload[: len(_BOUND_MAGIC)] != _BOUND_MAGIC:
            raise DataKeyBindingMismatch(found="no vault (an unbound key)", expected=self.vault_uuid, version=self.version)
        version, n = struct.unpack(">IB", payload[len(_BOUND_MAGIC) : head])
        ident, key = payload[head : head + n], payload[head + n :]
        if ident != self.vault_uuid.encode() or version != self.version or len(key) != 32:
            found = f"vault {ident.decode(errors='replace')} version {version}"
            raise DataKeyBindingMismatch(found=found, expected=self.vault_uuid, version=self.version)
        return key
