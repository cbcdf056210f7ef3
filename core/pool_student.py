"""The student's side of the pool methods (DeepInversion, CMI, FastDFKD): knowledge distillation
at temperature T on batches drawn from the pool of synthesised inputs (docs/methods.md,
"BatchNorm statistics").

With an `augmentation` the drawn batch is augmented (random crop, flip) and the teacher answers
on the augmented inputs, as in the released Fast-Datafree training; without one the teacher's
logits stored in the pool are used and no teacher pass is needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from core.loop import MethodContext
from core.losses import agreement, kl_divergence
from core.pool import ImagePool
from core.schedules import cosine, set_learning_rate

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class PoolStudent:
    """SGD with momentum, cosine-annealed over the run, on KL(T || S) at `temperature` (scaled by
    T^2 so the gradient's size does not depend on it)."""

    def __init__(
        self,
        context: MethodContext,
        lr: float,
        temperature: float,
        weight_decay: float,
        seed: int,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.context, self.lr, self.temperature = context, lr, temperature
        self.augmentation = augmentation
        self.optimizer = torch.optim.SGD(
            context.student.parameters(),
            lr=lr,
            momentum=0.9,
            weight_decay=weight_decay,
            **context.speed.optimizer_options(),
        )
        self.run_teacher = context.forward_of(context.teacher)
        self.run_student = context.forward_of(context.student)
        self.draws = torch.Generator().manual_seed(seed * 31 + 7)
        self.latest: dict[str, torch.Tensor] = {}

    def train(self, pool: ImagePool, steps: int, batch_size: int, fraction: float) -> None:
        self.current_lr = set_learning_rate(self.optimizer, self.lr, cosine(fraction))
        device = self.context.device
        for _ in range(steps):
            images, teacher_logits = pool.sample(batch_size, self.draws)
            images = images.to(device)
            if self.augmentation is None:
                teacher_logits = teacher_logits.to(device)
            else:
                images = self.augmentation(images, self.draws)
                with torch.no_grad():
                    teacher_logits = self.run_teacher(images)
            student_logits = self.run_student(images)
            loss = self.temperature**2 * kl_divergence(
                teacher_logits, student_logits, self.temperature
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.latest = {
                "loss": loss.detach(),
                "teacher": teacher_logits,
                "student": student_logits.detach(),
            }

    def metrics(self) -> dict[str, float]:
        if not self.latest:
            return {}
        return {
            "loss_student": self.latest["loss"].item(),
            "pool_agreement": agreement(self.latest["teacher"], self.latest["student"]),
            "lr_student": self.current_lr,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "draws": self.draws.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.draws.set_state(state["draws"])
