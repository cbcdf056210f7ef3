"""Small ONNX graphs built node by node (onnx.helper), valid and broken, for the ONNX teacher
checks: a conv net on [N, 1, 8, 8] images giving [N, 3] logits, and ways to spoil it."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
CHANNELS, SIDE, CLASSES = 1, 8, 3


def _weights() -> list[TensorProto]:
    rng = np.random.default_rng(0)
    arrays = {
        "conv_w": rng.normal(size=(4, CHANNELS, 3, 3)),
        "conv_b": rng.normal(size=(4,)),
        "fc_w": rng.normal(size=(CLASSES, 4)),
        "fc_b": rng.normal(size=(CLASSES,)),
    }
    return [numpy_helper.from_array(a.astype(np.float32), name) for name, a in arrays.items()]


def conv_net(
    batch: int | str = "batch",
    extra_input: bool = False,
    extra_node: onnx.NodeProto | None = None,
    extra_opsets: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm; `extra_node` is spliced in after
    the Relu (it must read "relu" and write "spliced")."""
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
    ]
    pooled_from = "relu"
    if extra_node is not None:
        nodes.append(extra_node)
        pooled_from = "spliced"
    nodes += [
        helper.make_node("GlobalAveragePool", [pooled_from], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    inputs = [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, CHANNELS, SIDE, SIDE])
    ]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])]
    graph = helper.make_graph(nodes, "conv_net", inputs, outputs, initializer=_weights())
    opsets = [helper.make_opsetid("", OPSET)] + [
        helper.make_opsetid(domain, version) for domain, version in (extra_opsets or {}).items()
    ]
    return helper.make_model(graph, opset_imports=opsets, producer_name="tests")


def valid() -> bytes:
    return conv_net().SerializeToString()


def fixed_batch() -> bytes:
    return conv_net(batch=4).SerializeToString()


def two_inputs() -> bytes:
    return conv_net(extra_input=True).SerializeToString()


def unknown_domain_operator() -> bytes:
    node = helper.make_node("Mystery", ["relu"], ["spliced"], domain="com.example.secret")
    return conv_net(extra_node=node, extra_opsets={"com.example.secret": 1}).SerializeToString()


def truncated() -> bytes:
    data = valid()
    return data[: len(data) * 2 // 3]


def external_data(location: str = "../../etc/passwd") -> bytes:
    """The conv weights declared to live in another file, at `location`."""
    model = conv_net()
    tensor = next(t for t in model.graph.initializer if t.name == "conv_w")
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "144")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()
