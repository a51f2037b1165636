"""The key vault's cryptography.

* **Sealing** (`Sealer`): every key's material and every secret's value is encrypted at rest with
  AES-256-GCM under a key derived (BLAKE3 KDF) from the server's master key, with the row's
  identity as associated data: a sealed value moved to another row does not open.
* **Wrapping** (`SoftwareKey`): an AES-256 KEK wraps with AES key wrap (RFC 3394, ``A256KW``) over a
  length-framed, 8-byte-aligned input (so any length works, the same framing the HSM uses); an
  RSA KEK (3072 or 4096 bits) wraps with RSA-OAEP-256 (or RSA-OAEP with SHA-1). A wrong key or an
  altered value raises ``WrapError``: nothing is returned.
* **Backup blobs**: a single key's or secret's backup (and a VM's key backup) is sealed by a backup
  key derived from the master key, so only a Haven server with the same master key restores it.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

__all__ = ["Sealer", "SoftwareKey", "WrapError", "frame", "unframe", "b64e", "b64d", "RSA_ALGS", "AES_ALGS", "MAX_WRAP"]

_CTX_SEAL = "haven 2026-11 key vault sealing key"
_CTX_BACKUP = "haven 2026-11 key vault backup key"
_BLOB_MAGIC = b"HKVB1"
RSA_ALGS = ("RSA-OAEP-256", "RSA-OAEP")
AES_ALGS = ("A256KW",)
MAX_WRAP = 446  # the most RSA-3072 OAEP-SHA1 can take; AES takes more, but keys are small


class WrapError(Exception):
    """Unwrap failed (wrong key or altered bytes) or the input cannot be wrapped."""


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64d(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def frame(data: bytes) -> bytes:
    """4-byte length, the data, zero padding to a multiple of 8 (at least 16 bytes): AES-KW input."""
    out = struct.pack(">I", len(data)) + data
    out += b"\0" * (-len(out) % 8)
    return out if len(out) >= 16 else out + b"\0" * (16 - len(out))


def unframe(data: bytes) -> bytes:
    if len(data) < 16 or len(data) % 8:
        raise WrapError("bad frame")
    (n,) = struct.unpack(">I", data[:4])
    if n > len(data) - 4 or any(data[4 + n:]):
        raise WrapError("bad frame")
    return data[4:4 + n]


class Sealer:
    """Seals and opens bytes with keys derived from the server's master key."""

    def __init__(self, master_key: bytes):
        if len(master_key) < 16:
            raise ValueError("master key too short")
        self._seal = AESGCM(blake3.blake3(master_key, derive_key_context=_CTX_SEAL).digest())
        self._backup = AESGCM(blake3.blake3(master_key, derive_key_context=_CTX_BACKUP).digest())

    @staticmethod
    def _aad(*parts: str) -> bytes:
        return "\x1f".join(parts).encode()

    def seal(self, data: bytes, *binding: str) -> bytes:
        nonce = os.urandom(12)
        return b"\x01" + nonce + self._seal.encrypt(nonce, data, self._aad(*binding))

    def open(self, sealed: bytes, *binding: str) -> bytes:
        if len(sealed) < 29 or sealed[:1] != b"\x01":
            raise WrapError("sealed value malformed")
        try:
            return self._seal.decrypt(sealed[1:13], sealed[13:], self._aad(*binding))
        except InvalidTag as exc:
            raise WrapError("sealed value does not open with this server's master key") from exc

    def seal_blob(self, kind: str, doc: dict[str, Any]) -> str:
        nonce = os.urandom(12)
        body = self._backup.encrypt(nonce, json.dumps(doc, separators=(",", ":")).encode(), _BLOB_MAGIC + kind.encode())
        return _BLOB_MAGIC.decode() + "." + kind + "." + b64e(nonce + body)

    def open_blob(self, blob: str, kinds: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        try:
            magic, kind, body = blob.strip().split(".", 2)
            raw = b64d(body)
        except (ValueError, AttributeError):
            raise WrapError("not a Haven key vault backup") from None
        if magic != _BLOB_MAGIC.decode():
            raise WrapError("not a Haven key vault backup")
        if kind not in kinds:
            raise WrapError(f"it is a {kind} backup, not one of {', '.join(kinds)}")
        try:
            data = self._backup.decrypt(raw[:12], raw[12:], _BLOB_MAGIC + kind.encode())
        except (InvalidTag, ValueError):
            raise WrapError("it was made by another Haven server (another master key) or altered") from None
        return kind, json.loads(data)


class SoftwareKey:
    """A KEK whose material the server holds (sealed at rest, in memory only while used)."""

    def __init__(self, kty: str, material: bytes):
        self.kty = kty
        if kty == "AES":
            if len(material) != 32:
                raise ValueError("AES KEK must be 32 bytes")
            self._aes = material
        else:
            self._rsa = serialization.load_der_private_key(material, password=None)

    @staticmethod
    def generate(kty: str, size: int) -> tuple[bytes, str | None]:
        """New material (DER private key or raw AES key) and, for RSA, the public key PEM."""
        if kty == "AES":
            return os.urandom(size // 8), None
        key = rsa.generate_private_key(public_exponent=65537, key_size=size)
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        return der, pem

    @staticmethod
    def _oaep(alg: str):
        h = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
        return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)

    def wrap(self, data: bytes, alg: str) -> bytes:
        if self.kty == "AES":
            return aes_key_wrap(self._aes, frame(data))
        try:
            return self._rsa.public_key().encrypt(data, self._oaep(alg))
        except ValueError as exc:
            raise WrapError(str(exc)) from None

    def unwrap(self, data: bytes, alg: str) -> bytes:
        try:
            if self.kty == "AES":
                return unframe(aes_key_unwrap(self._aes, data))
            return self._rsa.decrypt(data, self._oaep(alg))
        except (InvalidUnwrap, ValueError) as exc:
            raise WrapError("unwrap failed") from exc
