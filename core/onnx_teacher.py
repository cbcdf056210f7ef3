"""Teachers exported to ONNX: a declarative graph, checked without running anything but its
declared operators, and converted (onnx2torch) into a differentiable torch module, so the
generator methods can back-propagate through it and no uploaded code ever runs."""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from torch import nn

from core.segmentation import SEGMENTATION_TASK, expected_logits_shape, task_of_output

# Graphs from opset 9 on are accepted; those newer than the converter's operator table (opset
# 17: later opsets mostly widen types) are first brought down to it by onnx's version converter.
MIN_OPSET = 9
CONVERTER_OPSET = 17
MAX_INPUT_SIDE = 4096
MAX_INPUT_CHANNELS = 64
MAX_CLASSES = 100_000
CHECK_BATCH = 2
# Converted and original graphs agree to float32 rounding (6e-6 measured on a ResNet-18); a
# difference past this is a conversion that changed the network.
MAX_ABS_DIFFERENCE = 1e-3


class OnnxTeacherError(ValueError):
    """The graph cannot serve as a teacher; the message says why and what to change."""


@dataclass(frozen=True)
class OnnxTeacherFacts:
    """What the graph itself says about the teacher."""

    input_name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    opset: int
    parameter_count: int
    task_type: str = "classification"  # "segmentation": per-pixel logits [N, K, H, W]


def read_graph(path: Path) -> onnx.ModelProto:
    """Parse the protobuf without following external-data references."""
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise OnnxTeacherError(
            f"not a readable ONNX model (truncated or not protobuf): {error}"
        ) from None


def _refuse_external_data(model: onnx.ModelProto) -> None:
    """One uploaded file is the whole teacher: tensors stored in other files are refused, and a
    location that leaves the model's folder is named as such."""
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        normalised = posixpath.normpath(location.replace("\\", "/"))
        if normalised.startswith(("/", "..")) or ":" in normalised:
            raise OnnxTeacherError(
                f"tensor {tensor.name!r} points at external data {location!r}, outside the "
                "model's folder: refused"
            )
        raise OnnxTeacherError(
            f"tensor {tensor.name!r} keeps its data in the external file {location!r}; upload "
            "one self-contained file (onnx.save_model(model, path, save_as_external_data=False))"
        )


def _opset(model: onnx.ModelProto) -> int:
    versions = {entry.domain: entry.version for entry in model.opset_import}
    opset = versions.get("", versions.get("ai.onnx"))
    if opset is None:
        raise OnnxTeacherError("the graph imports no version of the standard ONNX operator set")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise OnnxTeacherError(
            f"opset {opset} is outside the {MIN_OPSET}-{newest} accepted here; export with "
            f"opset_version between them ({CONVERTER_OPSET} converts most directly)"
        )
    return opset


def _inline_identity_initialisers(model: onnx.ModelProto) -> None:
    """torch.onnx.export shares a weight between layers as Identity(initialiser); onnx2torch
    wants each layer's weights as initialisers, so the copies are made initialisers."""
    initialisers = {tensor.name: tensor for tensor in model.graph.initializer}
    outputs = {value.name for value in model.graph.output}
    kept = []
    for node in model.graph.node:
        source = node.input[0] if node.op_type == "Identity" and node.input else None
        if source in initialisers and node.output[0] not in outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(initialisers[source])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def convertible_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph in the form the converter takes: shared weights inlined, and at the
    converter's opset."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _inline_identity_initialisers(copy)
    if _opset(copy) > CONVERTER_OPSET:
        try:
            copy = onnx.version_converter.convert_version(copy, CONVERTER_OPSET)
        except Exception as error:  # the version converter refuses some operators' forms
            raise OnnxTeacherError(
                f"the graph could not be brought from opset {_opset(model)} to "
                f"{CONVERTER_OPSET} for the converter: {error}; export with "
                f"opset_version={CONVERTER_OPSET}"
            ) from None
    return copy


def _nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Every node, including those of subgraphs (If / Loop bodies)."""
    found = []
    for node in graph.node:
        found.append(node)
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs]:
                found.extend(_nodes(sub))
    return found


def unsupported_operators(model: onnx.ModelProto) -> list[str]:
    """`Op (domain 'x')` for each distinct operator the converter has no conversion for."""
    from onnx2torch.node_converters.registry import get_converter

    versions = {entry.domain: entry.version for entry in model.opset_import}
    # the standard domain as the converter will see it, once brought to its opset
    versions[""] = min(versions.get("", versions.get("ai.onnx", 1)), CONVERTER_OPSET)
    missing: dict[tuple[str, str], str] = {}
    for node in _nodes(model.graph):
        domain = "" if node.domain == "ai.onnx" else node.domain
        key = (node.op_type, domain)
        if key in missing:
            continue
        try:
            get_converter(node.op_type, versions.get(domain, 1), domain)
        except NotImplementedError:
            missing[key] = f"{node.op_type} (domain {domain or 'ai.onnx'!r})"
    return sorted(missing.values())


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    """Each dimension as a number, a symbolic name, or None where the graph leaves it open."""
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return []
    dims: list[int | str | None] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def _input(model: onnx.ModelProto) -> tuple[str, tuple[int, int, int]]:
    initialisers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initialisers]
    if len(inputs) != 1:
        names = ", ".join(repr(value.name) for value in inputs)
        raise OnnxTeacherError(
            f"the graph takes {len(inputs)} inputs ({names}); a teacher takes one image batch "
            "[N, C, H, W]"
        )
    value = inputs[0]
    if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise OnnxTeacherError(f"input {value.name!r} must be float32 images")
    dims = _dims(value)
    if len(dims) != 4:
        raise OnnxTeacherError(
            f"input {value.name!r} has shape {dims}; a teacher takes [N, C, H, W] images"
        )
    if isinstance(dims[0], int):
        raise OnnxTeacherError(
            f"input {value.name!r} has a fixed batch of {dims[0]}; export with a dynamic batch "
            "dimension, e.g. torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}})"
        )
    chw = dims[1:]
    bounds = (MAX_INPUT_CHANNELS, MAX_INPUT_SIDE, MAX_INPUT_SIDE)
    if not all(isinstance(d, int) and 0 < d <= top for d, top in zip(chw, bounds, strict=True)):
        raise OnnxTeacherError(
            f"input {value.name!r} has shape {dims}: channels, height and width must be fixed "
            f"sizes (at most {MAX_INPUT_CHANNELS} channels, {MAX_INPUT_SIDE} px)"
        )
    return value.name, (int(chw[0]), int(chw[1]), int(chw[2]))  # type: ignore[arg-type]


def _classes(model: onnx.ModelProto) -> tuple[int, str]:
    """The classes and the task: [N, K] logits classify, [N, K, H, W] ones segment (their
    height and width are checked against the input's on a dummy batch). A segmentation graph's
    K may be symbolic (exporters leave a Resize's output dims open): 0 here, read off the dummy
    batch's output by `compare_with_onnxruntime`."""
    outputs = list(model.graph.output)
    if len(outputs) != 1:
        raise OnnxTeacherError(
            f"the graph has {len(outputs)} outputs; a teacher gives one logits tensor, "
            "[N, classes] or per-pixel [N, classes, H, W]"
        )
    dims = _dims(outputs[0])
    task = task_of_output(dims)
    if task == SEGMENTATION_TASK and not isinstance(dims[1], int):
        return 0, task
    if task is None or not isinstance(dims[1], int) or not 2 <= dims[1] <= MAX_CLASSES:
        raise OnnxTeacherError(
            f"output {outputs[0].name!r} has shape {dims}; a teacher gives [N, classes] logits, "
            f"or [N, classes, H, W] per-pixel logits, with a fixed number of classes "
            f"(2-{MAX_CLASSES})"
        )
    return int(dims[1]), task


def check_graph(model: onnx.ModelProto) -> tuple[OnnxTeacherFacts, onnx.ModelProto]:
    """Everything that can be read off the graph without converting or running it, and the
    graph in the form the converter takes."""
    _refuse_external_data(model)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise OnnxTeacherError(f"onnx.checker refused the graph: {error}") from None
    opset = _opset(model)
    missing = unsupported_operators(model)
    if missing:
        raise OnnxTeacherError(
            f"the converter (onnx2torch) has no conversion for {len(missing)} operator(s): "
            f"{', '.join(missing)}"
        )
    name, shape = _input(model)
    parameters = sum(math.prod(tensor.dims) for tensor in model.graph.initializer)
    classes, task = _classes(model)
    facts = OnnxTeacherFacts(name, shape, classes, opset, parameters, task)
    return facts, convertible_graph(model)


def convert_graph(model: onnx.ModelProto) -> nn.Module:
    """The graph as a differentiable torch module (its operators mapped to torch ones)."""
    from onnx2torch import convert

    try:
        module = convert(model)
    except Exception as error:  # the converter fails in many ways on graphs it half-supports
        raise OnnxTeacherError(f"onnx2torch could not convert the graph: {error}") from error
    return module.eval()


def compare_with_onnxruntime(
    model: onnx.ModelProto, module: nn.Module, facts: OnnxTeacherFacts
) -> tuple[float, int]:
    """Max absolute difference between the converted module and onnxruntime on one seeded
    dummy batch, and the classes of its output; raises if the outputs are not finite, differ
    past MAX_ABS_DIFFERENCE or are not the logits the graph declares."""
    import onnxruntime

    batch = torch.randn(CHECK_BATCH, *facts.input_shape, generator=torch.Generator().manual_seed(0))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        (reference,) = session.run(None, {facts.input_name: batch.numpy()})
    except Exception as error:  # onnxruntime refuses malformed graphs in many ways
        raise OnnxTeacherError(f"onnxruntime could not run the graph: {error}") from None
    try:
        with torch.no_grad():
            converted = module(batch)
    except Exception as error:
        raise OnnxTeacherError(f"the converted module failed on a dummy batch: {error}") from None
    classes = facts.num_classes or (int(reference.shape[1]) if reference.ndim == 4 else 0)
    if not 2 <= classes <= MAX_CLASSES:
        raise OnnxTeacherError(
            f"a dummy batch gave {list(reference.shape)}: per-pixel logits of 2-{MAX_CLASSES} "
            "classes were expected"
        )
    expected = expected_logits_shape(CHECK_BATCH, classes, facts.input_shape, facts.task_type)
    if tuple(reference.shape) != expected or tuple(converted.shape) != expected:
        raise OnnxTeacherError(
            f"a dummy batch gave {list(reference.shape)} in onnxruntime and "
            f"{list(converted.shape)} converted; expected {list(expected)}"
        )
    if not (np.isfinite(reference).all() and torch.isfinite(converted).all()):
        raise OnnxTeacherError("a dummy batch gave NaN or infinite logits")
    difference = float(np.abs(converted.numpy() - reference).max())
    if difference > MAX_ABS_DIFFERENCE:
        raise OnnxTeacherError(
            f"the converted module differs from onnxruntime by {difference:.2e} on a dummy batch "
            f"(at most {MAX_ABS_DIFFERENCE:.0e} allowed): the converter changed the network"
        )
    return difference, classes


def check_onnx_teacher(path: Path) -> tuple[OnnxTeacherFacts, float]:
    """Read, check, convert and compare: the graph's facts and the converted module's max
    difference from onnxruntime."""
    model = read_graph(path)
    facts, convertible = check_graph(model)
    difference, classes = compare_with_onnxruntime(model, convert_graph(convertible), facts)
    return replace(facts, num_classes=classes), difference


def load_onnx_teacher(data: bytes) -> nn.Module:
    """A stored (already checked) graph as a torch module, in eval mode."""
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as error:
        raise OnnxTeacherError(f"not a readable ONNX model: {error}") from None
    _, convertible = check_graph(model)
    return convert_graph(convertible)
