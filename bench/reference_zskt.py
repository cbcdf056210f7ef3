"""A plain ZSKT loop written the way the paper's released code runs it: the speed baseline.

Same math as core.methods.zskt (same generator, optimisers, schedules, losses, seeds and random
draws, so both loops train the same student), with the released code's habits:
- the generator is an "infinite loader": every student step asks it for the batch again, so the
  generator runs forward with a graph n_s more times per iteration, and each student backward
  also flows into the generator (those gradients are thrown away by the next zero_grad);
- the student's parameters keep requires_grad during the generator step (their gradients are
  computed and discarded);
- the teacher runs once in the generator step and once more, under no_grad, before the student
  steps (the released code already caches it there);
- eager PyTorch with default threading, contiguous NCHW, the default (for-loop) Adam.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.generators import build_generator
from core.losses import attention_loss, kl_divergence
from core.methods.zskt import ZSKTConfig
from core.taps import ActivationRecorder
from core.training import frozen, seed_everything


def reference_distill(
    teacher: nn.Module,
    student: nn.Module,
    taps: tuple[tuple[str, ...], tuple[str, ...]],
    input_shape: tuple[int, int, int],
    num_classes: int,
    config: ZSKTConfig,
    after_iteration: Callable[[int], None] = lambda step: None,
) -> nn.Module:
    """Train `student` in place; `after_iteration(step)` is called after each iteration."""
    config = config.effective(num_classes)
    assert config.beta is not None and config.generator_width is not None
    assert config.grad_clip is not None
    seed_everything(config.seed)
    teacher = frozen(teacher)
    student.train()
    channels, size, _ = input_shape
    generator = build_generator(
        "zskt",
        z_dim=config.z_dim,
        out_channels=channels,
        image_size=size,
        width=config.generator_width,
    ).train()
    optimizer_generator = torch.optim.Adam(generator.parameters(), lr=config.lr_generator)
    optimizer_student = torch.optim.Adam(student.parameters(), lr=config.lr_student)
    scheduler_generator = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer_generator, T_max=config.iterations
    )
    scheduler_student = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer_student, T_max=config.iterations
    )
    teacher_taps = ActivationRecorder(teacher, taps[0])
    student_taps = ActivationRecorder(student, taps[1])

    for step in range(1, config.iterations + 1):
        z = torch.randn(config.batch_size, config.z_dim)
        for _ in range(config.generator_steps):
            pseudo = generator(z)
            loss_generator = -kl_divergence(teacher(pseudo), student(pseudo), config.temperature)
            optimizer_generator.zero_grad()
            loss_generator.backward()
            nn.utils.clip_grad_norm_(generator.parameters(), config.grad_clip)
            optimizer_generator.step()

        for index in range(config.student_steps):
            pseudo = generator(z)  # the loader hands out the batch again, with a graph
            if index == 0:
                with torch.no_grad():
                    teacher_logits = teacher(pseudo)
                    teacher_activations = list(teacher_taps.activations)
            student_logits = student(pseudo)
            loss = kl_divergence(teacher_logits, student_logits, config.temperature)
            if config.attention and teacher_activations:
                loss = loss + config.beta * attention_loss(
                    teacher_activations, student_taps.activations
                )
            optimizer_student.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
            optimizer_student.step()

        scheduler_generator.step()
        scheduler_student.step()
        after_iteration(step)

    teacher_taps.close()
    student_taps.close()
    return student
