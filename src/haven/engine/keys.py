"""Keys: the KEK protocol that wraps a vault's data key, and the keys derived from that data key.

A vault has one random 32-byte *data key*. It never leaves the process unwrapped; the vault's
``config`` object holds it wrapped by a key-encryption key (``KeyWrapper``). From the data key,
BLAKE3's key-derivation mode derives the AES-256-GCM key and the BLAKE3 chunk-id key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KeyWrapper", "LocalKeyWrapper", "DataKeys", "UnwrapFailed"]

_CTX_KEK = "haven 2024-01 local key-encryption key"
_CTX_KEK_ID = "haven 2024-01 local key-encryption key id"
_CTX_ENC = "haven 2024-01 vault object encryption key"
_CTX_ID = "haven 2024-01 vault chunk id key"
_CTX_MAC = "haven 2024-01 vault config mac key"
_WRAP_AAD = b"haven-data-key-v1"


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
