"""One small seam for blobs (teachers, checkpoints, students): S3 via the minio SDK, or a folder."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from service.settings import Settings

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

CHUNK = 1024 * 1024


class BlobNotFoundError(KeyError):
    pass


class BlobStoreError(RuntimeError):
    """The store could not be reached or refused the operation."""


def check_prefix(prefix: str) -> str:
    """An object's folder, `kind/id/`: deleting by any other prefix could take unrelated blobs."""
    segments = prefix.split("/")
    if (
        segments[-1] != ""
        or any(part in {"", ".", ".."} for part in segments[:-1])
        or len(segments) < 3
    ):
        raise ValueError(f"blob prefix {prefix!r} is not an object's folder")
    return prefix


class BlobStore(Protocol):
    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        """Store `length` bytes read from `stream` under `key`, replacing any old object whole."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def iter_chunks(self, key: str) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key that starts with `prefix`, sorted."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with `prefix` (a folder: ends with "/"); returns
        how many there were. Safe to repeat."""

    def check(self) -> None:
        """Raise BlobStoreError when the store is unusable."""

    def presigned_url(self, key: str, expires: timedelta = ...) -> str | None:
        """A short-lived URL the client can fetch directly, or None where the API must stream."""


class LocalBlobStore:
    """Objects as files under a root folder; writes land whole via rename, never half-written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key {key!r} escapes the store")
        return path

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, delete=False, prefix=".part-"
        ) as temporary:
            shutil.copyfileobj(stream, temporary, CHUNK)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary.name, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put(key, io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(key) from None
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _folder(self, prefix: str) -> Path:
        return self._path(check_prefix(prefix).rstrip("/"))

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        if not folder.is_dir():
            return []
        files = (path for path in folder.rglob("*") if path.is_file())
        return sorted(path.relative_to(self.root.resolve()).as_posix() for path in files)

    def delete_prefix(self, prefix: str) -> int:
        folder = self._folder(prefix)
        count = len(self.list_keys(prefix))
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():  # rmtree ignored an error: say so rather than leave files behind
            raise BlobStoreError(f"could not delete every file under {prefix!r}")
        return count

    def presigned_url(self, key: str, expires: timedelta = timedelta(minutes=15)) -> str | None:
        return None

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise BlobStoreError(f"blob folder {self.root} is not writable")


# Multipart for large objects, a few parts in flight: the API's memory stays at a few parts
# whatever the object's size (bench/uploads.py: a 1 GB teacher grew the API by 91 MB with minio's
# default three 16 MiB parts in flight; 31-36 MB with two 5 MiB parts, and faster).
S3_PART_BYTES = 5 * 1024**2  # S3's smallest part
S3_MAX_PARTS = 10_000  # S3's limit
S3_PARALLEL_PARTS = 2


def s3_part_size(length: int) -> int:
    """The smallest part of at least S3_PART_BYTES that fits `length` in S3's 10 000 parts."""
    return max(S3_PART_BYTES, -(-length // S3_MAX_PARTS))


class S3BlobStore:
    """Objects in one bucket of MinIO or any S3-compatible server, through the minio SDK."""

    def __init__(self, settings: Settings) -> None:
        from minio import Minio  # imported here so the embedded default never needs it loaded

        self.bucket = settings.s3_bucket
        self.client = Minio(
            settings.s3_endpoint or "",
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except Exception as error:
            raise BlobStoreError(f"S3 bucket {self.bucket!r} unavailable: {error}") from error
        self._bucket_ready = True

    def put(self, key: str, stream: BinaryIO, length: int) -> None:
        self._ensure_bucket()
        try:
            self.client.put_object(
                self.bucket,
                key,
                stream,
                length,
                part_size=s3_part_size(length),
                num_parallel_uploads=S3_PARALLEL_PARTS,
            )
        except Exception as error:
            raise BlobStoreError(f"could not write {key!r} to S3: {error}") from error

    def put_bytes(self, key: str, data: bytes) -> None:
        self.put(key, io.BytesIO(data), len(data))

    def _get(self, key: str) -> BaseHTTPResponse:
        from minio.error import S3Error

        self._ensure_bucket()
        try:
            return self.client.get_object(self.bucket, key)
        except S3Error as error:
            if error.code in {"NoSuchKey", "NoSuchObject"}:
                raise BlobNotFoundError(key) from None
            raise BlobStoreError(f"could not read {key!r} from S3: {error}") from error
        except Exception as error:
            raise BlobStoreError(f"could not read {key!r} from S3: {error}") from error

    def get_bytes(self, key: str) -> bytes:
        response = self._get(key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def iter_chunks(self, key: str) -> Iterator[bytes]:
        response = self._get(key)
        try:
            yield from response.stream(CHUNK)
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self._get(key).close()
        except BlobNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        self._ensure_bucket()
        self.client.remove_object(self.bucket, key)

    def list_keys(self, prefix: str) -> list[str]:
        self._ensure_bucket()
        try:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return sorted(item.object_name for item in objects if item.object_name is not None)
        except Exception as error:
            raise BlobStoreError(f"could not list {prefix!r} on S3: {error}") from error

    def delete_prefix(self, prefix: str) -> int:
        from minio.deleteobjects import DeleteObject

        keys = self.list_keys(check_prefix(prefix))
        try:
            # remove_objects is lazy: its errors come out only while iterating
            errors = list(
                self.client.remove_objects(self.bucket, (DeleteObject(key) for key in keys))
            )
        except Exception as error:
            raise BlobStoreError(f"could not delete {prefix!r} on S3: {error}") from error
        if errors:
            raise BlobStoreError(
                f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}"
            )
        return len(keys)

    def presigned_url(self, key: str, expires: timedelta = timedelta(minutes=15)) -> str:
        return self.client.presigned_get_object(self.bucket, key, expires=expires)

    def check(self) -> None:
        self._bucket_ready = False
        self._ensure_bucket()


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.s3_endpoint:
        return S3BlobStore(settings)
    return LocalBlobStore(settings.blob_dir)
