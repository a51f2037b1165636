"""LUKS1/2 volumes opened in pure Python through ``dissect.fve`` with the disk keys (BEKs) Haven keeps
for an encrypted VM's recovery point: no dm-crypt, no root.

``Keys`` is what the caller gives: a function answering the candidate keys of the disk (it checks
the caller's access to them; an empty list means the point holds none). A key opens the volume as a
passphrase or key file does (a BEK is the key file the disk was formatted with). The volume key it
unlocks is kept for the volume's later openers, so the key derivation (argon2 or PBKDF2) runs once.

The data of ``aes-xts-plain64`` volumes (cryptsetup's default) is decrypted a sector at a time by
``cryptography``'s AES-XTS: dissect.fve's own XTS runs block by block in Python (about 0.5 MB/s);
other ciphers go through dissect.fve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from haven.errors import HavenError

from .errors import FileSystemCorrupt, VolumeKeyInvalid, VolumeLocked

__all__ = ["Keys", "unlock", "decrypted"]

Keys = Callable[[], list[bytes]]


def unlock(opener: Callable[[], BinaryIO], candidates: list[bytes], disk: str, volume: str) -> Callable[[], BinaryIO]:
    """An opener of the decrypted volume; ``VolumeLocked`` without a key, ``VolumeKeyInvalid`` if none opens it."""
    from dissect.fve.luks import LUKS

    def header() -> LUKS:
        try:
            return LUKS(opener())
        except HavenError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged or hostile LUKS header
            raise FileSystemCorrupt(fs="LUKS", volume=volume, disk=disk, reason=(str(exc) or type(exc).__name__)[:300]) from None

    if not candidates:
        raise VolumeLocked(volume=volume, disk=disk)
    luks = header()
    for key in candidates:
        try:
            luks.unlock_with_passphrase(key)
            break
        except HavenError:
            raise
        except Exception:  # noqa: BLE001 - this key opens no keyslot (or the keyslot is damaged): try the next
            continue
    else:
        raise VolumeKeyInvalid(volume=volume, disk=disk, tried=len(candidates))
    volume_key, slot = luks._active_volume_key, luks._active_keyslot_id

    def open_plain() -> BinaryIO:
        fresh = header()
        try:
            fresh.unlock(volume_key, slot)
            return decrypted(fresh)
        except HavenError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise FileSystemCorrupt(fs="LUKS", volume=volume, disk=disk, reason=(str(exc) or type(exc).__name__)[:300]) from None

    open_plain()  # the data segment must be usable before the volume is shown
    return open_plain


def decrypted(luks) -> BinaryIO:
    """The decrypted data segment of an unlocked ``dissect.fve`` LUKS volume."""
    from dissect.fve.crypto.dmcrypt import CryptStream

    segment = luks.find_segment(luks._active_keyslot_id)
    key = luks._active_volume_key
    if segment.encryption != "aes-xts-plain64" or len(key) not in (32, 64):
        return luks.open()

    class XtsStream(CryptStream):
        def _read(self, offset: int, length: int) -> bytes:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

            self.fh.seek(self.offset + offset)
            data = self.fh.read(length)
            step, aes = self.sector_size, algorithms.AES(key)
            out = bytearray(len(data))
            for at in range(0, len(data) - len(data) % step, step):
                tweak = ((offset + at) // 512 + self.iv_tweak).to_bytes(16, "little")  # plain64: 512-byte sectors, as dm-crypt counts
                out[at:at + step] = Cipher(aes, modes.XTS(tweak)).decryptor().update(data[at:at + step])
            return bytes(out)

    return XtsStream(luks.fh, segment.encryption, key, luks.metadata.keyslots[luks._active_keyslot_id].key_size * 8,
                     segment.offset, segment.size, segment.iv_tweak, segment.sector_size)
