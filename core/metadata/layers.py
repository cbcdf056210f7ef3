"""Which units a metadata record describes, and reading them off a teacher.

Lopes et al. (2017) record every hidden layer's pre-activation output and the logits divided by
the distillation temperature. Here a hidden layer is the output of an `nn.Linear` or `nn.Conv2d`
module (a conv layer's units are its C x H x W outputs, flattened) and the logits are the model's
output. The classifier is the last such module a forward pass calls; its output must be the model's
output, otherwise the per-layer graph that ends in the logits would not describe this network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from core.taps import ActivationRecorder

RECORDED_MODULE_TYPES = (nn.Linear, nn.Conv2d)


class MetadataError(ValueError):
    """A record cannot be made, read or used with this teacher; the message says why."""


@dataclass(frozen=True)
class RecordedLayer:
    """One recorded layer: a module's output, flattened to `units` values per input."""

    name: str  # module name in the teacher (the classifier's name for the logits layer)
    shape: tuple[int, ...]  # per-input output shape before flattening
    is_logits: bool = False

    @property
    def units(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def recorded_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[RecordedLayer]:
    """The hidden Linear/Conv2d outputs in forward order, then the logits (the classifier's output)."""
    calls: list[tuple[str, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, output, name=name: calls.append((name, output)))
        for name, module in model.named_modules()
        if isinstance(module, RECORDED_MODULE_TYPES)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            dummy = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
            output = model(dummy.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not calls:
        raise MetadataError("the teacher has no nn.Linear or nn.Conv2d layer to record")
    names = [name for name, _ in calls]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise MetadataError(f"module(s) {repeated} run more than once per forward pass")
    classifier, classifier_output = calls[-1]
    # on the meta device there are no values to compare: the classifier's output must be the
    # model's output itself (as it is in every registry model)
    same = classifier_output is output or (
        not output.is_meta
        and classifier_output.shape == output.shape
        and torch.allclose(classifier_output, output, rtol=0, atol=0, equal_nan=True)
    )
    if not same:
        raise MetadataError(
            f"the last Linear/Conv2d module ({classifier!r}) does not produce the model's output, "
            "so the logits cannot be tied to the layers below them"
        )
    layers = [RecordedLayer(name, tuple(value.shape[1:])) for name, value in calls[:-1]]
    layers.append(RecordedLayer(classifier, tuple(output.shape[1:]), is_logits=True))
    return layers


@contextmanager
def reading_units(
    model: nn.Module, layers: list[RecordedLayer], temperature: float
) -> Iterator[UnitReader]:
    """Forward passes through `reader(x)` return every recorded layer's units, [B, units] each."""
    hidden = tuple(layer.name for layer in layers if not layer.is_logits)
    recorder = ActivationRecorder(model, hidden)
    try:
        yield UnitReader(model, recorder, temperature)
    finally:
        recorder.close()


class UnitReader:
    """Calls the model and returns [hidden pre-activations..., logits / temperature], flattened."""

    def __init__(self, model: nn.Module, recorder: ActivationRecorder, temperature: float) -> None:
        self._model = model
        self._recorder = recorder
        self._temperature = temperature

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = self._model(x)
        units = [activation.flatten(1) for activation in self._recorder.activations]
        units.append(logits.flatten(1) / self._temperature)
        return units
