"""A plain DFAD loop written the way the paper's released code runs it: the speed baseline.

Same math as core.methods.dfad (same generator, optimisers, schedules, L1 loss, seeds and random
draws, so both loops train the same student), with the released code's habits:
- student steps call the generator with autograd recording and detach its output afterwards;
- the student's parameters keep requires_grad during the generator step (their gradients are
  computed and thrown away by the next zero_grad);
- eager PyTorch with default threading, contiguous NCHW, the default (for-loop) Adam and SGD.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.methods.dfad import LR_DECAY, DFADConfig, build_dfad_generator
from core.training import frozen, seed_everything


def reference_distill(
    teacher: nn.Module,
    student: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    config: DFADConfig,
    after_iteration: Callable[[int], None] = lambda step: None,
) -> nn.Module:
    """Train `student` in place; `after_iteration(step)` is called after each iteration."""
    config = config.effective(num_classes, input_shape)
    assert config.generator is not None and config.z_dim is not None
    assert config.generator_width is not None and config.lr_student is not None
    seed_everything(config.seed)
    teacher = frozen(teacher)
    student.train()
    generator = build_dfad_generator(
        config.generator, config.z_dim, input_shape, config.generator_width
    ).train()
    optimizer_generator = torch.optim.Adam(generator.parameters(), lr=config.lr_generator)
    optimizer_student = torch.optim.SGD(
        student.parameters(),
        lr=config.lr_student,
        momentum=config.momentum,
        weight_decay=config.weight_decay or 0.0,
    )
    milestones = sorted({max(1, round(f * config.iterations)) for f in config.lr_milestones})
    scheduler_generator = torch.optim.lr_scheduler.MultiStepLR(
        optimizer_generator, milestones, LR_DECAY
    )
    scheduler_student = torch.optim.lr_scheduler.MultiStepLR(
        optimizer_student, milestones, LR_DECAY
    )

    for step in range(1, config.iterations + 1):
        for _ in range(config.student_steps):
            z = torch.randn(config.batch_size, config.z_dim)
            optimizer_student.zero_grad()
            fake = generator(z).detach()
            teacher_logits = teacher(fake)
            loss = F.l1_loss(student(fake), teacher_logits.detach())
            loss.backward()
            optimizer_student.step()
        for _ in range(config.generator_steps):
            z = torch.randn(config.batch_size, config.z_dim)
            optimizer_generator.zero_grad()
            fake = generator(z)
            loss_generator = -F.l1_loss(student(fake), teacher(fake))
            loss_generator.backward()
            optimizer_generator.step()
        scheduler_generator.step()
        scheduler_student.step()
        after_iteration(step)
    return student
