"""Ways to run the same math faster on a given device, chosen by the operator, not the job.

None of these changes what a loop computes beyond floating-point rounding: the hyperparameters
(the science) stay in each method's config; this is how the arithmetic is carried out.
bench/speed.py measures each one on the machine at hand; the defaults keep those that paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.allocator import keep_freed_memory


class _Autocast(nn.Module):
    """Runs a module's forward under bf16 autocast and hands float32 outputs back."""

    def __init__(self, module: nn.Module, device_type: str) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            output = self.module(*inputs)
        return output.float()


@dataclass(frozen=True)
class Acceleration:
    """None means "decide by device"; see `resolved`."""

    # Fused (single-kernel) Adam/SGD updates: fewer passes over the parameters.
    fused_optimizers: bool | None = None
    # NHWC activations; pays for convolutions on tensor cores, usually not on a CPU.
    channels_last: bool | None = None
    # torch.compile the forward passes: fuses small ops, costs a compile at the start.
    compile: bool = False
    # torch.compile's mode when `compile` is on: None (default), "reduce-overhead" (replays CUDA
    # graphs: one launch for many small kernels), "max-autotune", ...
    compile_mode: str | None = None
    # bf16 autocast for forward passes: halves memory traffic on tensor-core GPUs, but rounds the
    # logits and tapped activations to an 8-bit mantissa, below the teacher-student differences a
    # nearly converged student learns from (docs/methods.md, "Precision"). Off unless asked for;
    # the losses are computed in float32 either way (core/losses.py).
    bf16_autocast: bool | None = None
    # cuDNN autotuning: pays when shapes never change, as in these loops.
    cudnn_benchmark: bool | None = None
    # glibc keeps freed tensor buffers for reuse instead of faulting them in every step
    # (core/allocator.py); process-wide once set.
    keep_freed_memory: bool | None = None

    def resolved(self, device: torch.device) -> Acceleration:
        cuda = device.type == "cuda"
        return Acceleration(
            fused_optimizers=_default(self.fused_optimizers, device.type in ("cpu", "cuda")),
            channels_last=_default(self.channels_last, cuda),
            compile=self.compile,
            compile_mode=self.compile_mode,
            bf16_autocast=_default(self.bf16_autocast, False),
            cudnn_benchmark=_default(self.cudnn_benchmark, cuda),
            keep_freed_memory=_default(self.keep_freed_memory, True),
        )

    def optimizer_options(self) -> dict[str, Any]:
        return {"fused": True} if self.fused_optimizers else {}

    def prepare(self, device: torch.device) -> None:
        """Process-wide switches (call once the device is known)."""
        if self.keep_freed_memory:
            keep_freed_memory()
        if device.type == "cuda" and self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    def forward_of(self, module: nn.Module, device: torch.device) -> nn.Module:
        """What a loop calls for `module`'s forward pass. The module itself (its parameters,
        hooks, state dict) stays the one to train, tap and save."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        runner: nn.Module = module
        if self.bf16_autocast:
            runner = _Autocast(runner, device.type)
        if self.compile:
            runner = torch.compile(runner, mode=self.compile_mode)
        return runner

    def describe(self) -> dict[str, Any]:
        return {
            "fused_optimizers": self.fused_optimizers,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "compile_mode": self.compile_mode,
            "bf16_autocast": self.bf16_autocast,
            "cudnn_benchmark": self.cudnn_benchmark,
            "keep_freed_memory": self.keep_freed_memory,
        }


def _default(value: bool | None, fallback: bool) -> bool:
    return fallback if value is None else value
