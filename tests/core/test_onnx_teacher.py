"""ONNX teachers: the graph's facts read without running it, refusals that name what is wrong,
and a converted module that matches onnxruntime and passes gradients back to its input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from core.onnx_teacher import OnnxTeacherError, check_onnx_teacher, load_onnx_teacher
from tests import onnx_graphs


def written(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "teacher.onnx"
    path.write_bytes(data)
    return path


def test_a_graph_gives_its_shapes_and_converts_to_what_onnxruntime_computes(
    tmp_path: Path,
) -> None:
    facts, difference = check_onnx_teacher(written(tmp_path, onnx_graphs.valid()))
    assert facts.input_shape == (onnx_graphs.CHANNELS, onnx_graphs.SIDE, onnx_graphs.SIDE)
    assert facts.num_classes == onnx_graphs.CLASSES
    assert facts.opset == onnx_graphs.OPSET
    assert facts.parameter_count == 4 * 9 + 4 + 3 * 4 + 3
    assert 0 <= difference < 1e-5


def test_the_converted_teacher_passes_gradients_to_its_input() -> None:
    teacher = load_onnx_teacher(onnx_graphs.valid())
    images = torch.randn(5, 1, 8, 8, requires_grad=True)
    logits = teacher(images)
    assert logits.shape == (5, 3)  # any batch size: the batch dimension is dynamic
    logits.logsumexp(1).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_a_torch_export_round_trips(tmp_path: Path) -> None:
    """A network exported by torch.onnx.export at a recent opset (brought down to the
    converter's) converts back to the same function."""
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    ).eval()
    path = tmp_path / "exported.onnx"
    torch.onnx.export(
        network,
        (torch.randn(2, 3, 16, 16),),
        str(path),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    facts, difference = check_onnx_teacher(path)
    assert (facts.input_shape, facts.num_classes) == ((3, 16, 16), 4)
    images = torch.randn(3, 3, 16, 16)
    converted = load_onnx_teacher(path.read_bytes())
    with torch.no_grad():
        assert torch.allclose(converted(images), network(images), atol=1e-5)
    assert difference < 1e-5


@pytest.mark.parametrize(
    ("graph", "fragment"),
    [
        (onnx_graphs.unknown_domain_operator, "Mystery (domain 'com.example.secret')"),
        (onnx_graphs.fixed_batch, "fixed batch of 4"),
        (onnx_graphs.two_inputs, "takes 2 inputs"),
        (onnx_graphs.truncated, "not a readable ONNX model"),
        (onnx_graphs.external_data, "'../../etc/passwd', outside the model's folder"),
        (lambda: onnx_graphs.external_data("weights.bin"), "external file 'weights.bin'"),
    ],
)
def test_graphs_that_cannot_be_teachers_are_refused_with_the_reason(
    tmp_path: Path, graph: object, fragment: str
) -> None:
    with pytest.raises(OnnxTeacherError) as refused:
        check_onnx_teacher(written(tmp_path, graph()))  # type: ignore[operator]
    assert fragment in str(refused.value)
