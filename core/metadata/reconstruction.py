"""Reconstructing inputs from a metadata record (Lopes et al. 2017, sec. 3).

For each input to reconstruct: pick a class c, draw one signal per group of the record from class
c's statistics (mean plus noise shaped by the recorded spread), start from a noise input, and
optimise the input alone with Adam so that the teacher's units match the draws:

    loss(x) = sum over groups g of  mean_j ( target_g,j - matched_g(x)_j )^2

where for raw groups target = relu(draw) and matched = relu(units), the pre-activations of that
layer (logits / tau for the top layer); for spectral groups target = the drawn coefficients and
matched = U_g^T relu(units of the chain). So `top_layer` is the paper's mean squared error on
relu(logits / tau), `all_layers` is its sum over layers of the per-layer MSE (the 1 / size_l
weighting), and the spectral records match coefficients the same way.

A batch of inputs is optimised together. The gradient step takes the batch's sum of per-input
losses, so each input's gradient is exactly what it would be alone, and Adam normalises each
coordinate (each pixel of each input) separately: batching gives the same inputs as optimising
each alone (to float rounding), only faster. (With the batch mean instead, every gradient shrinks
by the batch size and Adam's epsilon, no longer negligible against it, moves the inputs 3-4% away
after 100 steps.) The loss reported is the batch mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.metadata.layers import UnitReader
from core.metadata.record import Metadata


def balanced_classes(start: int, count: int, metadata: Metadata) -> torch.Tensor:
    """Class of each target start..start+count-1: cycling through the recorded classes."""
    recorded = (metadata.counts > 0).nonzero().squeeze(1)
    return recorded[torch.arange(start, start + count) % len(recorded)]


def sample_targets(
    metadata: Metadata, classes: torch.Tensor, generator: torch.Generator
) -> list[torch.Tensor]:
    """One target per group for each entry of `classes`, in the form reconstruction matches."""
    return [group.target(group.statistics.sample(classes, generator)) for group in metadata.groups]


def reconstruction_loss(
    metadata: Metadata, units: list[torch.Tensor], targets: list[torch.Tensor]
) -> torch.Tensor:
    """The objective above, averaged over the batch."""
    total = units[0].new_zeros(())
    for group, target in zip(metadata.groups, targets, strict=True):
        total = total + (group.matched(units) - target).pow(2).mean()
    return total


class InputReconstruction:
    """One batch of inputs under reconstruction: Adam on the inputs only, one step at a time."""

    def __init__(
        self,
        read: UnitReader,
        metadata: Metadata,
        targets: list[torch.Tensor],
        start: torch.Tensor,
        lr: float,
    ) -> None:
        self.read, self.metadata, self.targets = read, metadata, targets
        self.inputs = nn.Parameter(start.clone())
        self.optimizer = torch.optim.Adam([self.inputs], lr=lr)

    def step(self) -> torch.Tensor:
        """One Adam step; returns the batch-mean loss before it (detached)."""
        loss = reconstruction_loss(self.metadata, self.read(self.inputs), self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        (loss * len(self.inputs)).backward()  # the sum of per-input losses (see above)
        self.optimizer.step()
        return loss.detach()


def reconstruct_batch(
    read: UnitReader,
    metadata: Metadata,
    targets: list[torch.Tensor],
    start: torch.Tensor,
    steps: int,
    lr: float,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Adam on the inputs only, from `start`; `on_step(step, loss, inputs)` runs after each step."""
    batch = InputReconstruction(read, metadata, targets, start, lr)
    for step in range(1, steps + 1):
        loss = batch.step()
        if on_step is not None:
            on_step(step, loss, batch.inputs.detach())
    return batch.inputs.detach()
