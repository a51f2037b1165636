"""Haven's storage endpoint (auth, errors) and the codec / format details."""

from __future__ import annotations

import os

import pytest

from haven.engine import open_backend
from haven.engine.codec import Codec, SealError, is_zero
from haven.engine.errors import InvalidStorageUrl, StorageAccessDenied
from haven.engine.keys import DataKeys, LocalKeyWrapper, UnwrapFailed
from haven.engine.planning import plan_chunks
from haven.engine.source import Extent

from .conftest import TOKEN


def test_endpoint_rejects_bad_token(haven_endpoint):
    base = haven_endpoint.replace("http://", "haven+http://")
    for token in (None, "wrong"):
        b = open_backend(f"{base}/v-auth", token=token, retry=False)
        with pytest.raises(StorageAccessDenied):
            b.store("config", b"x")
        with pytest.raises(StorageAccessDenied):
            list(b.list(""))
    forbidden = open_backend(f"{base}/other-vault", token=TOKEN, retry=False)
    with pytest.raises(StorageAccessDenied):
        forbidden.load("config")


def test_endpoint_rejects_path_escape(haven_endpoint):
    import httpx

    r = httpx.put(f"{haven_endpoint}/storage/v1/vaults/v-x/objects/..%2F..%2Fetc", content=b"x",
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code in (400, 404)


def test_bad_urls():
    for url in ["ftp://x", "file://relative/path", "azure://", "s3://", "haven+https://host"]:
        with pytest.raises(InvalidStorageUrl):
            open_backend(url)


def test_codec_roundtrip_and_tamper():
    codec = Codec(DataKeys.derive(os.urandom(32)))
    data = b"abc" * 100000
    cid = codec.chunk_id(data)
    sealed = codec.seal_chunk(cid, data)
    assert len(sealed) < len(data) // 10
    assert codec.open_chunk(cid, sealed) == data
    other = codec.chunk_id(b"other")
    with pytest.raises(SealError):
        codec.open_chunk(other, sealed)  # chunk id is bound as AAD
    with pytest.raises(SealError):
        codec.open_chunk(cid, sealed[:-1])
    flipped = bytearray(sealed)
    flipped[1] = 0  # claim "not compressed": the header is authenticated too
    with pytest.raises(SealError):
        codec.open_chunk(cid, bytes(flipped))
    rnd = os.urandom(5000)
    assert codec.open_chunk(codec.chunk_id(rnd), codec.seal_chunk(codec.chunk_id(rnd), rnd)) == rnd


def test_ids_are_keyed():
    import blake3

    a, b = Codec(DataKeys.derive(os.urandom(32))), Codec(DataKeys.derive(os.urandom(32)))
    data = b"same content"
    assert a.chunk_id(data) != b.chunk_id(data)
    assert a.chunk_id(data) != blake3.blake3(data).digest()


def test_key_wrapper():
    k1, k2 = LocalKeyWrapper(b"1" * 32), LocalKeyWrapper(b"2" * 32)
    wrapped = k1.wrap(b"secret" * 5)
    assert k1.unwrap(wrapped) == b"secret" * 5
    assert k1.key_id != k2.key_id
    with pytest.raises(UnwrapFailed):
        k2.unwrap(wrapped)


def test_rewrap_rotates_kek(repo, local_backend, kek):
    from haven.engine import Repository
    from haven.engine.errors import RepositoryKeyMismatch

    new = LocalKeyWrapper(b"n" * 32)
    repo.rewrap(new, kek)
    assert Repository.open(local_backend, new).vault_info["name"] == "test-vault"
    with pytest.raises(RepositoryKeyMismatch):
        Repository.open(local_backend, kek)


def test_is_zero():
    assert is_zero(bytes(1 << 20)) and is_zero(b"") and not is_zero(bytes(100) + b"\x01")
    assert is_zero(bytearray(4096))


def test_plan_chunks():
    plans = list(plan_chunks(10, 4, [Extent(1, 2), Extent(5, 100)], [Extent(9, 1)]))
    assert [(p.start, p.end) for p in plans] == [(0, 4), (4, 8), (8, 10)]
    assert [p.pieces for p in plans] == [((1, 2),), ((5, 3),), ((8, 2),)]
    assert [p.unchanged for p in plans] == [True, True, False]
    assert all(not p.unchanged for p in plan_chunks(8, 4, [], None))
