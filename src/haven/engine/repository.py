"""A vault on a backend: open/init, recovery points, and the entry points of backup, restore, verify, GC."""

from __future__ import annotations

import base64
import hmac
import json
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from haven.clock import Clock, SystemClock
from haven.errors import HavenError
from haven.progress import NULL_PROGRESS, Progress

from .backend import Backend
from .codec import DOMAIN_MANIFEST, DOMAIN_META, Codec, SealError
from .errors import (
    ChunkCorrupt,
    ObjectCorrupt,
    RecoveryPointNotFound,
    RepositoryAlreadyInitialised,
    RepositoryFormatUnsupported,
    RepositoryKeyMismatch,
    RepositoryNotInitialised,
    StorageObjectNotFound,
)
from .format import (
    CHUNKS,
    CONFIG,
    DEFAULT_CHUNK_SIZE,
    FORMAT_NAME,
    FORMAT_VERSION,
    POINTS,
    VAULT_INFO,
    PointInfo,
    PointManifest,
    check_id,
    chunk_id_from_name,
    chunk_name,
    point_name,
    points_prefix,
)
from .keys import BOUND_KEY_FORMAT, DataKeys, KeyBinding, KeyWrapper, UnwrapFailed

__all__ = ["Repository", "unwrap_config_key", "parse_config"]

T = TypeVar("T")
#: How many times an object that fails authentication is re-read before it is declared corrupt
#: (a flipped bit on the wire passes on a re-read; a flipped bit at rest does not).
READ_ATTEMPTS = 3


class Repository:
    """One vault. Thread-safe for reads; one writer operation (backup, GC) per call."""

    def __init__(self, backend: Backend, keys: DataKeys, config: dict[str, Any], clock: Clock | None = None):
        self.backend = backend
        self.keys = keys
        self.codec = Codec(keys)
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.chunk_size: int = int(config["chunk_size"])
        self.workers: int = 0  # 0 = one per CPU
        self._vault_info: dict[str, Any] | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def init(
        cls,
        backend: Backend,
        kek: KeyWrapper,
        vault_info: dict[str, Any],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        clock: Clock | None = None,
    ) -> "Repository":
        """Create a vault on an empty backend; ``RepositoryAlreadyInitialised`` if it holds one."""
        if chunk_size < 4096 or chunk_size & (chunk_size - 1):
            raise ValueError("chunk size must be a power of two >= 4096")
        backend.prepare()
        if backend.exists(CONFIG):
            raise RepositoryAlreadyInitialised(location=backend.location)
        data_key = DataKeys.new_data_key()
        keys = DataKeys.derive(data_key)
        clock = clock or SystemClock()
        params = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "vault_uuid": str(uuid.uuid4()),
            "created": clock.now().isoformat(),
            "chunk_size": chunk_size,
            "chunk_id": "blake3-keyed-256",
            "compression": "zstd",
            "cipher": "aes-256-gcm",
        }
        config = {**params, "mac": keys.mac(_canonical(params)), "key": _wrap(kek, data_key, KeyBinding(params["vault_uuid"], 1))}
        repo = cls(backend, keys, config, clock)
        repo.store_sealed(VAULT_INFO, DOMAIN_META, VAULT_INFO.encode(), json.dumps(vault_info).encode())
        backend.store(CONFIG, json.dumps(config, indent=1).encode())
        repo._vault_info = dict(vault_info)
        return repo

    @classmethod
    def open(cls, backend: Backend, kek: KeyWrapper, clock: Clock | None = None) -> "Repository":
        """Open an existing vault. A wrong KEK raises ``RepositoryKeyMismatch``; nothing is readable without it."""
        try:
            raw = backend.load(CONFIG)
        except StorageObjectNotFound:
            raise RepositoryNotInitialised(location=backend.location) from None
        config = parse_config(raw)
        keys = DataKeys.derive(unwrap_config_key(kek, config))
        return cls(backend, keys, config, clock)

    @property
    def key_is_bound(self) -> bool:
        """False for a vault of the first format, whose wrapped data key names no vault (``migrate_key`` fixes it)."""
        return self.config["key"].get("format") == BOUND_KEY_FORMAT

    def migrate_key(self, kek: KeyWrapper) -> bool:
        """Rewrap a first-format (unbound) data key as a bound one under the same KEK; True if it did."""
        if self.key_is_bound:
            return False
        self.rewrap(kek, kek)
        return True

    def rewrap(self, new_kek: KeyWrapper, old_kek: KeyWrapper) -> None:
        """Re-seal the data key under ``new_kek`` (key rotation); data and ids are unchanged."""
        data_key = unwrap_config_key(old_kek, self.config)
        if DataKeys.derive(data_key) != self.keys:
            raise RepositoryKeyMismatch(key_id=old_kek.key_id, expected=self.config["key"].get("kek_id"))
        version = int(self.config["key"].get("version", 0)) + 1 if self.key_is_bound else 1
        self.config = {**self.config, "key": _wrap(new_kek, data_key, KeyBinding(self.config["vault_uuid"], version))}
        self.backend.store(CONFIG, json.dumps(self.config, indent=1).encode())

    @property
    def kek_id(self) -> str:
        return self.config["key"].get("kek_id", "?")

    @property
    def vault_info(self) -> dict[str, Any]:
        """The dict given to ``init`` (sealed in the vault: a new server learns it from storage)."""
        if self._vault_info is None:
            raw = self.load_sealed(VAULT_INFO, DOMAIN_META, VAULT_INFO.encode())
            self._vault_info = json.loads(raw)
        return dict(self._vault_info)

    def set_vault_info(self, vault_info: dict[str, Any]) -> None:
        self.store_sealed(VAULT_INFO, DOMAIN_META, VAULT_INFO.encode(), json.dumps(vault_info).encode())
        self._vault_info = dict(vault_info)

    # ---------------------------------------------------------------- sealed objects

    def store_sealed(self, name: str, domain: bytes, identity: bytes, plaintext: bytes) -> None:
        self.backend.store(name, self.codec.seal(domain, identity, plaintext))

    def load_sealed(self, name: str, domain: bytes, identity: bytes) -> bytes:
        return self._read_authenticated(name, lambda raw: self.codec.open(domain, identity, raw), lambda: ObjectCorrupt(name=name))

    def load_chunk(self, chunk_id: bytes) -> bytes:
        """The plaintext of a stored chunk; ``ChunkCorrupt`` if it fails authentication every time."""
        return self._read_authenticated(
            chunk_name(chunk_id), lambda raw: self.codec.open_chunk(chunk_id, raw), lambda: ChunkCorrupt(chunk_id=chunk_id.hex())
        )

    def _read_authenticated(self, name: str, opener: Callable[[bytes], T], error: Callable[[], HavenError]) -> T:
        for _ in range(READ_ATTEMPTS):
            raw = self.backend.load(name)
            try:
                return opener(raw)
            except SealError:
                continue
        raise error()

    # ---------------------------------------------------------------- points

    def list_items(self) -> list[str]:
        """Every protected item that has at least one recovery point."""
        return sorted({obj.name[len(POINTS) :].split("/", 1)[0] for obj in self.backend.list(POINTS) if obj.name.count("/") == 2})

    def list_points(self, item_id: str) -> list[PointInfo]:
        """The item's recovery points, oldest first."""
        prefix = points_prefix(item_id)
        infos = [self.load_point(item_id, obj.name[len(prefix) :]).info() for obj in self.backend.list(prefix) if "/" not in obj.name[len(prefix) :]]
        return sorted(infos, key=lambda p: (p.created, p.point_id))

    def point_ids(self) -> list[tuple[str, str]]:
        """Every (item_id, point_id) in the vault, from one listing."""
        out = []
        for obj in self.backend.list(POINTS):
            parts = obj.name.split("/")
            if len(parts) == 3:
                out.append((parts[1], parts[2]))
        return sorted(out)

    def load_point(self, item_id: str, point_id: str) -> PointManifest:
        name = point_name(item_id, point_id)
        identity = f"{item_id}/{point_id}".encode()
        try:
            raw = self.load_sealed(name, DOMAIN_MANIFEST, identity)
        except StorageObjectNotFound:
            raise RecoveryPointNotFound(item_id=item_id, point_id=point_id) from None
        try:
            manifest = PointManifest.from_bytes(raw)
        except (ValueError, KeyError, TypeError):
            raise ObjectCorrupt(name=name) from None
        if (manifest.item_id, manifest.point_id) != (item_id, point_id):
            raise ObjectCorrupt(name=name)
        return manifest

    def point_exists(self, item_id: str, point_id: str) -> bool:
        return self.backend.exists(point_name(item_id, point_id))

    def write_point(self, manifest: PointManifest) -> None:
        """Store the manifest (the commit of a backup) and read it back to confirm it is there."""
        name = point_name(manifest.item_id, manifest.point_id)
        identity = f"{manifest.item_id}/{manifest.point_id}".encode()
        self.store_sealed(name, DOMAIN_MANIFEST, identity, manifest.to_bytes())

    def delete_point(self, item_id: str, point_id: str) -> None:
        """Remove a recovery point (its chunks go at the next GC). Missing points raise ``RecoveryPointNotFound``."""
        name = point_name(check_id(item_id, "Item id"), point_id)
        if not self.backend.exists(name):
            raise RecoveryPointNotFound(item_id=item_id, point_id=point_id)
        self.backend.delete(name)

    def stored_chunk_ids(self) -> set[bytes]:
        """Ids of every chunk object present (one listing; failures propagate)."""
        out = set()
        for obj in self.backend.list(CHUNKS):
            cid = chunk_id_from_name(obj.name)
            if cid is not None:
                out.add(cid)
        return out

    # ---------------------------------------------------------------- operations

    def backup(self, item_id: str, point_id: str, disks: list, meta: dict, parent_point_id: str | None = None,
               progress: Progress = NULL_PROGRESS, cancel: threading.Event | None = None):
        """Back up ``disks`` (``DiskSource``) as recovery point ``point_id`` of ``item_id``; see ``backup.run_backup``."""
        from .backup import run_backup

        return run_backup(self, item_id, point_id, disks, meta, parent_point_id, progress, cancel)

    def restore_disk(self, item_id: str, point_id: str, disk_name: str, target_path, fmt: str = "raw",
                     progress: Progress = NULL_PROGRESS):
        """Write the disk, sparse and byte-identical, to ``target_path`` as raw or qcow2."""
        from .restore import restore_disk

        return restore_disk(self, item_id, point_id, disk_name, target_path, fmt, progress)

    def open_disk_reader(self, item_id: str, point_id: str, disk_name: str):
        """A random-access reader of one disk of a point (``size``, ``read(offset, length)``)."""
        from .restore import DiskReader

        return DiskReader(self, item_id, point_id, disk_name)

    def verify(self, read_data: bool = False, subset: str | None = None, progress: Progress = NULL_PROGRESS,
               quarantine: bool = True):
        """Check structure (and with ``read_data`` the data itself); see ``verify.run_verify``."""
        from .verify import run_verify

        return run_verify(self, read_data, subset, progress, quarantine)

    def gc(self, grace: timedelta = timedelta(hours=24), progress: Progress = NULL_PROGRESS, dry_run: bool = False,
           expected_points: set[tuple[str, str]] | None = None, cache=None, clock_skew: timedelta | None = None):
        """Delete chunks no recovery point references, next to running backups; see ``gc.run_gc``.

        ``expected_points``: the (item, point) pairs an independent record (the metadata store) says
        exist. GC deletes nothing unless the storage listing shows every one of them.
        ``cache``: a ``gccache.ChunkListCache`` (a run then reads only manifests new since the last).
        """
        from .gc import DEFAULT_CLOCK_SKEW, run_gc

        return run_gc(self, grace, progress, dry_run, expected_points, cache,
                      DEFAULT_CLOCK_SKEW if clock_skew is None else clock_skew)

    def gc_cache(self, folder) -> "Any":
        """The chunk-list cache of this vault in ``folder`` (a file named by the vault's uuid)."""
        from pathlib import Path

        from .gccache import SqliteChunkListCache

        return SqliteChunkListCache(Path(folder) / f"gc-{self.config['vault_uuid']}.sqlite", self.keys.mac,
                                    self.config["vault_uuid"])


def _canonical(params: dict[str, Any]) -> bytes:
    return json.dumps(params, sort_keys=True, separators=(",", ":")).encode()


def _wrap(kek: KeyWrapper, data_key: bytes, binding: KeyBinding) -> dict[str, Any]:
    wrapped = kek.wrap(binding.bind(data_key))
    return {"kek_id": kek.key_id, "wrapped": base64.b64encode(wrapped).decode(), "format": BOUND_KEY_FORMAT,
            "version": binding.version}


def parse_config(raw: bytes) -> dict[str, Any]:
    """The vault's ``config`` document, checked for shape and format version (not yet authenticated)."""
    try:
        config = json.loads(raw)
        params = {k: v for k, v in config.items() if k not in ("mac", "key")}
        base64.b64decode(config["key"]["wrapped"], validate=True)
        str(config["vault_uuid"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ObjectCorrupt(name=CONFIG) from None
    if params.get("format") != FORMAT_NAME or params.get("version") != FORMAT_VERSION:
        raise RepositoryFormatUnsupported(version=params.get("version"))
    return config


def unwrap_config_key(kek: KeyWrapper, config: dict[str, Any]) -> bytes:
    """The vault's data key from its parsed ``config``: unwrapped by ``kek``, checked to be bound to
    this vault (``DataKeyBindingMismatch`` otherwise) and to authenticate the config (its MAC).

    A KEK that answers for a vault rather than unwrapping (a host agent's ``ServerKeyWrapper``, whose
    server checks the binding) offers ``unwrap_data_key(wrapped)`` and is used through it."""
    key = config["key"]
    wrapped = base64.b64decode(key["wrapped"])
    expected = key.get("kek_id", "?")
    try:
        served = getattr(kek, "unwrap_data_key", None)
        if served is not None:
            data_key = served(wrapped)
        elif key.get("format") == BOUND_KEY_FORMAT:
            data_key = KeyBinding(str(config["vault_uuid"]), int(key.get("version", 0))).unbind(kek.unwrap(wrapped))
        elif "format" in key:
            raise RepositoryFormatUnsupported(version=f"{config.get('version')} (key format {key.get('format')})")
        else:  # the first format: the bare data key
            data_key = kek.unwrap(wrapped)
    except HavenError:
        raise
    except (UnwrapFailed, ValueError, TypeError):
        raise RepositoryKeyMismatch(key_id=kek.key_id, expected=expected) from None
    if len(data_key) != 32:
        raise RepositoryKeyMismatch(key_id=kek.key_id, expected=expected)
    params = {k: v for k, v in config.items() if k not in ("mac", "key")}
    if not hmac.compare_digest(DataKeys.derive(data_key).mac(_canonical(params)), str(config.get("mac", ""))):
        raise ObjectCorrupt(name=CONFIG)
    return data_key


