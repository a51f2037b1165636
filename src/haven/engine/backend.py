"""The one small interface every storage backend implements.

Object names are relative keys: segments of ``[A-Za-z0-9._-]`` joined by ``/`` (never a leading
``/``, never ``..``). Values are opaque bytes. Backends do not interpret what they store.

Errors: every method raises only ``haven.errors.HavenError`` subclasses —
``StorageObjectNotFound`` for a missing object on ``load``, a ``Transient`` subclass
(``StorageUnavailable``, ``StorageTimeout``) for anything that may pass on retry, and a
permanent category (``StorageAccessDenied``, ``StorageRequestRejected``) otherwise.
``is_permanent(exc)`` tells the retry wrapper which is which.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from haven.errors import HavenError

from .errors import InvalidObjectName, StorageObjectNotFound

__all__ = ["Backend", "ObjectInfo", "WrappingBackend", "check_name", "check_prefix"]

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise ``InvalidObjectName``."""
    parts = name.split("/")
    if not name or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise InvalidObjectName(what="Object name", name=name)
    return name


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it may start a listing, else raise ``InvalidObjectName``.

    The empty prefix lists the whole vault. Otherwise a prefix is an object name, or an object
    name's folder with its trailing ``/`` (``points/``), or the start of a last segment
    (``points/vm1/p``); never ``..``, ``.``, an empty segment or a leading ``/``.
    """
    if prefix == "":
        return prefix
    if not isinstance(prefix, str) or len(prefix) > 1024:
        raise InvalidObjectName(what="Listing prefix", name=str(prefix)[:100])
    body = prefix[:-1] if prefix.endswith("/") else prefix
    parts = body.split("/")
    if not body or any(not _SEGMENT.match(p) or p in (".", "..") for p in parts):
        raise InvalidObjectName(what="Listing prefix", name=prefix)
    return prefix


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: its full name, its stored size in bytes and, where the store gives one, its
    ``version``: a token that changes whenever the object is written again (an ETag; on a folder the
    file's inode and mtime). ``None``: the store gives none, so a reader cannot tell a rewrite apart."""

    name: str
    size: int
    version: str | None = field(default=None, compare=False)


class Backend(ABC):
    """A flat key/value object store holding one vault.

    Implementations must be safe to call from several threads at once.
    """

    #: A human-readable location for messages (never contains secrets).
    location: str = "?"

    def prepare(self) -> None:
        """Create the container/bucket/folder if it does not exist (idempotent). Called by ``Repository.init``."""

    @abstractmethod
    def store(self, name: str, data: bytes) -> None:
        """Write ``data`` under ``name`` atomically, replacing any previous object.

        On return the object is durable: a later ``load`` (from any client) returns exactly
        ``data``. Readers never see a partial object. On error the previous object (if any) or
        nothing is visible — never a truncated one.
        """

    @abstractmethod
    def load(self, name: str) -> bytes:
        """Return the whole object ``name``; ``StorageObjectNotFound`` if there is none."""

    def exists(self, name: str) -> bool:
        """True if an object ``name`` exists now (a metadata call; does not read the data)."""
        try:
            self.load(name)
            return True
        except StorageObjectNotFound:
            return False

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in no particular order.

        The listing is complete or fails with an error: a backend never silently returns part
        of a listing (garbage collection relies on this).
        """

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove ``name``. Deleting an object that does not exist is not an error."""

    def is_permanent(self, exc: BaseException) -> bool:
        """True if retrying the call that raised ``exc`` cannot help."""
        if isinstance(exc, HavenError):
            return not exc.transient
        return True

    def close(self) -> None:
        """Release connections. The backend must not be used afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WrappingBackend(Backend):
    """A backend that passes every call through ``_call`` to ``inner`` (restic's wrapBackend idea).

    Wrappers — retry, typed proxy errors, fault injection — override ``_call`` (and, where they
    change what counts as permanent, ``is_permanent``) instead of repeating each method. A listing
    goes through ``_call`` as a whole list, so a wrapper never sees it half-way.
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.location = inner.location

    def _call(self, fn):
        return fn()

    def prepare(self) -> None:
        self._call(self.inner.prepare)

    def store(self, name: str, data: bytes) -> None:
        self._call(lambda: self.inner.store(name, data))

    def load(self, name: str) -> bytes:
        return self._call(lambda: self.inner.load(name))

    def exists(self, name: str) -> bool:
        return self._call(lambda: self.inner.exists(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call(lambda: list(self.inner.list(prefix))))

    def delete(self, name: str) -> None:
        self._call(lambda: self.inner.delete(name))

    def is_permanent(self, exc: BaseException) -> bool:
        return self.inner.is_permanent(exc)

    def close(self) -> None:
        self.inner.close()
