"""Chunk ids and the sealed-object codec: zstd, then AES-256-GCM with the object's identity as AAD.

Sealed object layout (see docs/storage-format.md)::

    byte 0     format version (1)
    byte 1     compression (0 = none, 1 = zstd)
    bytes 2-13 random 96-bit nonce
    rest       AES-256-GCM ciphertext || 16-byte tag

AAD = bytes 0-1 || domain || identity. ``domain`` separates chunks, manifests and vault
metadata; ``identity`` is the chunk id (raw 32 bytes) or the object's name. A swapped, altered,
truncated or re-labelled object fails to open.

Compressors are thread-local: a zstd compressor must never be shared between threads.
"""

from __future__ import annotations

import functools
import os
import threading

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keys import DataKeys

__all__ = ["Codec", "SealError", "ZERO_ID", "DOMAIN_CHUNK", "DOMAIN_MANIFEST", "DOMAIN_META", "is_zero"]

VERSION = 1
COMP_NONE = 0
COMP_ZSTD = 1
HEADER = 2
NONCE = 12
TAG = 16
ID_LEN = 32
#: Stands for an all-zero chunk in chunk tables; such chunks are never stored.
ZERO_ID = bytes(ID_LEN)
DOMAIN_CHUNK = b"haven-chunk\x00"
DOMAIN_MANIFEST = b"haven-manifest\x00"
DOMAIN_META = b"haven-meta\x00"
ZSTD_LEVEL = 3

@functools.lru_cache(maxsize=16)
def _zeros(n: int) -> bytes:
    return bytes(n)


def is_zero(data: bytes | bytearray) -> bool:
    """True if every byte is zero (a memcmp against a cached zero buffer of the same length)."""
    return data == _zeros(len(data))


class SealError(Exception):
    """The object could not be opened: wrong key, altered, truncated or swapped."""


class Codec:
    """Seals and opens vault objects and computes keyed chunk ids. Thread-safe."""

    def __init__(self, keys: DataKeys, level: int = ZSTD_LEVEL):
        self._keys = keys
        self._aead = AESGCM(keys.enc_key)
        self._level = level
        self._local = threading.local()

    # -- ids --
    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """The chunk's id: BLAKE3 keyed with the vault's id key (32 bytes)."""
        return blake3.blake3(data, key=self._keys.id_key).digest()

    # -- compression (thread-local contexts) --
    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    # -- sealing --
    def seal(self, domain: bytes, identity: bytes, plaintext: bytes | memoryview, compress: bool = True) -> bytes:
        comp, body = COMP_NONE, plaintext
        if compress and len(plaintext) > 64:
            packed = self._cctx().compress(plaintext)
            if len(packed) < len(plaintext):
                comp, body = COMP_ZSTD, packed
        header = bytes((VERSION, comp))
        nonce = os.urandom(NONCE)
        return header + nonce + self._aead.encrypt(nonce, bytes(body), header + domain + identity)

    def open(self, domain: bytes, identity: bytes, sealed: bytes, max_size: int = 1 << 31) -> bytes:
        if len(sealed) < HEADER + NONCE + TAG or sealed[0] != VERSION or sealed[1] not in (COMP_NONE, COMP_ZSTD):
            raise SealError("bad header or truncated object")
        header = sealed[:HEADER]
        try:
            body = self._aead.decrypt(sealed[HEADER : HEADER + NONCE], sealed[HEADER + NONCE :], header + domain + identity)
        except InvalidTag as exc:
            raise SealError("authentication failed") from exc
        if sealed[1] == COMP_NONE:
            return body
        # python-zstandard honours max_output_size only for frames that do not declare their size,
        # so a frame declaring a huge size is refused here, before any memory is taken.
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise SealError(f"decompression failed: {exc}") from exc
        if declared > max_size:
            raise SealError(f"object declares {declared} bytes, more than the {max_size} allowed")
        try:
            return self._dctx().decompress(body, max_output_size=max_size)
        except zstandard.ZstdError as exc:  # authenticated yet undecodable: a writer bug
            raise SealError(f"decompression failed: {exc}") from exc

    # -- chunks --
    def seal_chunk(self, chunk_id: bytes, data: bytes | memoryview) -> bytes:
        return self.seal(DOMAIN_CHUNK, chunk_id, data)

    def open_chunk(self, chunk_id: bytes, sealed: bytes, max_size: int = 1 << 28) -> bytes:
        return self.open(DOMAIN_CHUNK, chunk_id, sealed, max_size)
