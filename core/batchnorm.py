"""The BatchNorm-statistics loss the 2020s methods share (docs/methods.md, "BatchNorm statistics").

A teacher's BatchNorm layers keep, as running mean and variance, a summary of the features its
training data produced. A forward hook on each layer reads the batch statistics of the layer's
*input* (over N, H, W), with the teacher in eval mode, and the loss is

    sum over layers l of  w_l * ( ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2 )

with w_1 = `first_weight` (DeepInversion weighs the first layer x10) and 1 for the others.

FastDFKD compares a *blend* instead of the batch's own statistics: with `momentum` m > 0 the
hook uses m * (the blend kept from earlier batches) + (1 - m) * (this batch's), and
`update_momentum()` keeps the last pass's blend (detached) for the next batch. So one synthesised
batch need not match the teacher's statistics alone: the batches seen so far match them together.
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
    statistics at each layer's input with the layer's running ones. Close it when done.

    `instance_means()` gives, per input, the channel means of every hooked layer's input,
    concatenated (CMI's features for its contrastive term)."""

    def __init__(self, model: nn.Module, momentum: float = 0.0) -> None:
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.layers = batchnorm_layers(model)
        if not self.layers:
            raise ValueError("the model has no BatchNorm layer with running statistics")
        self.momentum = momentum
        self._terms: list[torch.Tensor | None] = [None] * len(self.layers)
        self._blends: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        self._kept: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.layers)
        self._instance_means: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles = [
            layer.register_forward_hook(self._hook(index))
            for index, layer in enumerate(self.layers)
        ]

    def _hook(self, index: int):  # noqa: ANN202 (a forward hook)
        layer = self.layers[index]

        def record(
            module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
        ) -> None:
            features = inputs[0].float()
            mean, variance = batch_statistics(features)
            kept = self._kept[index]
            if self.momentum > 0 and kept is not None:
                mean = self.momentum * kept[0] + (1 - self.momentum) * mean
                variance = self.momentum * kept[1] + (1 - self.momentum) * variance
            self._blends[index] = (mean, variance)
            self._instance_means[index] = (
                features.flatten(2).mean(2) if features.dim() > 2 else features
            )
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

    def instance_means(self) -> torch.Tensor:
        """[N, sum of channels]: the last pass's per-input channel means at every layer."""
        means = [means for means in self._instance_means if means is not None]
        if len(means) != len(self.layers):
            raise RuntimeError("no forward pass reached every BatchNorm layer yet")
        return torch.cat(means, dim=1)

    def update_momentum(self) -> None:
        """Keep the last pass's blended statistics for the next batch (no-op without momentum)."""
        if self.momentum > 0:
            self._kept = [
                None if blend is None else (blend[0].detach(), blend[1].detach())
                for blend in self._blends
            ]

    def state_dict(self) -> dict[str, list[torch.Tensor]]:
        """The kept blend, for checkpoints (empty before the first update)."""
        if any(kept is None for kept in self._kept):
            return {}
        return {
            "means": [kept[0] for kept in self._kept if kept is not None],
            "variances": [kept[1] for kept in self._kept if kept is not None],
        }

    def load_state_dict(self, state: dict[str, list[torch.Tensor]]) -> None:
        if state:
            self._kept = [
                (mean.to(layer.running_mean.device), variance.to(layer.running_mean.device))
                for mean, variance, layer in zip(
                    state["means"], state["variances"], self.layers, strict=True
                )
            ]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def planned_batchnorm_layers(architecture: str, **kwargs: object) -> int:
    """BatchNorm layers `build(architecture, **kwargs)` would have, counted on the meta device."""
    from core.models import build

    with torch.device("meta"):
        return len(batchnorm_layers(build(architecture, **kwargs)))
