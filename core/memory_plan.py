"""Will a job fit? Its peak training memory at a batch size, estimated before it starts from one
probe forward pass at a batch of one, against the memory the worker has.

Training keeps every layer output of the teacher and the student for the backward pass (the
generator methods back-propagate through both), and the backward pass makes a gradient of the
same size; the student also holds its weights' gradients and two optimiser moments. The
generator's maps are counted as a multiple of the input. The estimate is linear in the batch,
so the largest batch that fits follows from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# A layer's output kept for backward plus the gradient flowing back through it.
SAVED_AND_GRADIENT = 2
# The generator's maps per sample, as multiples of one input (DCGAN-style generators keep a few
# maps of up to 64 channels at the output size: about 16 inputs' worth at their widest).
GENERATOR_INPUTS = 16
# Student weights, their gradients and two optimiser moments (Adam; SGD with momentum uses less).
STUDENT_COPIES = 4
# What the process holds besides the job (interpreter, torch, the API's libraries).
RUNTIME_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class MemoryPlan:
    fixed_bytes: int  # weights, optimiser state and the runtime: whatever the batch
    per_sample_bytes: int

    def peak_bytes(self, batch: int) -> int:
        return self.fixed_bytes + batch * self.per_sample_bytes

    def largest_batch(self, limit: int) -> int:
        return max(0, (limit - self.fixed_bytes) // max(self.per_sample_bytes, 1))


def _tensor_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def activation_bytes_per_sample(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Bytes of every leaf module's output for one input: one probe pass, no gradients. A
    TorchScript program hides its layers (it takes no hooks): only its output is counted."""
    total = 0
    if isinstance(model, torch.jit.ScriptModule):
        return _output_bytes(model, input_shape)

    def record(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal total
        outputs = output if isinstance(output, tuple | list) else (output,)
        total += sum(o.numel() * o.element_size() for o in outputs if isinstance(o, torch.Tensor))

    leaves = [module for module in model.modules() if not any(module.children())]
    handles = [module.register_forward_hook(record) for module in leaves]
    was_training = model.training
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def _output_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        output = model(torch.zeros(1, *input_shape, device=device))
    return output.numel() * output.element_size() if isinstance(output, torch.Tensor) else 0


def plan_training(
    teacher: nn.Module, student: nn.Module, input_shape: tuple[int, int, int]
) -> MemoryPlan:
    sample = 4 * input_shape[0] * input_shape[1] * input_shape[2]
    per_sample = SAVED_AND_GRADIENT * (
        activation_bytes_per_sample(teacher, input_shape)
        + activation_bytes_per_sample(student, input_shape)
        + GENERATOR_INPUTS * sample
    )
    fixed = _tensor_bytes(teacher) + STUDENT_COPIES * _tensor_bytes(student) + RUNTIME_BYTES
    return MemoryPlan(fixed_bytes=fixed, per_sample_bytes=per_sample)


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def device_memory_bytes(device: str) -> int:
    """What the job's device has: the GPU's memory, or the machine's (its cgroup's limit where
    lower)."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(physical, limit) if limit else physical
