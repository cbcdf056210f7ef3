"""The student in deployable formats: ONNX (checked with onnxruntime) and TorchScript."""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn


class ExportError(RuntimeError):
    pass


MAX_PIXEL_DISAGREEMENT = 1e-4
# The opset ONNX teachers are converted at (core/onnx_teacher.py): an exported student can come
# back as a teacher. Above it a segmentation head's ConstantOfShape has no down-conversion.
EXPORT_OPSET = 17


def onnx_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """ONNX with a dynamic batch axis; input `input`, output `logits`."""
    model = model.cpu().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter: no onnxscript needed, and exact for these static graphs.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(2, *input_shape),),
            buffer,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
            opset_version=EXPORT_OPSET,
        )
    return buffer.getvalue()


def torchscript_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    model = model.cpu().eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.zeros(2, *input_shape))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def check_onnx(
    model: nn.Module, onnx: bytes, input_shape: tuple[int, int, int], batch: int = 64
) -> float:
    """Run the ONNX file in onnxruntime on a random batch; raise unless it predicts as torch does
    (every input's class; for per-pixel logits all but at most MAX_PIXEL_DISAGREEMENT of the
    pixels, where float rounding may flip a near tie). Returns the largest absolute logit
    difference."""
    import onnxruntime

    inputs = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.cpu().eval()(inputs)
    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs.numpy()})
    got = torch.from_numpy(logits)
    if got.shape != expected.shape:
        raise ExportError(
            f"the ONNX student gives {list(got.shape)}, the torch student {list(expected.shape)}"
        )
    differing = (got.argmax(1) != expected.argmax(1)).float().mean().item()
    allowed = MAX_PIXEL_DISAGREEMENT if got.ndim == 4 else 0.0
    if differing > allowed:
        raise ExportError(
            f"the ONNX student predicts differently from the torch student on {differing:.2%} "
            "of the inputs"
        )
    return (got - expected).abs().max().item()
