"""How values travel in the key vault's requests: bytes as base64 (URL-safe or standard, padding optional)."""

from __future__ import annotations

import base64

from haven.keyvault.crypto import b64d
from haven.keyvault.errors import BackupBlobInvalid

__all__ = ["decode_bytes"]


def decode_bytes(text: str) -> bytes:
    try:
        return b64d(text) if ("-" in text or "_" in text) else base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise BackupBlobInvalid(reason="the value is not base64") from None
