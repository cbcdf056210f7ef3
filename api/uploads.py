"""Copying an upload to a local temporary file with a size cap, hashing on the way."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastapi import Request

from api.errors import ApiError
from service.blobstore import BlobStore, BlobStoreError

CHUNK = 1024 * 1024
UPLOAD_OVERHEAD = 64 * 1024  # multipart boundaries and form fields around the file

PICKLE_HINT = (
    "export the weights with safetensors instead: "
    "`from safetensors.torch import save_file; save_file(model.state_dict(), 'teacher.safetensors')`"
)


@dataclass
class SpooledUpload:
    path: Path
    size: int
    sha256: str
    head: bytes


def spool_upload(source: BinaryIO, limit: int, directory: Path | None = None) -> SpooledUpload:
    """Copy `source` to a temporary file; 413 past `limit` bytes (the partial file is removed)."""
    digest = hashlib.sha256()
    size = 0
    head = b""
    with tempfile.NamedTemporaryFile(dir=directory, delete=False, prefix="upload-") as target:
        path = Path(target.name)
        try:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413, "upload_too_large", f"the file is larger than the {limit} byte limit"
                    )
                if len(head) < 16:
                    head = (head + chunk)[:16]
                digest.update(chunk)
                target.write(chunk)
        except BaseException:
            target.close()
            path.unlink(missing_ok=True)
            raise
    return SpooledUpload(path=path, size=size, sha256=digest.hexdigest(), head=head)


def refuse_unsafe_formats(head: bytes) -> None:
    """Recognise the formats that would need unpickling and say how to convert them."""
    if not head:
        raise ApiError(422, "empty_file", "the uploaded file is empty")
    if head.startswith(b"PK\x03\x04"):
        raise ApiError(
            422,
            "pickle_refused",
            "this looks like a torch.save checkpoint (a zip holding a pickle); pickles are never loaded, "
            + PICKLE_HINT,
        )
    if head[:1] == b"\x80" and head[1:2] in {bytes([n]) for n in range(2, 6)}:
        raise ApiError(
            422,
            "pickle_refused",
            "this is a Python pickle; pickles are never loaded, " + PICKLE_HINT,
        )


def refuse_declared_oversize(request: Request, limit: int) -> None:
    """413 before reading anything when the declared body is already over the cap."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise ApiError(400, "bad_content_length", "Content-Length is not a number") from None
    if declared > limit + UPLOAD_OVERHEAD:
        raise ApiError(413, "upload_too_large", f"the upload is larger than the {limit} byte limit")


@contextmanager
def spooled_blob(blobs: BlobStore, key: str) -> Iterator[Path]:
    """A stored blob copied chunk by chunk to a temporary file (never whole in memory), removed
    afterwards."""
    with tempfile.NamedTemporaryFile(delete=False, prefix="blob-") as target:
        path = Path(target.name)
        try:
            for chunk in blobs.iter_chunks(key):
                target.write(chunk)
        except BlobStoreError as error:
            target.close()
            path.unlink(missing_ok=True)
            raise ApiError(503, "storage_unavailable", f"{error}; try again") from None
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def store_upload(blobs: BlobStore, key: str, upload: SpooledUpload) -> None:
    try:
        with upload.path.open("rb") as stream:
            blobs.put(key, stream, upload.size)
    except BlobStoreError as error:
        raise ApiError(
            503, "storage_unavailable", f"{error}; nothing was stored, try again"
        ) from None
