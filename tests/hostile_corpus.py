"""A corpus of hostile and broken requests, built from scratch: each case is one request the API
must refuse with a 4xx, a JSON {"error": {"code", "message"}}, and nothing stored.

`CASES` maps a case id to a builder taking the run's `Context` (ids of seeded objects, the path of
a marker file that unpickling a booby-trapped payload would create). `python -m tests.hostile_corpus`
prints the table of docs/reliability.md from the declared expectations.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy_format
import torch
from safetensors.torch import save

from core.models import build
from tests import onnx_graphs

TEACHERS = "/v1/teachers"
DATASETS = "/v1/datasets"
JOBS = "/v1/jobs"
BOUNDARY = "hostile-boundary"


@dataclass(frozen=True)
class Context:
    marker: Path  # unpickling a booby-trapped payload would create this file
    upload_limit: int
    teacher_id: str  # a lenet5 teacher of the default tenant
    program_teacher_id: str  # a torchscript teacher of the default tenant
    other_tenant_key: str  # an API key of another tenant
    job_id: str = "job_nope"  # a queued job of the default tenant
    quota_tenant_key: str = "dfkd_x"  # a tenant at its quotas: 1 active job, storage full
    quota_teacher_id: str = "tch_full"  # that tenant's teacher (its storage to the byte)


@dataclass(frozen=True)
class Hostile:
    """One request and the refusal it must get."""

    method: str
    path: str
    status: int
    code: str
    fragment: str = ""  # must appear in the error message
    files: dict[str, tuple[str, bytes]] | None = None
    data: dict[str, str] | None = None
    content: bytes | Iterator[bytes] | None = None
    json_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    huge_claim: bool = False  # claims far more memory than it holds: must be refused unallocated
    runs_code: bool = False  # unpickling it would create Context.marker


Builder = Callable[[Context], Hostile]
CASES: dict[str, Builder] = {}


def case(name: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        assert name not in CASES, name
        CASES[name] = builder
        return builder

    return register


# --- payloads


class Booby:
    """Unpickling this creates the marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def lenet5_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build("lenet5").state_dict()


def good_weights() -> bytes:
    return save(lenet5_weights())


def forge(header: Any, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def header_bitflip(seed: int) -> bytes:
    """One bit flipped at a random place in the 8-byte length or the JSON header."""
    content = bytearray(good_weights())
    header_end = 8 + int.from_bytes(content[:8], "little")
    rng = random.Random(seed)
    position = rng.randrange(header_end)
    content[position] ^= 1 << rng.randrange(8)
    return bytes(content)


def with_infinite_weight() -> bytes:
    """The exponent bits of one weight flipped to all ones: +inf."""
    weights = lenet5_weights()
    weights["block1.0.weight"].view(-1)[3] = float("inf")
    return save(weights)


def torch_save(value: Any, zip_format: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def npz_of_zeros(count: int, side: int) -> Hostile:
    """A dataset of `count` blank side x side images: a zip bomb (zeros deflate ~1000x)."""
    images = np.zeros((count, 1, side, side), np.uint8)
    content = npz(images=images, labels=np.zeros(count, np.int64))
    return replace(dataset(content, fragment="zip bomb"), huge_claim=True)


def digits(count: int = 8) -> dict[str, np.ndarray]:
    return {
        "images": np.zeros((count, 1, 32, 32), np.uint8),
        "labels": np.arange(count, dtype=np.int64) % 10,
    }


def npz_bitflip() -> bytes:
    """One bit flipped in the middle of the compressed images: a CRC or inflate error."""
    content = bytearray(npz(**digits()))
    with zipfile.ZipFile(io.BytesIO(bytes(content))) as archive:
        info = archive.getinfo("images.npy")
    name_length, extra_length = struct.unpack(
        "<HH", content[info.header_offset + 26 : info.header_offset + 30]
    )
    data_start = info.header_offset + 30 + name_length + extra_length
    content[data_start + info.compress_size // 2] ^= 0x10
    return bytes(content)


def stored_npz(**arrays: np.ndarray) -> bytes:
    """An npz whose members are stored, not deflated: its values lie in the file as they are."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_stored_bitflip() -> bytes:
    """One bit flipped in a stored member's values: still a valid .npy, only the CRC can tell (a
    streaming check must read the member to its end)."""
    content = bytearray(stored_npz(**digits(64)))
    with zipfile.ZipFile(io.BytesIO(bytes(content))) as archive:
        info = archive.getinfo("images.npy")
    name_length, extra_length = struct.unpack(
        "<HH", content[info.header_offset + 26 : info.header_offset + 30]
    )
    content[info.header_offset + 30 + name_length + extra_length + info.file_size - 1] ^= 0x10
    return bytes(content)


def last_value_bad(name: str) -> dict[str, np.ndarray]:
    """800 KB of sound float images and labels (under the tests' 1 MiB array cap), but for the
    very last image's last pixel (NaN) or the very last label (-1): a check that stops early
    lets it through."""
    arrays = {"images": np.zeros((200, 1, 32, 32), np.float32), "labels": np.zeros(200, np.int64)}
    arrays[name].reshape(-1)[-1] = np.nan if name == "images" else -1
    return arrays


def npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def multipart(fields: dict[str, str], file: tuple[str, bytes] | None) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    if file is not None:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{file[0]}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
            + file[1]
            + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def chunks(content: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(content), size):
        yield content[start : start + size]


def teacher(content: bytes, status: int, code: str, fragment: str = "", **extra: Any) -> Hostile:
    data = {"architecture": "lenet5", **extra.pop("data", {})}
    return Hostile(
        "POST",
        TEACHERS,
        status,
        code,
        fragment,
        files={"file": ("teacher.safetensors", content)},
        data=data,
        **extra,
    )


def weights_field(name: str, value: str, code: str, fragment: str) -> Builder:
    return lambda _: teacher(good_weights(), 422, code, fragment, data={name: value})


def program(content: bytes, code: str, fragment: str, fmt: str = "torchscript") -> Hostile:
    data = {"format": fmt, "input_shape": "[1, 32, 32]", "num_classes": "10"}
    return Hostile(
        "POST", TEACHERS, 422, code, fragment, files={"file": ("t.pt", content)}, data=data
    )


def dataset(content: bytes, code: str = "invalid_dataset", fragment: str = "") -> Hostile:
    return Hostile("POST", DATASETS, 422, code, fragment, files={"file": ("set.npz", content)})


def job(ctx: Context, status: int, code: str, fragment: str = "", **changes: Any) -> Hostile:
    body: dict[str, Any] = {
        "teacher_id": ctx.teacher_id,
        "student": {"architecture": "lenet5_half"},
        "iterations": 10,
        "batch_size": 8,
    }
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return Hostile("POST", JOBS, status, code, fragment, json_body=body)


# --- safetensors teachers: broken and hostile files

case("teacher/empty-file")(lambda _: teacher(b"", 422, "empty_file", "empty"))
case("teacher/truncated-data")(
    lambda _: teacher(good_weights()[:-100], 422, "invalid_weights", "do not fit")
)
case("teacher/truncated-header")(
    lambda _: teacher(good_weights()[:40], 422, "invalid_weights", "header length")
)
for _seed in range(6):
    case(f"teacher/bitflip-header-{_seed}")(
        lambda _, seed=_seed: teacher(header_bitflip(seed), 422, "invalid_weights")
    )
case("teacher/bitflip-weight-to-inf")(
    lambda _: teacher(with_infinite_weight(), 422, "invalid_weights", "NaN or infinite")
)
case("teacher/header-length-past-file")(
    lambda _: teacher(
        struct.pack("<Q", 10**12) + good_weights()[8:], 422, "invalid_weights", "header length"
    )
)
case("teacher/header-claims-1e18-elements")(
    lambda _: teacher(
        forge(
            {"x": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 16]}}, b"\0" * 16
        ),
        422,
        "invalid_weights",
        "needs",
        huge_claim=True,
    )
)
case("teacher/header-claims-1TiB-tensor")(
    lambda _: teacher(
        forge({"x": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}}, b"\0" * 64),
        422,
        "invalid_weights",
        "do not fit",
        huge_claim=True,
    )
)
case("teacher/unknown-dtype")(
    lambda _: teacher(
        forge({"x": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
        422,
        "invalid_weights",
        "unknown dtype",
    )
)
case("teacher/negative-shape")(
    lambda _: teacher(
        forge({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
        422,
        "invalid_weights",
        "not a list of sizes",
    )
)
case("teacher/overlapping-offsets")(
    lambda _: teacher(
        forge(
            {
                "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
        ),
        422,
        "invalid_weights",
        "overlaps",
    )
)
case("teacher/bytes-outside-tensors")(
    lambda _: teacher(
        forge({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 40),
        422,
        "invalid_weights",
        "belong to no tensor",
    )
)
case("teacher/header-not-an-object")(
    lambda _: teacher(forge([1, 2], b""), 422, "invalid_weights", "not a JSON object")
)
case("teacher/header-not-utf8")(
    lambda _: teacher(struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc", 422, "invalid_weights", "JSON")
)
case("teacher/wrong-shapes")(
    lambda _: teacher(
        save(build("lenet5_half").state_dict()), 422, "invalid_weights", "wrong shape"
    )
)
case("teacher/wrong-dtype-int32")(
    lambda _: teacher(
        save({k: v.to(torch.int32) for k, v in lenet5_weights().items()}),
        422,
        "invalid_weights",
        "wrong kind of dtype",
    )
)
case("teacher/missing-tensor")(
    lambda _: teacher(
        save({k: v for k, v in lenet5_weights().items() if k != "classifier.3.bias"}),
        422,
        "invalid_weights",
        "missing tensors: classifier.3.bias",
    )
)

# --- pickles, plain and booby-trapped, never loaded

case("teacher/pickle-protocol-2")(
    lambda _: teacher(pickle.dumps({"w": [1.0]}, protocol=2), 422, "pickle_refused", "save_file")
)
case("teacher/pickle-protocol-5")(
    lambda _: teacher(pickle.dumps({"w": [1.0]}, protocol=5), 422, "pickle_refused", "save_file")
)
case("teacher/pickle-that-runs-code")(
    lambda ctx: teacher(
        pickle.dumps(Booby(ctx.marker)), 422, "pickle_refused", "never loaded", runs_code=True
    )
)
case("teacher/torch-save-zip")(
    lambda _: teacher(torch_save(lenet5_weights()), 422, "pickle_refused", "torch.save")
)
case("teacher/torch-save-legacy")(
    lambda _: teacher(torch_save(lenet5_weights(), zip_format=False), 422, "pickle_refused")
)
case("teacher/torch-save-zip-that-runs-code")(
    lambda ctx: teacher(
        torch_save({"weight": Booby(ctx.marker)}), 422, "pickle_refused", runs_code=True
    )
)

# --- size cap

case("teacher/oversized")(
    lambda ctx: teacher(b"\0" * (ctx.upload_limit + 1), 413, "upload_too_large", "limit")
)
case("teacher/oversized-chunked")(
    lambda ctx: Hostile(
        "POST",
        TEACHERS,
        413,
        "upload_too_large",
        "limit",
        content=chunks(
            multipart({"architecture": "lenet5"}, ("t", b"\0" * (ctx.upload_limit + 1)))
        ),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
)
case("dataset/oversized")(
    lambda ctx: Hostile(
        "POST",
        DATASETS,
        413,
        "upload_too_large",
        "limit",
        files={"file": ("set.npz", b"\0" * (ctx.upload_limit + 1))},
    )
)

# --- form fields

case("teacher/architecture-missing")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_architecture",
        "required",
        files={"file": ("t", good_weights())},
    )
)
case("teacher/architecture-unknown")(
    weights_field("architecture", "vgg99", "invalid_architecture", "vgg99")
)
case("teacher/format-unknown")(weights_field("format", "tflite", "unsupported_format", "tflite"))
case("teacher/kwargs-not-json")(
    weights_field("architecture_kwargs", "{nope", "invalid_form_field", "JSON")
)
case("teacher/kwargs-a-list")(
    weights_field("architecture_kwargs", "[1]", "invalid_form_field", "JSON object")
)
case("teacher/kwargs-unknown-argument")(
    weights_field("architecture_kwargs", '{"depth": 3}', "invalid_architecture", "depth")
)
case("teacher/kwargs-negative-classes")(
    weights_field(
        "architecture_kwargs", '{"num_classes": -3}', "invalid_architecture", "from 2 to 100000"
    )
)
case("teacher/kwargs-string-classes")(
    weights_field(
        "architecture_kwargs", '{"num_classes": "ten"}', "invalid_architecture", "num_classes"
    )
)
case("teacher/kwargs-1e9-classes")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "num_classes must be from 2 to 100000, got 1000000000",
        data={"architecture_kwargs": '{"num_classes": 1000000000}'},
        huge_claim=True,
    )
)
case("teacher/input-mean-not-json")(
    weights_field("input_mean", "[0.1", "invalid_form_field", "numbers")
)
case("teacher/input-mean-nan")(weights_field("input_mean", "[NaN]", "invalid_form_field", "finite"))
case("teacher/input-std-infinity")(
    weights_field("input_std", "[Infinity]", "invalid_form_field", "finite")
)
case("teacher/input-std-zero")(weights_field("input_std", "[0]", "invalid_form_field", "positive"))
case("teacher/input-mean-two-values")(
    weights_field("input_mean", "[0.1, 0.2]", "invalid_form_field", "needs 1 value")
)
case("teacher/input-mean-nested")(
    weights_field("input_mean", "[[0.1]]", "invalid_form_field", "numbers")
)
case("teacher/input-mean-object")(
    weights_field("input_mean", '{"a": 1}', "invalid_form_field", "numbers")
)
case("teacher/name-too-long")(weights_field("name", "x" * 201, "validation_error", "name"))

# --- bodies that are not the multipart form

case("teacher/json-body")(
    lambda _: Hostile(
        "POST", TEACHERS, 422, "validation_error", "file", json_body={"architecture": "lenet5"}
    )
)
case("teacher/text-body")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "validation_error",
        "file",
        content=b"architecture=lenet5",
        headers={"content-type": "text/plain"},
    )
)
case("teacher/raw-octet-stream")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "validation_error",
        "file",
        content=good_weights(),
        headers={"content-type": "application/octet-stream"},
    )
)
case("teacher/urlencoded-file-as-text")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "validation_error",
        "UploadFile",
        content=b"architecture=lenet5&file=abc",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
)
case("teacher/multipart-without-boundary")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        400,
        "malformed_body",
        "boundary",
        content=b"--x\r\n",
        headers={"content-type": "multipart/form-data"},
    )
)
case("teacher/multipart-broken")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        400,
        "malformed_body",
        "could not be parsed",
        content=b"this is not multipart at all",
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
)

# --- activation records (lopes metadata)

case("teacher/metadata-garbage")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_metadata",
        "safetensors",
        files={"file": ("t", good_weights()), "metadata": ("m", b"garbage" * 10)},
        data={"architecture": "lenet5"},
    )
)
case("teacher/metadata-pickle-that-runs-code")(
    lambda ctx: Hostile(
        "POST",
        TEACHERS,
        422,
        "pickle_refused",
        "never loaded",
        files={"file": ("t", good_weights()), "metadata": ("m", pickle.dumps(Booby(ctx.marker)))},
        data={"architecture": "lenet5"},
        runs_code=True,
    )
)
case("teacher/metadata-plain-weights")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_metadata",
        "not a metadata record",
        files={"file": ("t", good_weights()), "metadata": ("m", good_weights())},
        data={"architecture": "lenet5"},
    )
)
case("teacher/metadata-header-claims-1TiB")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_metadata",
        "",
        files={
            "file": ("t", good_weights()),
            "metadata": (
                "m",
                forge(
                    {"x": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}},
                    b"\0" * 64,
                ),
            ),
        },
        data={"architecture": "lenet5"},
        huge_claim=True,
    )
)
case("metadata-put/unknown-teacher")(
    lambda _: Hostile(
        "PUT",
        f"{TEACHERS}/tch_nope/metadata",
        404,
        "not_found",
        "tch_nope",
        files={"metadata": ("m", b"x")},
    )
)
case("metadata-put/garbage")(
    lambda ctx: Hostile(
        "PUT",
        f"{TEACHERS}/{ctx.teacher_id}/metadata",
        422,
        "invalid_metadata",
        "",
        files={"metadata": ("m", b"garbage" * 10)},
    )
)
case("metadata-put/empty-file")(
    lambda ctx: Hostile(
        "PUT",
        f"{TEACHERS}/{ctx.teacher_id}/metadata",
        422,
        "empty_file",
        "empty",
        files={"metadata": ("m", b"")},
    )
)
case("metadata-put/pickle-that-runs-code")(
    lambda ctx: Hostile(
        "PUT",
        f"{TEACHERS}/{ctx.teacher_id}/metadata",
        422,
        "pickle_refused",
        "never loaded",
        files={"metadata": ("m", pickle.dumps(Booby(ctx.marker)))},
        runs_code=True,
    )
)
case("metadata-put/program-teacher")(
    lambda ctx: Hostile(
        "PUT",
        f"{TEACHERS}/{ctx.program_teacher_id}/metadata",
        422,
        "invalid_metadata",
        "registry architecture",
        files={"metadata": ("m", good_weights())},
    )
)
case("metadata-put/oversized")(
    lambda ctx: Hostile(
        "PUT",
        f"{TEACHERS}/{ctx.teacher_id}/metadata",
        413,
        "upload_too_large",
        "limit",
        files={"metadata": ("m", b"\0" * (ctx.upload_limit + 1))},
    )
)

# --- program teachers (torchscript / torch_export, allowed in this run)

case("program/torchscript-zip-bomb")(
    lambda _: program(zip_of({"model/data.pkl": b"\0" * 3_000_000}), "invalid_program", "zip bomb")
)
case("program/torch-export-zip-bomb")(
    lambda _: program(
        zip_of({"model/data.bin": b"\0" * 3_000_000}), "invalid_program", "zip bomb", "torch_export"
    )
)
case("program/unpacks-past-the-limit")(
    lambda _: program(
        zip_of({f"part{i}": b"\0" * 1_000_000 for i in range(12)}), "invalid_program", "unpacks to"
    )
)
case("program/ten-thousand-entries")(
    lambda _: program(
        zip_of({f"{i}": b"" for i in range(10_001)}, zipfile.ZIP_STORED),
        "invalid_program",
        "entries",
    )
)
case("program/not-a-zip")(lambda _: program(b"\x00" * 64, "invalid_program", "not a zip"))
case("program/pickle-that-runs-code")(
    lambda ctx: replace(
        program(pickle.dumps(Booby(ctx.marker)), "invalid_program", "not a zip"), runs_code=True
    )
)
case("program/missing-input-shape")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_form_field",
        "input_shape",
        files={"file": ("t.pt", zip_of({"a": b"1"}))},
        data={"format": "torchscript", "num_classes": "10"},
    )
)
case("program/input-shape-two-dims")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_form_field",
        "input_shape",
        files={"file": ("t.pt", zip_of({"a": b"1"}))},
        data={"format": "torchscript", "input_shape": "[1, 32]", "num_classes": "10"},
    )
)
case("program/with-metadata")(
    lambda _: Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_metadata",
        "registry architecture",
        files={"file": ("t.pt", zip_of({"a": b"1"})), "metadata": ("m", good_weights())},
        data={"format": "torchscript", "input_shape": "[1, 32, 32]", "num_classes": "10"},
    )
)

# --- ONNX teachers and library architectures (issue 14): graphs refused before they run, and
# nothing fetched or read at run time


def onnx_teacher(content: bytes, fragment: str) -> Hostile:
    return Hostile(
        "POST",
        TEACHERS,
        422,
        "invalid_onnx",
        fragment,
        files={"file": ("teacher.onnx", content)},
        data={"format": "onnx"},
    )


case("teacher/onnx-unknown-domain-operator")(
    lambda _: onnx_teacher(
        onnx_graphs.unknown_domain_operator(), "Mystery (domain 'com.example.secret')"
    )
)
case("teacher/onnx-fixed-batch")(
    lambda _: onnx_teacher(onnx_graphs.fixed_batch(), "fixed batch of 4")
)
case("teacher/onnx-two-inputs")(lambda _: onnx_teacher(onnx_graphs.two_inputs(), "2 inputs"))
case("teacher/onnx-truncated-protobuf")(
    lambda _: onnx_teacher(onnx_graphs.truncated(), "not a readable ONNX model")
)
case("teacher/onnx-external-data-escapes")(
    lambda _: onnx_teacher(onnx_graphs.external_data("../../etc/passwd"), "outside the model")
)
case("teacher/onnx-a-safetensors-file")(
    lambda _: onnx_teacher(good_weights(), "not a readable ONNX model")
)
case("teacher/timm-pretrained-true")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "'pretrained' is refused",
        data={"architecture": "timm:resnet18", "architecture_kwargs": '{"pretrained": true}'},
    )
)
case("teacher/torchvision-weights-argument")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "'weights' is refused",
        data={
            "architecture": "torchvision:resnet18",
            "architecture_kwargs": '{"weights": "DEFAULT"}',
        },
    )
)
case("teacher/library-unknown-model")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "timm has no model",
        data={"architecture": "timm:nope"},
    )
)
case("teacher/library-unknown-library")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "unknown architecture library",
        data={"architecture": "keras:resnet50"},
    )
)
case("teacher/library-weights-of-another-network")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_weights",
        "missing tensors",
        data={"architecture": "timm:test_resnet", "input_shape": "[3, 32, 32]"},
    )
)
case("job/timm-student-pretrained-true")(
    lambda ctx: job(
        ctx,
        422,
        "invalid_architecture",
        "'pretrained' is refused",
        student={"architecture": "timm:test_resnet", "kwargs": {"pretrained": True}},
    )
)
case("job/timm-student-checkpoint-path")(
    lambda ctx: job(
        ctx,
        422,
        "invalid_architecture",
        "'checkpoint_path' is refused",
        student={"architecture": "timm:test_resnet", "kwargs": {"checkpoint_path": "/etc/passwd"}},
    )
)


# --- datasets

case("dataset/empty-file")(lambda _: dataset(b"", fragment="neither an npz nor a safetensors"))
case("dataset/npz-object-array-that-runs-code")(
    lambda ctx: replace(
        dataset(
            npz(
                images=np.array([Booby(ctx.marker)] * 2, dtype=object),
                labels=np.zeros(2, np.int64),
            ),
            fragment="pickle",
        ),
        runs_code=True,
    )
)
case("dataset/pickle-that-runs-code")(
    lambda ctx: replace(dataset(pickle.dumps(Booby(ctx.marker))), runs_code=True)
)
case("dataset/torch-save-zip")(lambda _: dataset(torch_save(digits()), fragment="lacks"))
case("dataset/npz-truncated")(lambda _: dataset(npz(**digits())[:300], fragment="unreadable npz"))
case("dataset/npz-bitflipped")(lambda _: dataset(npz_bitflip(), fragment="unreadable npz"))
case("dataset/npz-bomb")(lambda _: npz_of_zeros(20_000, 64))
case("dataset/npy-header-claims-40TB")(
    lambda _: replace(
        dataset(
            zip_of(
                {
                    "images.npy": npy_header_only((10**7, 1, 1000, 1000)) + b"\0" * 100,
                    "labels.npy": npy_header_only((8,), "<i8") + b"\0" * 64,
                }
            ),
            fragment="declares shape",
        ),
        huge_claim=True,
    )
)
case("dataset/safetensors-header-claims-1TiB")(
    lambda _: replace(
        dataset(
            forge(
                {"images": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 2**40]}},
                b"\0" * 64,
            )
        ),
        huge_claim=True,
    )
)
case("dataset/images-labels-count-mismatch")(
    lambda _: dataset(
        npz(images=digits(8)["images"], labels=np.zeros(5, np.int64)), fragment="one per image"
    )
)
case("dataset/images-int32")(
    lambda _: dataset(
        npz(images=np.zeros((4, 1, 32, 32), np.int32), labels=np.zeros(4, np.int64)),
        fragment="uint8",
    )
)
case("dataset/labels-float")(
    lambda _: dataset(
        npz(images=digits(4)["images"], labels=np.zeros(4, np.float32)), fragment="integers"
    )
)
case("dataset/labels-negative")(
    lambda _: dataset(
        npz(images=digits(4)["images"], labels=-np.ones(4, np.int64)), fragment=">= 0"
    )
)
case("dataset/images-5d")(
    lambda _: dataset(
        npz(images=np.zeros((2, 1, 1, 8, 8), np.uint8), labels=np.zeros(2, np.int64)),
        fragment="[N, C, H, W]",
    )
)
case("dataset/images-nan")(
    lambda _: dataset(
        npz(images=np.full((2, 1, 8, 8), np.nan, np.float32), labels=np.zeros(2, np.int64)),
        fragment="NaN",
    )
)
case("dataset/no-images")(
    lambda _: dataset(
        npz(images=np.zeros((0, 1, 8, 8), np.uint8), labels=np.zeros(0, np.int64)),
        fragment="no images",
    )
)
case("dataset/labels-missing")(lambda _: dataset(npz(images=digits(4)["images"]), fragment="lacks"))
case("dataset/npz-stored-values-bitflipped")(
    lambda _: dataset(npz_stored_bitflip(), fragment="unreadable npz")
)
case("dataset/images-nan-in-the-last-value")(
    lambda _: dataset(stored_npz(**last_value_bad("images")), fragment="NaN")
)
case("dataset/labels-negative-in-the-last-value")(
    lambda _: dataset(
        save({k: torch.from_numpy(v) for k, v in last_value_bad("labels").items()}),
        fragment=">= 0",
    )
)
case("dataset/name-too-long")(
    lambda _: Hostile(
        "POST",
        DATASETS,
        422,
        "validation_error",
        "name",
        files={"file": ("set.npz", npz(**digits()))},
        data={"name": "x" * 201},
    )
)
case("dataset/json-body")(
    lambda _: Hostile("POST", DATASETS, 422, "validation_error", "file", json_body={"images": [1]})
)

# --- job specs

case("job/unknown-method")(
    lambda ctx: job(ctx, 422, "validation_error", "method must be", method="dream")
)
case("job/negative-iterations")(
    lambda ctx: job(ctx, 422, "validation_error", "iterations", iterations=-5)
)
case("job/zero-iterations")(
    lambda ctx: job(ctx, 422, "validation_error", "iterations", iterations=0)
)
case("job/iterations-past-the-maximum")(
    lambda ctx: job(ctx, 422, "validation_error", "iterations", iterations=10**12)
)
case("job/batch-size-one")(
    lambda ctx: job(ctx, 422, "validation_error", "batch_size", batch_size=1)
)
case("job/iterations-a-string")(
    lambda ctx: job(ctx, 422, "validation_error", "iterations", iterations="many")
)
case("job/negative-seed")(lambda ctx: job(ctx, 422, "validation_error", "seed", seed=-1))
case("job/unknown-field")(lambda ctx: job(ctx, 422, "validation_error", "epochs", epochs=3))
case("job/hyperparameter-out-of-range")(
    lambda ctx: job(ctx, 422, "validation_error", "z_dim", hyperparameters={"z_dim": 0})
)
case("job/unknown-hyperparameter")(
    lambda ctx: job(ctx, 422, "validation_error", "warp", hyperparameters={"warp": 9})
)
case("job/teacher-missing")(
    lambda ctx: job(ctx, 422, "validation_error", "teacher_id", teacher_id=None)
)
case("job/teacher-unknown")(
    lambda ctx: job(ctx, 422, "teacher_not_found", "tch_nope", teacher_id="tch_nope")
)
case("job/teacher-of-another-tenant")(
    lambda ctx: replace(
        job(ctx, 422, "teacher_not_found", ctx.teacher_id),
        headers={"authorization": f"Bearer {ctx.other_tenant_key}"},
    )
)
case("job/bad-api-key")(
    lambda ctx: replace(
        job(ctx, 401, "invalid_api_key", "unknown"),
        headers={"authorization": "Bearer dfkd_not_a_key"},
    )
)
case("job/student-architecture-unknown")(
    lambda ctx: job(
        ctx, 422, "invalid_architecture", "resnet9000", student={"architecture": "resnet9000"}
    )
)
case("job/student-kwargs-negative-classes")(
    lambda ctx: job(
        ctx,
        422,
        "invalid_architecture",
        "num_classes must be from 2 to 100000, got -1",
        student={"architecture": "lenet5_half", "kwargs": {"num_classes": -1}},
    )
)
case("job/student-kwargs-a-string")(
    lambda ctx: job(
        ctx,
        422,
        "invalid_architecture",
        "image_size",
        student={"architecture": "lenet5_half", "kwargs": {"image_size": "big"}},
    )
)
case("job/student-kwargs-1e9-classes")(
    lambda ctx: replace(
        job(
            ctx,
            422,
            "invalid_architecture",
            "num_classes must be from 2 to 100000",
            student={"architecture": "lenet5_half", "kwargs": {"num_classes": 10**9}},
        ),
        huge_claim=True,
    )
)
case("job/student-other-input-shape")(
    lambda ctx: job(
        ctx,
        422,
        "shape_mismatch",
        "inputs of shape",
        student={"architecture": "lenet5_half", "kwargs": {"in_channels": 3}},
    )
)
case("job/student-unknown-kwarg")(
    lambda ctx: job(
        ctx,
        422,
        "validation_error",
        "student",
        student={"architecture": "lenet5_half", "width": 3},
    )
)
case("job/evaluation-dataset-unknown")(
    lambda ctx: job(ctx, 422, "dataset_not_found", "dst_nope", evaluation_dataset_id="dst_nope")
)
case("job/lopes-without-metadata")(
    lambda ctx: job(ctx, 422, "teacher_has_no_metadata", "record-metadata", method="lopes")
)
case("job/webhook-not-a-url")(
    lambda ctx: job(
        ctx, 422, "validation_error", "webhook", webhook={"url": "not a url", "secret": "s" * 20}
    )
)
case("job/webhook-short-secret")(
    lambda ctx: job(
        ctx,
        422,
        "validation_error",
        "secret",
        webhook={"url": "http://example.com/h", "secret": "x"},
    )
)


def webhook_to(ctx: Context, url: str, code: str, fragment: str) -> Hostile:
    return job(ctx, 422, code, fragment, webhook={"url": url, "secret": "s" * 20})


# server-side request forgery: webhooks to the deployment's own network (service/webhook_targets.py)
for name, url, code, fragment in (
    ("loopback", "http://127.0.0.1:6379/", "webhook_url_refused", "loopback"),
    ("loopback-decimal", "http://2130706433/", "webhook_url_refused", "loopback"),
    ("loopback-octal", "http://0177.0.0.1/", "webhook_url_refused", "loopback"),
    ("loopback-hex", "http://0x7f.1/", "webhook_url_refused", "loopback"),
    ("loopback-ipv6", "http://[::1]/", "webhook_url_refused", "loopback"),
    ("ipv4-mapped-ipv6", "http://[::ffff:10.0.0.1]/", "webhook_url_refused", "private"),
    ("private", "http://192.168.1.1/", "webhook_url_refused", "private"),
    (
        "metadata-ip",
        "http://169.254.169.254/latest/meta-data/",
        "webhook_url_refused",
        "link-local",
    ),
    ("metadata-ipv6", "http://[fd00:ec2::254]/", "webhook_url_refused", "private"),
    ("metadata-name", "http://metadata.google.internal/", "webhook_url_refused", "metadata"),
    ("multicast", "http://224.0.0.1/", "webhook_url_refused", "multicast"),
    ("unspecified", "http://0.0.0.0/", "webhook_url_refused", "unspecified"),
    ("reserved", "http://240.0.0.1/", "webhook_url_refused", "reserved"),
    ("scheme-file", "file:///etc/passwd", "validation_error", "webhook"),
    ("scheme-gopher", "gopher://127.0.0.1:6379/_INFO", "validation_error", "webhook"),
):
    case(f"job/webhook-{name}")(
        lambda ctx, url=url, code=code, fragment=fragment: webhook_to(ctx, url, code, fragment)
    )
case("job/body-not-json")(
    lambda _: Hostile(
        "POST",
        JOBS,
        422,
        "validation_error",
        "JSON",
        content=b"{teacher_id: tch}",
        headers={"content-type": "application/json"},
    )
)
case("job/body-a-list")(
    lambda _: Hostile("POST", JOBS, 422, "validation_error", "", json_body=[1, 2])
)
case("job/body-empty")(
    lambda _: Hostile(
        "POST",
        JOBS,
        422,
        "validation_error",
        "",
        content=b"",
        headers={"content-type": "application/json"},
    )
)
case("job/form-body")(
    lambda ctx: Hostile(
        "POST", JOBS, 422, "validation_error", "", data={"teacher_id": ctx.teacher_id}
    )
)

# --- query parameters and ids

case("list/limit-zero")(
    lambda _: Hostile("GET", f"{TEACHERS}?limit=0", 422, "validation_error", "limit")
)
case("list/cursor-garbage")(
    lambda _: Hostile("GET", f"{JOBS}?after=not-a-cursor", 422, "validation_error", "after")
)
case("list/created-after-not-a-date")(
    lambda _: Hostile(
        "GET", f"{JOBS}?created_after=yesterday", 422, "validation_error", "created_after"
    )
)
case("list/created-after-without-zone")(
    lambda _: Hostile(
        "GET", f"{TEACHERS}?created_after=2026-01-01T00:00:00", 422, "validation_error", "pattern"
    )
)
case("list/created-before-no-such-day")(
    lambda _: Hostile(
        "GET", f"{JOBS}?created_before=2026-02-30T00:00:00Z", 422, "validation_error", "day"
    )
)
case("list/unknown-status")(
    lambda _: Hostile("GET", f"{JOBS}?status=dreaming", 422, "validation_error", "status")
)
case("job/unknown-id")(lambda _: Hostile("GET", f"{JOBS}/job_nope", 404, "not_found", "job_nope"))
case("job/student-format-unknown")(
    lambda _: Hostile(
        "GET", f"{JOBS}/job_nope/student?format=exe", 422, "validation_error", "format"
    )
)
case("job/cancel-unknown")(
    lambda _: Hostile("POST", f"{JOBS}/job_nope/cancel", 404, "not_found", "job_nope")
)
case("dataset/unknown-id")(
    lambda _: Hostile("GET", f"{DATASETS}/dst_nope", 404, "not_found", "dst_nope")
)

# --- the request side: bodies, nesting and integers (issue 20)

BODY_CAP = 1024**2  # DFKD_MAX_BODY_BYTES' default
SSE = {"Accept": "text/event-stream"}
PAST_BIGINT = 10**20  # more than a BIGINT column holds (SQLite's driver overflows: a 500 before)


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def raw_job_json(ctx: Context, metadata: str) -> bytes:
    return (
        f'{{"teacher_id": "{ctx.teacher_id}", "student": {{"architecture": "lenet5_half"}}, '
        f'"iterations": 10, "metadata": {metadata}}}'
    ).encode()


def over_the_body_cap(ctx: Context) -> bytes:
    return raw_job_json(ctx, json.dumps({"padding": "x" * BODY_CAP}))


JSON = {"content-type": "application/json"}


def raw_job(
    status: int, code: str, fragment: str, content: bytes | Iterator[bytes], headers: dict = JSON
) -> Hostile:
    return Hostile("POST", JOBS, status, code, fragment, content=content, headers=headers)


case("job/body-over-the-body-cap")(
    lambda ctx: raw_job(413, "body_too_large", "DFKD_MAX_BODY_BYTES", over_the_body_cap(ctx))
)
case("job/body-over-the-body-cap-chunked")(
    lambda ctx: raw_job(
        413, "body_too_large", "DFKD_MAX_BODY_BYTES", chunks(over_the_body_cap(ctx))
    )
)
case("job/multipart-body-on-the-json-route")(
    lambda _: raw_job(
        413,
        "body_too_large",
        "DFKD_MAX_BODY_BYTES",
        multipart({"padding": "x" * BODY_CAP}, None),
        {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
)
case("job/json-nested-5000-deep")(
    lambda ctx: raw_job(422, "json_too_deep", "too deeply", raw_job_json(ctx, nested(5000)))
)
case("job/metadata-nested-400-deep")(
    lambda ctx: raw_job(
        422, "validation_error", "nested deeper than 8 levels", raw_job_json(ctx, nested(400))
    )
)
case("job/metadata-over-16-KiB")(
    lambda ctx: job(
        ctx, 422, "validation_error", "more than the 16384 allowed", metadata={"a": "x" * 20000}
    )
)
case("events/after-past-bigint")(
    lambda ctx: Hostile(
        "GET", f"{JOBS}/{ctx.job_id}/events?after={PAST_BIGINT}", 422, "validation_error", "after"
    )
)
case("events/stream-after-past-bigint")(
    lambda ctx: Hostile(
        "GET",
        f"{JOBS}/{ctx.job_id}/events?after={PAST_BIGINT}",
        422,
        "validation_error",
        "after",
        headers=SSE,
    )
)
case("events/last-event-id-past-bigint")(
    lambda ctx: Hostile(
        "GET",
        f"{JOBS}/{ctx.job_id}/events",
        422,
        "invalid_last_event_id",
        "at most",
        headers={**SSE, "Last-Event-ID": f"{PAST_BIGINT}:0"},
    )
)
case("events/last-event-id-negative")(
    lambda ctx: Hostile(
        "GET",
        f"{JOBS}/{ctx.job_id}/events",
        422,
        "invalid_last_event_id",
        "not one this API sent",
        headers={**SSE, "Last-Event-ID": "-1:0"},
    )
)
case("metrics/after-step-past-int")(
    lambda ctx: Hostile(
        "GET",
        f"{JOBS}/{ctx.job_id}/metrics?after_step={PAST_BIGINT}",
        422,
        "validation_error",
        "after_step",
    )
)
case("samples/step-past-int")(
    lambda ctx: Hostile(
        "GET", f"{JOBS}/{ctx.job_id}/samples/{PAST_BIGINT}", 422, "validation_error", "step"
    )
)


# --- bounded models, archives and headers (issue 20): nothing is built, decompressed or parsed
# past its bound, and no answer repeats a long input

GIANT_WRN = {"depth": 100, "widen_factor": 20}  # inside the bounds, 5.9e8 parameters

case("teacher/image-size-1536")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "image_size must be from 16 to 512, got 1536",
        data={"architecture_kwargs": '{"image_size": 1536}'},
        huge_claim=True,
    )
)
case("teacher/wrn-depth-12004")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "depth must be from 10 to 100, got 12004",
        data={"architecture": "wrn", "architecture_kwargs": '{"depth": 12004}'},
        huge_claim=True,
    )
)
case("teacher/parameters-past-the-teacher-limit")(
    lambda _: teacher(
        good_weights(),
        422,
        "invalid_architecture",
        "DFKD_MAX_TEACHER_PARAMETERS",
        data={
            "architecture": "hinton1200",
            "architecture_kwargs": '{"in_channels": 64, "image_size": 512}',
        },
        huge_claim=True,
    )
)


def huge_student(ctx: Context, kwargs: dict[str, int], fragment: str) -> Hostile:
    student = {"architecture": "wrn", "kwargs": kwargs}
    hostile = job(ctx, 422, "invalid_architecture", fragment, student=student)
    return replace(hostile, huge_claim=True)


case("job/student-widen-factor-110")(
    lambda ctx: huge_student(
        ctx, {"widen_factor": 110}, "widen_factor must be from 1 to 20, got 110"
    )
)
case("job/student-wrn-depth-12004")(
    lambda ctx: huge_student(ctx, {"depth": 12004}, "depth must be from 10 to 100, got 12004")
)
case("job/student-parameters-past-the-student-limit")(
    lambda ctx: huge_student(ctx, GIANT_WRN, "DFKD_MAX_STUDENT_PARAMETERS")
)
case("job/lopes-samples-past-the-memory-bound")(
    lambda ctx: replace(
        job(
            ctx,
            422,
            "validation_error",
            "DFKD_MAX_LOPES_SAMPLE_BYTES",
            method="lopes",
            hyperparameters={"samples": 10_000_000},
        ),
        huge_claim=True,
    )
)
case("dataset/npz-bomb-160MiB")(lambda _: npz_of_zeros(160, 1024))
case("dataset/npz-arrays-past-the-cap")(
    lambda ctx: dataset(
        npz(
            images=np.random.default_rng(0).integers(
                0, 256, (ctx.upload_limit * 2 // 3 // 1024, 1, 32, 32), np.uint8
            ),
            labels=np.zeros(ctx.upload_limit * 2 // 3 // 1024, np.int64),
        ),
        fragment="DFKD_MAX_DATASET_ARRAY_BYTES",
    )
)
case("dataset/safetensors-arrays-past-the-cap")(
    lambda ctx: dataset(
        save(
            {
                "images": torch.zeros(
                    ctx.upload_limit * 2 // 3 // 1024, 1, 32, 32, dtype=torch.uint8
                ),
                "labels": torch.zeros(ctx.upload_limit * 2 // 3 // 1024, dtype=torch.int64),
            }
        ),
        fragment="DFKD_MAX_DATASET_ARRAY_BYTES",
    )
)
case("teacher/safetensors-header-over-1MiB")(
    lambda ctx: teacher(
        forge({"x" * (ctx.upload_limit // 2): {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
        422,
        "invalid_weights",
        "more than the 1048576 allowed",
        huge_claim=True,
    )
)
case("teacher/unknown-dtype-under-a-900KB-name")(
    lambda _: teacher(
        forge({"n" * 900_000: {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
        422,
        "invalid_weights",
        "characters cut",
    )
)
case("metadata-put/header-over-1MiB")(
    lambda ctx: Hostile(
        "PUT",
        f"{TEACHERS}/{ctx.teacher_id}/metadata",
        422,
        "invalid_metadata",
        "over 1048576 bytes",
        files={
            "metadata": ("m", forge({"__metadata__": {"x": "y" * (ctx.upload_limit // 2)}}, b""))
        },
        huge_claim=True,
    )
)


# --- a tenant at its quotas (1 active job, all its storage used): 429 with Retry-After


def at_quota(ctx: Context, hostile: Hostile) -> Hostile:
    return replace(hostile, headers={"authorization": f"Bearer {ctx.quota_tenant_key}"})


@case("quota/job-past-active-jobs")
def _(ctx: Context) -> Hostile:
    past = job(ctx, 429, "quota_active_jobs", "quota of 1 active jobs (queued + running): 1 in use")
    return at_quota(
        ctx, replace(past, json_body={**past.json_body, "teacher_id": ctx.quota_teacher_id})
    )


@case("quota/teacher-past-storage")
def _(ctx: Context) -> Hostile:
    return at_quota(ctx, teacher(good_weights(), 429, "quota_storage", "this request adds"))


@case("quota/dataset-past-storage")
def _(ctx: Context) -> Hostile:
    refused = replace(dataset(npz(**digits())), status=429, code="quota_storage")
    return at_quota(ctx, replace(refused, fragment="delete teachers or datasets"))


@case("quota/metadata-past-storage")
def _(ctx: Context) -> Hostile:
    return at_quota(
        ctx,
        Hostile(
            "PUT",
            f"{TEACHERS}/{ctx.quota_teacher_id}/metadata",
            429,
            "quota_storage",
            "dfkd tenants set-quota",
            files={"metadata": ("m.safetensors", b"x" * 64)},
        ),
    )


# --- DELETE: another tenant's objects, unknown ids and ids that try to name a folder delete
# nothing (the world's lists and blob files are compared before and after)


def other_tenant(ctx: Context, hostile: Hostile) -> Hostile:
    return replace(hostile, headers={"authorization": f"Bearer {ctx.other_tenant_key}"})


case("delete/job-of-another-tenant")(
    lambda ctx: other_tenant(ctx, Hostile("DELETE", f"{JOBS}/{ctx.job_id}", 404, "not_found"))
)
case("delete/teacher-of-another-tenant")(
    lambda ctx: other_tenant(
        ctx, Hostile("DELETE", f"{TEACHERS}/{ctx.teacher_id}", 404, "not_found")
    )
)
case("delete/job-unknown")(lambda ctx: Hostile("DELETE", f"{JOBS}/job_nope", 404, "not_found"))
case("delete/teacher-unknown")(
    lambda ctx: Hostile("DELETE", f"{TEACHERS}/tch_nope", 404, "not_found")
)
case("delete/dataset-unknown")(
    lambda ctx: Hostile("DELETE", f"{DATASETS}/dst_nope", 404, "not_found")
)
case("delete/teacher-id-dot-dot")(
    lambda ctx: Hostile("DELETE", f"{TEACHERS}/%2E%2E", 404, "not_found", "'..'")
)
case("delete/job-id-a-folder-prefix")(
    lambda ctx: Hostile("DELETE", f"{JOBS}/{ctx.job_id[:6]}", 404, "not_found")
)
case("delete/bad-api-key")(
    lambda ctx: Hostile(
        "DELETE",
        f"{JOBS}/{ctx.job_id}",
        401,
        "invalid_api_key",
        "unknown",
        headers={"authorization": "Bearer dfkd_not_a_key"},
    )
)
case("list/deletions-limit-zero")(
    lambda ctx: Hostile("GET", "/v1/deletions?limit=0", 422, "validation_error", "limit")
)
case("list/deletions-before-past-bigint")(
    lambda ctx: Hostile(
        "GET", f"/v1/deletions?before={PAST_BIGINT}", 422, "validation_error", "before"
    )
)


def endpoint(hostile: Hostile) -> str:
    path = hostile.path.split("?")[0]
    for prefix, template in (
        (f"{TEACHERS}/", f"{TEACHERS}/{{id}}"),
        (f"{JOBS}/", f"{JOBS}/{{id}}"),
        (f"{DATASETS}/", f"{DATASETS}/{{id}}"),
    ):
        if path.startswith(prefix):
            rest = path.removeprefix(prefix).split("/", 1)
            path = template + (f"/{rest[1]}" if len(rest) > 1 else "")
    return f"{hostile.method} {path}"


def table(ctx: Context) -> str:
    """The corpus as a markdown table (case, endpoint, expected status and code)."""
    rows = ["| case | endpoint | status | error code |", "|---|---|---|---|"]
    for name, builder in CASES.items():
        hostile = builder(ctx)
        flags = " (would run code)" if hostile.runs_code else ""
        flags += " (claims huge memory)" if hostile.huge_claim else ""
        rows.append(
            f"| `{name}`{flags} | `{endpoint(hostile)}` | {hostile.status} | `{hostile.code}` |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    import tempfile

    placeholder = Context(
        marker=Path(tempfile.gettempdir()) / "never-created",
        upload_limit=2 * 1024 * 1024,
        teacher_id="tch_x",
        program_teacher_id="tch_y",
        other_tenant_key="dfkd_x",
    )
    print(table(placeholder))
    print(f"\n{len(CASES)} cases")
