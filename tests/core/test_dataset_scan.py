"""The streaming dataset check: the same verdicts and messages as the whole-array reader, in flat
memory whatever the file's size."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core import dataset_scan
from core.dataset_scan import DatasetSummary, scan_labelled
from core.datasets import DatasetFormatError, read_labelled

rng = np.random.default_rng(0)
PIXELS = rng.integers(0, 256, (40, 1, 8, 8), np.uint8)
LABELS = rng.integers(0, 10, 40).astype(np.int64)

# (name, arrays): sound sets and every kind of bad one the checks know
CASES: dict[str, dict[str, np.ndarray]] = {
    "uint8 NCHW": {"images": PIXELS, "labels": LABELS},
    "uint8 NHW": {"images": PIXELS[:, 0], "labels": LABELS.astype(np.int32)},
    "float32": {"images": PIXELS.astype(np.float32) / 255, "labels": LABELS},
    "float16 uint8-labels": {
        "images": PIXELS.astype(np.float16),
        "labels": LABELS.astype(np.uint8),
    },
    "5-d images": {"images": PIXELS[:, None], "labels": LABELS},
    "2-d images": {"images": PIXELS[:, 0, 0], "labels": LABELS},
    "count mismatch": {"images": PIXELS, "labels": LABELS[:7]},
    "2-d labels": {"images": PIXELS, "labels": LABELS[:, None]},
    "no images": {"images": PIXELS[:0], "labels": LABELS[:0]},
    "int32 images": {"images": PIXELS.astype(np.int32), "labels": LABELS},
    "NaN images": {"images": np.full((4, 1, 2, 2), np.nan, np.float32), "labels": LABELS[:4]},
    "inf images": {"images": np.full((4, 1, 2, 2), np.inf, np.float64), "labels": LABELS[:4]},
    "float labels": {"images": PIXELS, "labels": LABELS.astype(np.float32)},
    "negative labels": {"images": PIXELS, "labels": -LABELS - 1},
    "labels missing": {"images": PIXELS},
    "images missing": {"labels": LABELS, "other": LABELS},
}


SOUND = {"uint8 NCHW", "uint8 NHW", "float32", "float16 uint8-labels"}


def write(directory: Path, name: str, arrays: dict[str, np.ndarray], kind: str) -> Path:
    suffix = "safetensors" if kind == "safetensors" else "npz"  # np.savez insists on .npz
    path = directory / f"{name.replace(' ', '_')}-{kind}.{suffix}"
    if kind == "safetensors":
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    elif kind == "npz":
        np.savez(path, **arrays)
    else:
        np.savez_compressed(path, **arrays)
    return path


def whole_reader_verdict(path: Path) -> DatasetSummary | str:
    try:
        data = read_labelled(path)
    except DatasetFormatError as error:
        return str(error)
    return DatasetSummary(
        format="npz" if path.read_bytes()[:4] == b"PK\x03\x04" else "safetensors",
        num_examples=len(data.labels),
        image_shape=data.image_shape,
        pixel_dtype=str(data.images.dtype),
        class_counts=data.class_counts(),
    )


def scan_verdict(path: Path) -> DatasetSummary | str:
    try:
        return scan_labelled(path)
    except DatasetFormatError as error:
        return str(error)


@pytest.mark.parametrize("kind", ["npz", "compressed", "safetensors"])
@pytest.mark.parametrize("name", list(CASES))
def test_the_scan_agrees_with_the_whole_array_reader(tmp_path: Path, name: str, kind: str) -> None:
    arrays = CASES[name]
    path = write(tmp_path, name, arrays, kind)
    expected = whole_reader_verdict(path)
    assert scan_verdict(path) == expected
    assert isinstance(expected, DatasetSummary) == (name in SOUND), expected


def test_bad_values_past_the_first_chunk_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset_scan, "CHUNK_BYTES", 1000)
    images = np.zeros((400, 1, 4, 4), np.float32)
    images[-1, 0, 3, 3] = np.nan
    labels = np.zeros(400, np.int64)
    path = write(tmp_path, "nan-at-the-end", {"images": images, "labels": labels}, "compressed")
    assert scan_verdict(path) == "images hold NaN or infinite values"
    labels[-1] = -1
    images[-1, 0, 3, 3] = 0
    path = write(tmp_path, "negative-at-the-end", {"images": images, "labels": labels}, "npz")
    assert scan_verdict(path) == "labels must be class indices >= 0"


def test_class_counts_add_up_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset_scan, "CHUNK_BYTES", 64)
    labels = rng.integers(0, 7, 1000).astype(np.int16)
    images = rng.integers(0, 256, (1000, 2, 2), np.uint8)
    path = write(tmp_path, "counts", {"images": images, "labels": labels}, "safetensors")
    summary = scan_labelled(path)
    values, counts = np.unique(labels, return_counts=True)
    assert summary.class_counts == dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert summary.image_shape == (1, 2, 2) and summary.num_examples == 1000


def test_values_split_across_reads_are_joined() -> None:
    values = np.arange(1000, dtype=np.int64)
    stream = io.BytesIO(values.tobytes())
    sizes = iter([3, 17, 8, 1, 5000] * 100)
    chunks = dataset_scan._element_chunks(lambda _: stream.read(next(sizes)), np.dtype(np.int64))
    assert np.array_equal(np.concatenate(list(chunks)), values)


def test_a_damaged_member_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    # pixels past zipfile's first read (4 KiB), so only reading them to the end finds the flip
    images = rng.integers(0, 256, (200, 1, 32, 32), np.uint8)
    path = write(tmp_path, "sound", {"images": images, "labels": LABELS[:1].repeat(200)}, "npz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the images' values: only the CRC can tell
    path.write_bytes(bytes(data))
    verdict = scan_verdict(path)
    assert isinstance(verdict, str) and verdict.startswith("unreadable npz"), verdict


@pytest.mark.parametrize("kind", ["npz", "safetensors"])
def test_memory_stays_flat_whatever_the_size(tmp_path: Path, kind: str) -> None:
    """64 MB of float32 images: the whole-array reader holds them all, the scan a few chunks."""
    images = np.zeros((16_384, 1, 32, 32), np.float32)  # 64 MiB
    path = write(tmp_path, "big", {"images": images, "labels": np.zeros(16_384, np.int64)}, kind)
    del images
    tracemalloc.start()
    try:
        summary = scan_labelled(path)
        _, scan_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read_labelled(path)
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(
        f"FIGURE dataset scan peak {scan_peak / 2**20:.1f} MiB, whole {whole_peak / 2**20:.1f} MiB"
    )
    assert summary.num_examples == 16_384
    assert (
        whole_peak > 64 * 2**20
    )  # the measure sees numpy's arrays: the bound below means something
    assert scan_peak < 4 * dataset_scan.CHUNK_BYTES
