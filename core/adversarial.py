"""What the generator-based methods (ZSKT, DFAD) share: their training state and its checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from core.training import restore_rng_state, rng_state


@dataclass
class AdversarialState:
    generator: nn.Module
    optimizer_generator: torch.optim.Optimizer
    optimizer_student: torch.optim.Optimizer
    scheduler_generator: torch.optim.lr_scheduler.LRScheduler
    scheduler_student: torch.optim.lr_scheduler.LRScheduler

    def parts(self, student: nn.Module) -> dict[str, Any]:
        """Everything with a state_dict, by the name it has in a checkpoint."""
        return {
            "student": student,
            **{name: getattr(self, name) for name in self.__dataclass_fields__},
        }

    def checkpoint(self, method: str, step: int, config: Any, student: nn.Module) -> dict[str, Any]:
        """The whole training state as one dict of tensors and plain values (loads with weights_only)."""
        return {
            "method": method,
            "step": step,
            "config": asdict(config),
            **{name: part.state_dict() for name, part in self.parts(student).items()},
            "rng": rng_state(),
        }

    def restore(self, checkpoint: dict[str, Any], student: nn.Module) -> int:
        """Load a checkpoint made by `checkpoint`; returns the step it was taken at."""
        for name, part in self.parts(student).items():
            part.load_state_dict(checkpoint[name])
        restore_rng_state(checkpoint["rng"])
        return int(checkpoint["step"])
