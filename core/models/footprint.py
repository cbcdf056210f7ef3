"""How much memory one forward pass of a model will take, estimated on the meta device."""

from __future__ import annotations

import math

import torch
from torch import nn

# Live at once in a no-grad pass: a layer's input and output, and a residual branch's input kept
# for the sum; on top, the largest convolution's work buffers: its unfolded input (im2col: C_in x
# k x k values per output position) and a re-laid-out copy of its weight, as CPU convolutions
# make. bench/hostile_memory.py compares the estimate with the measured peak.
LIVE_ACTIVATIONS = 3
FLOAT_BYTES = 4


def _conv_workspace(module: nn.Conv2d, output: torch.Tensor) -> int:
    batch, _, height, width = output.shape
    per_position = module.in_channels // module.groups * math.prod(module.kernel_size)
    return (batch * height * width * per_position + module.weight.numel()) * FLOAT_BYTES


def forward_peak_bytes(model: nn.Module, input_shape: tuple[int, ...], batch: int) -> int:
    """Estimated peak bytes of a no-grad forward pass of `model` (built on the meta device: no
    memory is allocated) on a float32 batch: the input, LIVE_ACTIVATIONS times the largest output
    of any leaf module, and the largest convolution work buffers."""
    largest = workspace = 0

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest, workspace
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())
            if isinstance(module, nn.Conv2d) and output.dim() == 4:
                workspace = max(workspace, _conv_workspace(module, output))

    leaves = [module for module in model.modules() if not any(module.children())]
    handles = [module.register_forward_hook(record) for module in leaves]
    try:
        with torch.no_grad():
            model(torch.empty(batch, *input_shape, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    inputs = batch * math.prod(input_shape) * FLOAT_BYTES
    return inputs + LIVE_ACTIVATIONS * largest + workspace
