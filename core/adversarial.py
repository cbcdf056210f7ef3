"""What the generator-based methods share: a generator and the student, each with an optimiser,
their checkpointed state, sample grids and metrics on fresh pseudo batches."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from core.evaluation import fresh_pseudo_batch_metrics
from core.generators import draw_samples
from core.loop import MethodContext, MethodRun
from core.losses import distillation_loss


class AdversarialRun(MethodRun):
    """A MethodRun with a generator. Subclasses build `generator` and both optimisers in
    `__init__` (after calling this one) and write `step` and `metrics`."""

    generator: nn.Module
    optimizer_generator: torch.optim.Optimizer
    optimizer_student: torch.optim.Optimizer

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        # fresh pseudo batches for the metrics come from their own stream: logging never moves
        # training
        self.fresh_draws = torch.Generator(device=context.device).manual_seed(self.config.seed + 1)

    def start(self, generator: nn.Module) -> None:
        """Put the generator on the device and make the training passes' runners."""
        context = self.context
        self.generator = generator.to(context.device).train()
        self.run_teacher = context.forward_of(context.teacher)
        self.run_student = context.forward_of(context.student)
        self.run_generator = context.forward_of(self.generator)

    def student_kd_step(
        self, inputs: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
    ) -> None:
        """One student step of KD at `temperature` on `inputs` (detached) with the teacher's
        `teacher_logits` (DAFL, DFQ); keeps the logits and the loss for the metrics."""
        self.teacher_logits = teacher_logits
        self.student_logits = self.run_student(inputs)
        self.loss_student = distillation_loss(teacher_logits, self.student_logits, temperature)
        self.optimizer_student.zero_grad(set_to_none=True)
        self.loss_student.backward()
        self.optimizer_student.step()

    def z(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(
            self.config.batch_size,
            self.config.z_dim,
            device=self.context.device,
            generator=generator,
        )

    def fresh_metrics(self, temperature: float = 1.0) -> dict[str, float]:
        """Agreement and KL on a pseudo batch the student never trained on."""
        context = self.context
        return fresh_pseudo_batch_metrics(
            self.generator,
            context.teacher,
            context.student,
            self.z(self.fresh_draws),
            temperature,
        )

    def samples(self, count: int) -> torch.Tensor:
        return draw_samples(self.generator, self.config.z_dim, count)

    def _parts(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "optimizer_generator": self.optimizer_generator,
            "optimizer_student": self.optimizer_student,
        }

    def state_dict(self) -> dict[str, Any]:
        # the fresh draws too: the metrics' batches also move the generator's BatchNorm running
        # statistics (train mode), which the sample grids use
        state = {name: part.state_dict() for name, part in self._parts().items()}
        return state | {"fresh_draws": self.fresh_draws.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, part in self._parts().items():
            part.load_state_dict(state[name])
        if "fresh_draws" in state:  # checkpoints written before it was kept have none
            self.fresh_draws.set_state(state["fresh_draws"])
