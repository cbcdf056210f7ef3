"""A bounded pool of synthesised inputs and the teacher's logits on them (DeepInversion, CMI,
FastDFKD keep one and train the student on batches from it). Oldest batches leave first once
it is full. Checkpointed whole; it is also the job's `synthetic` artifact."""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a pool holds at least one input, got capacity {capacity}")
        self.capacity = capacity
        self.images = torch.zeros(0)
        self.logits = torch.zeros(0)

    def __len__(self) -> int:
        return len(self.images)

    def add(self, images: torch.Tensor, logits: torch.Tensor) -> None:
        """Keep `images` (detached, on the CPU) with the teacher's `logits`; drop the oldest
        beyond the capacity."""
        images, logits = images.detach().cpu(), logits.detach().cpu()
        if len(self) == 0:
            self.images, self.logits = images, logits
        else:
            self.images = torch.cat([self.images, images])
            self.logits = torch.cat([self.logits, logits])
        self.images, self.logits = self.images[-self.capacity :], self.logits[-self.capacity :]

    def sample(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch drawn uniformly with replacement: (images, teacher logits)."""
        if len(self) == 0:
            raise RuntimeError("the pool is empty")
        chosen = torch.randint(0, len(self), (batch_size,), generator=generator)
        return self.images[chosen], self.logits[chosen]

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "logits": self.logits}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images, self.logits = state["images"].cpu(), state["logits"].cpu()
