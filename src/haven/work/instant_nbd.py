"""nbdkit's Python plugin serving a recovery point's disks read-only from the vault (instant restore).

nbdkit loads this file (``nbdkit python .../instant_nbd.py keyfile=F pythonpath=P``); it is not
imported by Haven. ``keyfile`` is a JSON document only root can read, in a private folder: the
vault's storage URL and options, the vault's derived data keys, the point and its disks. It is read
and removed once, at start. Every export is one disk of the point (the NBD export name is the disk
name), read through ``engine.reader.DiskImage``: each chunk authenticated like every read, cached,
holes read as zeros and reported as such in ``extents``.
"""

import io
import json
import os
import sys

import nbdkit

API_VERSION = 2

_config: dict = {}
_state: dict = {}


def config(key, value):
    if key not in ("keyfile", "pythonpath"):
        raise RuntimeError(f"unknown parameter {key!r}")
    _config[key] = value


def config_complete():
    given = [entry for entry in _config.get("pythonpath", "").split(os.pathsep) if entry]
    sys.path[:] = given + [entry for entry in sys.path if entry not in given]  # Haven's own path, in its order, first
    path = _config.get("keyfile")
    if not path:
        raise RuntimeError("keyfile=FILE is required")
    try:
        with io.open(path, "rb") as fh:
            doc = json.loads(fh.read())
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    from haven.work.instant_repo import open_point_disks

    _state["disks"] = open_point_disks(doc)


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def list_exports(readonly, is_tls):
    return list(_state["disks"])


def default_export(readonly, is_tls):
    return next(iter(_state["disks"]))


def open(readonly):  # noqa: A001 - nbdkit's name
    name = nbdkit.export_name() or next(iter(_state["disks"]))
    image = _state["disks"].get(name)
    if image is None:
        nbdkit.set_error(2)  # ENOENT
        raise RuntimeError(f"no disk {name!r} in this recovery point")
    return image


def get_size(h):
    return h.size


def can_write(h):
    return False


def can_multi_conn(h):
    return True


def can_cache(h):
    return nbdkit.CACHE_EMULATE


def can_extents(h):
    return True


def pread(h, buf, offset, flags):
    data = h.read_at(offset, len(buf))
    buf[: len(data)] = data
    if len(data) < len(buf):  # past the end: never asked for by a client that read get_size
        buf[len(data):] = bytes(len(buf) - len(data))


def extents(h, count, offset, flags):
    cs = h.chunk_size
    end = min(h.size, offset + count)
    out = []
    pos = offset
    while pos < end:
        index = pos // cs
        stop = min(end, (index + 1) * cs)
        kind = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO if h.is_zero(pos, stop - pos) else 0
        if out and out[-1][2] == kind:
            out[-1] = (out[-1][0], out[-1][1] + stop - pos, kind)
        else:
            out.append((pos, stop - pos, kind))
        pos = stop
    return out
