"""One suite, every BlobStore implementation: the local folder and S3 over HTTP (moto)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.blobstore import BlobNotFoundError, BlobStore, LocalBlobStore, S3BlobStore
from service.settings import Settings


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        settings = Settings(**{k.removeprefix("DFKD_").lower(): v for k, v in endpoint.items()})
        yield S3BlobStore(settings)


def test_put_get_roundtrip_and_overwrite(store: BlobStore) -> None:
    store.put_bytes("a/b.bin", b"first")
    store.put_bytes("a/b.bin", b"second")
    assert store.get_bytes("a/b.bin") == b"second"
    assert store.exists("a/b.bin") and not store.exists("a/c.bin")


def test_large_stream_comes_back_whole_in_chunks(store: BlobStore) -> None:
    payload = os.urandom(20 * 1024 * 1024 + 17)  # over one multipart part
    store.put("big", io.BytesIO(payload), len(payload))
    chunks = list(store.iter_chunks("big"))
    assert len(chunks) > 1
    assert b"".join(chunks) == payload


def test_missing_keys_raise_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError):
        store.get_bytes("nope")
    with pytest.raises(BlobNotFoundError):
        list(store.iter_chunks("nope"))


def test_delete_and_check(store: BlobStore) -> None:
    store.put_bytes("gone", b"x")
    store.delete("gone")
    assert not store.exists("gone")
    store.check()


def test_local_store_refuses_keys_that_escape_its_folder(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(ValueError, match="escapes"):
        store.put_bytes("../outside", b"x")


def test_s3_parts_stay_small_and_within_the_part_limit() -> None:
    from service.blobstore import S3_MAX_PARTS, S3_PART_BYTES, s3_part_size

    assert s3_part_size(1024**3) == S3_PART_BYTES  # a 1 GB teacher: 205 parts of 5 MiB
    for length in (1, S3_PART_BYTES * S3_MAX_PARTS + 1, 200 * 1024**3):
        size = s3_part_size(length)
        assert size >= S3_PART_BYTES
        assert -(-length // size) <= S3_MAX_PARTS, length


def test_list_and_delete_by_prefix_take_the_folder_and_nothing_beside_it(
    store: BlobStore,
) -> None:
    for key in ("jobs/job_1/checkpoint.pt", "jobs/job_1/samples/000000010.png", "jobs/job_10/x"):
        store.put_bytes(key, b"x")
    assert store.list_keys("jobs/job_1/") == [
        "jobs/job_1/checkpoint.pt",
        "jobs/job_1/samples/000000010.png",
    ]
    assert store.delete_prefix("jobs/job_1/") == 2
    assert store.list_keys("jobs/job_1/") == []
    assert not store.exists("jobs/job_1/checkpoint.pt")
    assert store.exists("jobs/job_10/x")  # a longer id sharing the prefix's start stays
    assert store.delete_prefix("jobs/job_1/") == 0  # again: nothing left, no error


@pytest.mark.parametrize("prefix", ["", "/", "jobs/job_1", "../", "jobs/../", "jobs//", "jobs/"])
def test_delete_by_prefix_refuses_anything_but_an_object_folder(
    store: BlobStore, prefix: str
) -> None:
    store.put_bytes("jobs/job_1/a", b"x")
    with pytest.raises(ValueError):
        store.delete_prefix(prefix)
    assert store.exists("jobs/job_1/a")
