"""The vault as the instant-restore NBD server sees it: opened from a key document, not from a KEK.

The server writes the document (``key_document``) for one nbdkit process: the vault's storage URL
and backend options, the vault's derived keys (never its wrapped or unwrapped data key), the point
and its disks. ``open_point_disks`` reopens the repository from it in nbdkit, checks the vault's
config against the keys (its MAC), and gives one ``DiskImage`` per disk over a shared chunk cache.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from haven.engine.errors import ObjectCorrupt
from haven.engine.format import CONFIG
from haven.engine.keys import DataKeys
from haven.engine.reader import ChunkCache, DiskImage
from haven.engine.repository import Repository, _canonical, parse_config

__all__ = ["key_document", "open_point_disks", "CACHE_BYTES"]

CACHE_BYTES = 256 << 20


def key_document(repo: Repository, storage_url: str, options: dict[str, Any], home: Path | None, item_id: str,
                 point_id: str, disks: list[str]) -> dict[str, Any]:
    keys = repo.keys
    return {"storage_url": storage_url, "options": options, "home": str(home) if home else None,
            "keys": {"enc": keys.enc_key.hex(), "id": keys.id_key.hex(), "mac": keys.mac_key.hex()},
            "vault_uuid": repo.config["vault_uuid"], "item_id": item_id, "point_id": point_id, "disks": list(disks)}


def open_point_disks(doc: dict[str, Any]) -> dict[str, DiskImage]:
    from haven.transport import open_agent_backend

    backend = open_agent_backend(doc["storage_url"], dict(doc.get("options") or {}),
                                 home=Path(doc["home"]) if doc.get("home") else None)
    config = parse_config(backend.load(CONFIG))
    k = doc["keys"]
    keys = DataKeys(enc_key=bytes.fromhex(k["enc"]), id_key=bytes.fromhex(k["id"]), mac_key=bytes.fromhex(k["mac"]))
    params = {key: v for key, v in config.items() if key not in ("mac", "key")}
    if config.get("vault_uuid") != doc.get("vault_uuid") or not hmac.compare_digest(
            keys.mac(_canonical(params)), str(config.get("mac", ""))):
        raise ObjectCorrupt(name=CONFIG)  # not the vault these keys belong to
    repo = Repository(backend, keys, config)
    cache = ChunkCache(max_bytes=CACHE_BYTES)
    return {name: DiskImage(repo, doc["item_id"], doc["point_id"], name, cache=cache) for name in doc["disks"]}
