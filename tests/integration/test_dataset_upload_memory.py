"""Issue 17: dataset uploads against `dfkd serve` on the production shape (PostgreSQL, a Redis
broker, S3 over HTTP) grow the API by tens of MB, not by the array: a 128 MB set, as safetensors
and as an npz, is checked chunk by chunk and lands in S3 byte for byte."""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import zipfile
from pathlib import Path

import httpx
import numpy as np
import numpy.lib.format as npy_format
import pytest

from service.blob_keys import dataset_key
from service.blobstore import S3BlobStore
from service.settings import Settings
from tests.integration.test_bounded_requests import api, growth_of  # noqa: F401 (the fixture)
from tests.memory import CLEAR_REFS

MiB = 1024 * 1024
COUNT = 32_768  # float32 [N, 1, 32, 32] images: 128 MiB, 16 of the reader's chunks
CHUNK = 4 * MiB
BOUND = 50 * MiB  # the bound for a 1 GB set; the whole-array reader grew by the array
pytestmark = pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs /proc/<pid>/clear_refs")


def arrays() -> dict[str, tuple[str, tuple[int, ...], float]]:
    """(npy descr, shape, fill value) of `images` and `labels`, the labels cycling 0..9 below."""
    return {"images": ("<f4", (COUNT, 1, 32, 32), 0.5), "labels": ("<i8", (COUNT,), 0)}


def label_bytes() -> bytes:
    return (np.arange(COUNT, dtype=np.int64) % 10).tobytes()


def write_safetensors(path: Path) -> None:
    """Written in chunks: the test process never holds the images either."""
    images = COUNT * 32 * 32 * 4
    header = {
        "images": {"dtype": "F32", "shape": [COUNT, 1, 32, 32], "data_offsets": [0, images]},
        "labels": {"dtype": "I64", "shape": [COUNT], "data_offsets": [images, images + COUNT * 8]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    block = np.full(CHUNK // 4, 0.5, np.float32).tobytes()
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for start in range(0, images, CHUNK):
            handle.write(block[: min(CHUNK, images - start)])
        handle.write(label_bytes())


def write_npz(path: Path) -> None:
    """Stored .npy members written in chunks, as np.savez would lay them out."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, (descr, shape, value) in arrays().items():
            header = io.BytesIO()
            npy_format.write_array_header_1_0(
                header, {"descr": descr, "fortran_order": False, "shape": shape}
            )
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                member.write(header.getvalue())
                if name == "labels":
                    member.write(label_bytes())
                    continue
                size = math.prod(shape) * 4
                block = np.full(CHUNK // 4, value, np.float32).tobytes()
                for start in range(0, size, CHUNK):
                    member.write(block[: min(CHUNK, size - start)])


@pytest.mark.parametrize("kind", ["safetensors", "npz"])
def test_a_128_mb_dataset_upload_grows_the_api_by_less_than_50_mb(
    api: tuple[httpx.Client, int],  # noqa: F811
    s3_endpoint: dict[str, str],
    tmp_path: Path,
    kind: str,
) -> None:
    client, pid = api
    path = tmp_path / f"set.{kind}"
    (write_safetensors if kind == "safetensors" else write_npz)(path)
    with path.open("rb") as handle:
        response, growth = growth_of(
            pid, lambda: client.post("/v1/datasets", files={"file": (path.name, handle)})
        )
    print(
        f"FIGURE dataset upload {kind}: {path.stat().st_size / MiB:.0f} MiB, API +{growth / MiB:.1f} MiB"
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["format"] == kind
    assert dataset["num_examples"] == COUNT and dataset["image_shape"] == [1, 32, 32]
    assert dataset["pixel_dtype"] == "float32"
    assert dataset["class_counts"] == {str(c): COUNT // 10 + (c < COUNT % 10) for c in range(10)}
    assert growth < BOUND, f"the API grew by {growth / MiB:.0f} MiB"

    settings = {k.removeprefix("DFKD_").lower(): v for k, v in s3_endpoint.items()}
    stored = S3BlobStore(Settings(**settings)).get_bytes(dataset_key(dataset["id"], kind))
    assert len(stored) == path.stat().st_size
    assert hashlib.sha256(stored).hexdigest() == dataset["sha256"]
