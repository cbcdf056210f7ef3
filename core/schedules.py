"""Learning-rate schedules as functions of the fraction of the run done (0 at the start, 1 at the
end), so that one schedule serves a run of N iterations and a run of B seconds alike."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def cosine(fraction: float) -> float:
    """Cosine annealing from 1 to 0 (SGDR without restarts)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def step_decay(fraction: float, milestones: Sequence[float], factor: float) -> float:
    """`factor` to the power of the milestones (fractions of the run) already passed."""
    return factor ** sum(fraction >= milestone for milestone in milestones)


def constant(fraction: float) -> float:
    del fraction
    return 1.0


def set_learning_rate(optimizer: torch.optim.Optimizer, base: float, multiplier: float) -> float:
    learning_rate = base * multiplier
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    return learning_rate
