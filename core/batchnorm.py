"""The BatchNorm-statistics loss the 2020s methods share (docs/methods.md, "BatchNorm statistics").

A teacher's BatchNorm layers keep, as running mean and variance, a summary of the features its
training data produced. A forward hook on each layer reads the batch statistics of the layer's
*input* (over N, H, W), with the teacher in eval mode, and the loss is

    sum over layers l of  w_l * ( ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2 )

with w_1 = `first_weight` (DeepInversion weighs the first layer x10) and 1 for the others.
"""

from __future__ import annotations

import torch
from torch import nn

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers that track running statistics, in registration order."""
    return [
        module
        for module in model.modules()
        if isinstance(module, BATCHNORM_TYPES) and module.track_running_stats
    ]


def batch_statistics(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance per channel over every axis but the channel axis (1)."""
    axes = [axis for axis in range(inputs.dim()) if axis != 1]
    return inputs.mean(axes), inputs.var(axes, unbiased=False)


class BatchNormStatistics:
    """Hooks on a model's BatchNorm layers; after a forward pass, `loss()` compares the batch's
    statistics at each layer's input with the layer's running ones. Close it when done."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = batchnorm_layers(model)
        if not self.layers:
            raise ValueError("the model has no BatchNorm layer with running statistics")
        self._terms: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [
            layer.register_forward_hook(self._hook(index))
            for index, layer in enumerate(self.layers)
        ]

    def _hook(self, index: int):  # noqa: ANN202 (a forward hook)
        layer = self.layers[index]

        def record(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> None:
            mean, variance = batch_statistics(inputs[0].float())
            self._terms[index] = torch.linalg.vector_norm(
                mean - layer.running_mean
            ) + torch.linalg.vector_norm(variance - layer.running_var)

        return record

    def per_layer(self) -> list[torch.Tensor]:
        """The last forward pass's term of every layer (all layers must have been reached)."""
        missing = [index for index, term in enumerate(self._terms) if term is None]
        if missing:
            raise RuntimeError(f"BatchNorm layers {missing} were not reached by the forward pass")
        return [term for term in self._terms if term is not None]

    def loss(self, first_weight: float = 1.0) -> torch.Tensor:
        terms = self.per_layer()
        return first_weight * terms[0] + sum(terms[1:], terms[0].new_zeros(()))

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def planned_batchnorm_layers(architecture: str, **kwargs: object) -> int:
    """BatchNorm layers `build(architecture, **kwargs)` would have, counted on the meta device."""
    from core.models import build

    with torch.device("meta"):
        return len(batchnorm_layers(build(architecture, **kwargs)))
