from __future__ import annotations

import io

import pytest
import torch

from core.export import check_onnx, onnx_bytes, torchscript_bytes
from core.models import build


@pytest.mark.parametrize(("name", "shape"), [("lenet5_half", (1, 32, 32)), ("wrn", (3, 32, 32))])
def test_onnx_export_predicts_like_torch(name: str, shape: tuple[int, int, int]) -> None:
    kwargs = {"depth": 10} if name == "wrn" else {}
    model = build(name, **kwargs).eval()
    assert check_onnx(model, onnx_bytes(model, shape), shape) < 1e-4


def test_torchscript_export_loads_and_matches() -> None:
    model = build("lenet5_half").eval()
    loaded = torch.jit.load(io.BytesIO(torchscript_bytes(model, (1, 32, 32))))
    batch = torch.randn(5, 1, 32, 32)
    torch.testing.assert_close(loaded(batch), model(batch))
