"""Reading intermediate activations (attention taps) off a model by module name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ActivationRecorder:
    """Keeps the latest output of each named module; read `activations` after a forward pass."""

    def __init__(self, model: nn.Module, module_names: tuple[str, ...]) -> None:
        modules = dict(model.named_modules())
        missing = [name for name in module_names if name not in modules]
        if missing:
            raise KeyError(f"model has no module(s) {missing} to tap")
        self._outputs: dict[str, torch.Tensor] = {}
        self._names = module_names
        self._handles = [
            modules[name].register_forward_hook(self._keep(name)) for name in module_names
        ]

    def _keep(self, name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self._outputs[name] = output

        return hook

    @property
    def active(self) -> bool:
        """Whether any module is tapped."""
        return bool(self._names)

    @property
    def activations(self) -> list[torch.Tensor]:
        return [self._outputs[name] for name in self._names]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._outputs.clear()


@contextmanager
def record_activations(
    model: nn.Module, module_names: tuple[str, ...]
) -> Iterator[ActivationRecorder]:
    recorder = ActivationRecorder(model, module_names)
    try:
        yield recorder
    finally:
        recorder.close()


def tap_shapes(
    model: nn.Module, module_names: tuple[str, ...], input_shape: tuple[int, int, int]
) -> list[tuple[int, ...]]:
    """Shapes (C, H, W) of each tap for one dummy input; the model is left in its mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with record_activations(model, module_names) as recorder, torch.no_grad():
        model(torch.zeros(1, *input_shape, device=device))
        shapes = [tuple(activation.shape[1:]) for activation in recorder.activations]
    model.train(was_training)
    return shapes


def matching_taps(
    teacher: nn.Module,
    teacher_taps: tuple[str, ...],
    student: nn.Module,
    student_taps: tuple[str, ...],
    input_shape: tuple[int, int, int],
) -> list[tuple[str, str]]:
    """Pairs of (teacher tap, student tap) in order whose spatial sizes agree.

    Taps are paired position by position when both networks have the same number of stages;
    a pair whose spatial sizes differ is dropped (attention maps must have the same length).
    """
    if not teacher_taps or not student_taps or len(teacher_taps) != len(student_taps):
        return []
    teacher_shapes = tap_shapes(teacher, teacher_taps, input_shape)
    student_shapes = tap_shapes(student, student_taps, input_shape)
    return [
        (teacher_name, student_name)
        for teacher_name, student_name, teacher_shape, student_shape in zip(
            teacher_taps, student_taps, teacher_shapes, student_shapes, strict=True
        )
        if teacher_shape[1:] == student_shape[1:]
    ]


def attention_recorders(
    teacher: nn.Module,
    teacher_taps: tuple[str, ...],
    student: nn.Module,
    student_taps: tuple[str, ...],
    input_shape: tuple[int, int, int],
    enabled: bool,
    without: str,
) -> tuple[ActivationRecorder, ActivationRecorder, str | None]:
    """Recorders on the tap pairs attention transfer can compare, and the warning to give when
    it was asked for but no pair matches (`without` says what training falls back to)."""
    pairs = (
        matching_taps(teacher, teacher_taps, student, student_taps, input_shape) if enabled else []
    )
    warning = None
    if enabled and not pairs:
        warning = (
            "attention transfer disabled: the teacher and student have no attention taps of "
            f"matching spatial size; {without}"
        )
    elif enabled and len(pairs) < len(teacher_taps):
        dropped = [
            f"{teacher_name} ~ {student_name}"
            for teacher_name, student_name in zip(teacher_taps, student_taps, strict=True)
            if (teacher_name, student_name) not in pairs
        ]
        warning = (
            f"attention transfer uses {len(pairs)} of {len(teacher_taps)} tap pairs: "
            f"{', '.join(dropped)} differ in spatial size and are left out"
        )
    return (
        ActivationRecorder(teacher, tuple(t for t, _ in pairs)),
        ActivationRecorder(student, tuple(s for _, s in pairs)),
        warning,
    )


def classifier_input_layer(model: nn.Module) -> nn.Linear | None:
    """The layer whose input is the features a network classifies: its first nn.Linear (the
    input of the fully-connected head, as DAFL's released code takes for LeNet-5 and ResNet), or
    its last where every layer is linear (an MLP's first one reads the pixels). None when the
    model has no nn.Linear (a compiled program)."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        return None
    convolutional = any(isinstance(module, nn.modules.conv._ConvNd) for module in model.modules())
    return linears[0] if convolutional else linears[-1]


class InputRecorder:
    """Keeps the latest input of one module, flattened per example; close it when done."""

    def __init__(self, module: nn.Module) -> None:
        self.latest: torch.Tensor | None = None
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        self.latest = inputs[0].flatten(1)

    @property
    def features(self) -> torch.Tensor:
        if self.latest is None:
            raise RuntimeError("the recorded module was not reached by a forward pass")
        return self.latest

    def close(self) -> None:
        self._handle.remove()
        self.latest = None
