"""Checking an uploaded labelled set in flat memory: the arrays' headers first, then their values
read chunk by chunk (npz members inflated piece by piece, safetensors read from their offsets).

The same checks, in the same order and with the same messages, as `read_labelled`, which loads
the arrays whole (the worker needs them whole; the API only needs to know they are sound)."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from core.datasets import (
    NPZ_ARRAYS,
    NUMPY_DTYPES,
    TASK_OF_TARGET_ARRAY,
    DatasetFormatError,
    check_npz_members,
    check_target_dtype,
    check_target_range,
    check_target_shape,
    read_npy_header,
    safetensors_entries,
    target_array,
)
from core.segmentation import CLASSIFICATION_TASK, IGNORE_INDEX

CHUNK_BYTES = 8 * 1024 * 1024  # per read: the scan's memory is a few of these, whatever the file


@dataclass(frozen=True)
class DatasetSummary:
    """What the API records about an accepted set."""

    format: str  # "npz" or "safetensors"
    num_examples: int
    image_shape: tuple[int, int, int]
    pixel_dtype: str
    class_counts: dict[int, int]  # per label; for masks, pixels per class (ignored left out)
    task_type: str = CLASSIFICATION_TASK  # SEGMENTATION_TASK for a set of masks


@dataclass(frozen=True)
class StoredArray:
    """An array's header, and its values as 1-D chunks of whole elements read on demand."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Callable[[], Iterator[np.ndarray]]


def _element_chunks(read: Callable[[int], bytes], dtype: np.dtype) -> Iterator[np.ndarray]:
    """Values from a byte stream, CHUNK_BYTES at a time; a trailing part element is carried over."""
    step = max(CHUNK_BYTES // dtype.itemsize, 1) * dtype.itemsize
    carry = b""
    while block := read(step):
        block = carry + block
        whole = len(block) - len(block) % dtype.itemsize
        carry = block[whole:]
        if whole:
            yield np.frombuffer(block[:whole], dtype=dtype)


# --- npz: a zip of .npy members


def _npz_member_chunks(path: Path, member: str, dtype: np.dtype) -> Iterator[np.ndarray]:
    with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
        read_npy_header(handle)
        # read to the end, so zipfile checks the member's CRC
        yield from _element_chunks(handle.read, dtype)


def _npz_arrays(path: Path, max_array_bytes: int | None) -> tuple[dict[str, StoredArray], list]:
    check_npz_members(path, max_array_bytes)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        arrays = {}
        for name in NPZ_ARRAYS:
            member = f"{name}.npy"
            if member not in names:
                continue
            with archive.open(member) as handle:
                shape, dtype = read_npy_header(handle)
            arrays[name] = StoredArray(
                tuple(shape), dtype, partial(_npz_member_chunks, path, member, dtype)
            )
    # the names np.load would list: members with ".npy" cut off
    return arrays, [name.removesuffix(".npy") for name in names]


# --- safetensors: a JSON header, then each tensor at its offsets


def _file_span_chunks(path: Path, start: int, end: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    with path.open("rb") as handle:
        handle.seek(start)
        left = end - start

        def read(count: int) -> bytes:
            nonlocal left
            block = handle.read(min(count, left))
            left -= len(block)
            return block

        yield from _element_chunks(read, dtype)


def _safetensors_arrays(path: Path, max_array_bytes: int | None) -> dict[str, StoredArray]:
    data_start, entries = safetensors_entries(path, max_array_bytes)
    arrays = {}
    for name, info in entries.items():
        dtype = np.dtype(NUMPY_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]
        chunks = partial(_file_span_chunks, path, data_start + start, data_start + end, dtype)
        arrays[name] = StoredArray(tuple(info["shape"]), dtype, chunks)
    return arrays


# --- the checks, in read_labelled's order


def _check_images(images: StoredArray, labels: StoredArray, target: str) -> tuple[int, ...]:
    shape = (images.shape[0], 1, *images.shape[1:]) if len(images.shape) == 3 else images.shape
    if len(shape) != 4:
        raise DatasetFormatError(
            f"images must be [N, C, H, W] or [N, H, W]; got shape {list(shape)}"
        )
    check_target_shape(target, labels.shape, shape)
    if shape[0] == 0:
        raise DatasetFormatError("the set holds no images")
    floating = np.issubdtype(images.dtype, np.floating)
    if images.dtype != np.uint8 and not floating:
        raise DatasetFormatError(f"images must be uint8 pixels or floats; got {images.dtype}")
    # every value is read, pixels too: zipfile checks a member's CRC only at its end
    for chunk in images.chunks():
        if floating and not np.isfinite(chunk).all():
            raise DatasetFormatError("images hold NaN or infinite values")
    return shape


def _count_labels(labels: StoredArray, target: str) -> dict[int, int]:
    check_target_dtype(target, labels.dtype)
    counts: Counter[int] = Counter()
    for chunk in labels.chunks():
        if chunk.size:
            check_target_range(target, int(chunk.min()), int(chunk.max()))
        values, found = np.unique(chunk, return_counts=True)
        counts.update({int(v): int(c) for v, c in zip(values, found, strict=True)})
    if target == "masks":
        counts.pop(IGNORE_INDEX, None)
    return dict(sorted(counts.items()))


def scan_labelled(path: Path, max_array_bytes: int | None = None) -> DatasetSummary:
    """An npz (no pickles) or safetensors file holding `images` and `labels` (or `masks`), checked as
    `read_labelled` checks it, with memory bounded by a few CHUNK_BYTES whatever its size."""
    with path.open("rb") as handle:
        is_npz = handle.read(4) == b"PK\x03\x04"
    try:
        if is_npz:
            arrays, present = _npz_arrays(path, max_array_bytes)
        else:
            arrays = _safetensors_arrays(path, max_array_bytes)
            present = list(arrays)
        if "images" not in arrays:
            raise DatasetFormatError(
                f"the file lacks array(s) ['images']; it has {sorted(present)}"
            )
        target = target_array(list(arrays))
        images, labels = arrays["images"], arrays[target]
        shape = _check_images(images, labels, target)
        class_counts = _count_labels(labels, target)
    except DatasetFormatError:
        raise
    except Exception as error:  # a damaged archive fails in many ways (zlib, CRC, tokenize)
        if is_npz:
            raise DatasetFormatError(f"unreadable npz ({type(error).__name__}: {error})") from None
        raise DatasetFormatError(f"neither an npz nor a safetensors file ({error})") from None
    return DatasetSummary(
        format="npz" if is_npz else "safetensors",
        num_examples=shape[0],
        image_shape=(int(shape[1]), int(shape[2]), int(shape[3])),
        pixel_dtype=str(images.dtype),
        class_counts=class_counts,
        task_type=TASK_OF_TARGET_ARRAY[target],
    )
