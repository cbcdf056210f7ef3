"""Loading weights into registry models safely (safetensors only: no code runs) and checking them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save
from torch import nn

from core.segmentation import expected_logits_shape


class WeightsError(ValueError):
    """The weights cannot be used with the chosen architecture; the message says why."""


@dataclass
class StateDictMismatch:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)
    wrong_dtype: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape or self.wrong_dtype)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for label, names in (
            ("missing tensors", self.missing),
            ("unexpected tensors", self.unexpected),
            ("tensors of the wrong shape", self.wrong_shape),
            ("tensors of the wrong kind of dtype", self.wrong_dtype),
        ):
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{label}: {', '.join(names[:limit])}{more}")
        return "; ".join(parts)


DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
# A header lists each tensor's name, dtype, shape and offsets, ~100 bytes a tensor: 1 MiB holds
# ~10 000 tensors, far more than any registry model has. Longer ones are refused before being read.
MAX_HEADER_BYTES = 1024 * 1024


def validate_safetensors(data: bytes | Path) -> None:
    """Check a safetensors file's header against its size before anything is allocated: header
    length, dtypes, shape x dtype = byte count, offsets inside the data, no overlaps or gaps."""
    if isinstance(data, Path):
        size = data.stat().st_size
        with data.open("rb") as handle:
            prefix = handle.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            header_bytes = handle.read(min(max(length, 0), MAX_HEADER_BYTES))
    else:
        size = len(data)
        length = int.from_bytes(data[:8], "little") if size >= 8 else -1
        header_bytes = data[8 : 8 + min(max(length, 0), MAX_HEADER_BYTES)]
    if length > MAX_HEADER_BYTES and 8 + length <= size:
        raise WeightsError(
            f"the safetensors header is {length} bytes, more than the {MAX_HEADER_BYTES} allowed"
        )
    if length < 2 or 8 + length > size:
        raise WeightsError("not a safetensors file: its header length does not fit the file")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightsError("not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise WeightsError("not a safetensors file: its header is not a JSON object")
    data_size = size - 8 - length
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES:
            raise WeightsError(
                f"tensor {name!r}: unknown dtype {info.get('dtype') if isinstance(info, dict) else info!r}"
            )
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise WeightsError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
        ):
            raise WeightsError(f"tensor {name!r}: bad data_offsets {offsets!r}")
        start, end = offsets
        expected = math.prod(shape) * DTYPE_BYTES[info["dtype"]]
        if not 0 <= start <= end <= data_size or end - start != expected:
            raise WeightsError(
                f"tensor {name!r}: {info['dtype']}{shape} needs {expected} bytes but its offsets "
                f"{offsets} do not fit the {data_size} bytes of data"
            )
        spans.append((start, end, name))
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise WeightsError(
                f"tensor {name!r} overlaps another or leaves a gap at byte {position}"
            )
        position = end
    if position != data_size:
        raise WeightsError(f"the file holds {data_size - position} bytes that belong to no tensor")


TORCH_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3": torch.float8_e4m3fn, "I16": torch.int16, "U16": torch.uint16, "F16": torch.float16,
    "BF16": torch.bfloat16, "I32": torch.int32, "U32": torch.uint32, "F32": torch.float32,
    "I64": torch.int64, "U64": torch.uint64, "F64": torch.float64,
}  # fmt: skip
SCAN_CHUNK_BYTES = 4 * 1024 * 1024


def safetensors_header(path: Path) -> tuple[int, dict[str, dict]]:
    """(offset of the data section, tensor entries) of a file validate_safetensors accepted."""
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return 8 + length, header


def header_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors as meta tensors (name, shape, dtype) read from its header alone: what
    compare_state_dict needs, with no byte of the weights in memory."""
    validate_safetensors(path)
    _, header = safetensors_header(path)
    return {
        name: torch.empty(info["shape"], dtype=TORCH_DTYPES[info["dtype"]], device="meta")
        for name, info in header.items()
    }


def tensor_chunks(
    path: Path, names: list[str], chunk_bytes: int = SCAN_CHUNK_BYTES
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, values) for each tensor of `names` in turn, its values read in whole elements into
    one reused buffer of `chunk_bytes` (each yielded tensor is a view of it, valid until the next
    one): memory stays flat whatever the file's size. The file must have passed
    validate_safetensors."""
    data_start, header = safetensors_header(path)
    buffer = bytearray(max(chunk_bytes, 8))
    with path.open("rb") as handle:
        for name in names:
            info = header[name]
            dtype = TORCH_DTYPES[info["dtype"]]
            width = DTYPE_BYTES[info["dtype"]]
            step = len(buffer) // width * width
            start, end = info["data_offsets"]
            handle.seek(data_start + start)
            remaining = end - start
            while remaining > 0:
                read = handle.readinto(memoryview(buffer)[: min(step, remaining)])
                if not read:
                    raise WeightsError(f"tensor {name}: the file ends inside its data")
                remaining -= read
                yield name, torch.frombuffer(buffer, dtype=dtype, count=read // width)


def scan_finite(path: Path, chunk_bytes: int = SCAN_CHUNK_BYTES) -> None:
    """Raise if a floating-point tensor holds NaN or inf, read in chunks (flat memory)."""
    _, header = safetensors_header(path)
    floats = [n for n, info in header.items() if TORCH_DTYPES[info["dtype"]].is_floating_point]
    for name, values in tensor_chunks(path, floats, chunk_bytes):
        if values.element_size() == 1:  # float8: no isfinite kernel; widen the chunk
            values = values.float()
        if not torch.isfinite(values).all():
            raise WeightsError(f"tensor {name} holds NaN or infinite values")


def check_weights_file(model: nn.Module, path: Path) -> None:
    """Everything load_weights checks, in flat memory: the header against `model`'s state dict
    (which may live on the meta device) and every float tensor finite, scanned in chunks."""
    mismatch = compare_state_dict(model, header_tensors(path))
    if mismatch:
        raise WeightsError(f"weights do not fit the architecture: {mismatch.describe()}")
    scan_finite(path)


def read_state_dict(source: Path | bytes) -> dict[str, torch.Tensor]:
    validate_safetensors(source)
    try:
        return load(source) if isinstance(source, bytes) else load_file(str(source))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"not a readable safetensors file ({error})") from error


def state_dict_bytes(model: nn.Module) -> bytes:
    return save(
        {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    )


def compare_state_dict(model: nn.Module, weights: dict[str, torch.Tensor]) -> StateDictMismatch:
    expected = model.state_dict()
    mismatch = StateDictMismatch(
        missing=sorted(set(expected) - set(weights)),
        unexpected=sorted(set(weights) - set(expected)),
    )
    for name in sorted(set(expected) & set(weights)):
        if tuple(expected[name].shape) != tuple(weights[name].shape):
            mismatch.wrong_shape.append(
                f"{name} (expected {list(expected[name].shape)}, got {list(weights[name].shape)})"
            )
        if expected[name].is_floating_point() != weights[name].is_floating_point():
            # float16/bfloat16/float64 weights convert losslessly enough; integer or bool ones are
            # not weights of this network (and would silently become whole numbers)
            mismatch.wrong_dtype.append(
                f"{name} (expected {_kind(expected[name])}, got {weights[name].dtype})"
            )
    return mismatch


def _kind(tensor: torch.Tensor) -> str:
    return "a floating-point dtype" if tensor.is_floating_point() else f"{tensor.dtype}"


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Strict load that names every tensor that does not fit."""
    mismatch = compare_state_dict(model, weights)
    if mismatch:
        raise WeightsError(f"weights do not fit the architecture: {mismatch.describe()}")
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"tensor {name} holds NaN or infinite values")
    model.load_state_dict(weights, strict=True)
    return model


FORWARD_CHECK_BATCH = 2


def check_forward(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    task_type: str = "classification",
) -> None:
    """One forward pass on a dummy batch must give [batch, num_classes] logits, or per-pixel
    [batch, num_classes, H, W] ones at the input's size for a segmentation network."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(FORWARD_CHECK_BATCH, *input_shape))
    except Exception as error:  # a user's model can fail in any way; report it, do not crash
        raise WeightsError(
            f"forward pass on a dummy batch of shape [2, {', '.join(map(str, input_shape))}] failed: {error}"
        ) from error
    finally:
        model.train(was_training)
    expected = expected_logits_shape(FORWARD_CHECK_BATCH, num_classes, input_shape, task_type)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        meaning = "(batch, classes, height, width)" if len(expected) == 4 else "(batch, classes)"
        raise WeightsError(f"forward pass gave {shape}, expected {list(expected)} {meaning}")


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
