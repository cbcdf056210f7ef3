"""Few-shot knowledge transfer: KD + attention transfer on M real images per class (ZSKT §4.3).

Two uses, one loop:
- after zero-shot training: pass the zero-shot student as `task.student`; a few real images
  per class then correct what the pseudo data missed (the paper: CIFAR-10 83.69 -> 85.91 with
  M = 100 for WRN-40-2 -> WRN-16-1);
- from scratch: pass an untrained student; this is the paper's "KD+AT with M images" baseline
  (76% on CIFAR-10 with M = 100), which a data-free student should beat.

Student loss on a real batch x with labels y (Hinton et al.'s KD, Zagoruyko & Komodakis' AT):

    tau^2 * KL(softmax(t/tau) || softmax(s/tau)) + label_weight * CE(s, y) + beta * AT

The tau^2 factor keeps the KD gradient's size independent of tau, so beta keeps the meaning it
has in ZSKT (where tau = 1): the attention term and KL are taken exactly as there, and the
default beta is ZSKT's 250 * C (see core.methods.zskt.default_beta). The labels are optional:
label_weight = 0 (default) learns from the teacher alone, as the paper's transfer does.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from core.datasets import LabelledImages
from core.losses import agreement, attention_map, kl_divergence
from core.methods.zskt import default_beta
from core.taps import ActivationRecorder, attention_recorders
from core.training import (
    CancelledError,
    DistillationResult,
    DistillationTask,
    Throughput,
    TrainingHooks,
    check_finite,
    frozen,
    restore_rng_state,
    rng_state,
    seed_everything,
)


def take_per_class(data: LabelledImages, m: int, seed: int = 0) -> LabelledImages:
    """M images of every class present in `data`, drawn at random with `seed`.

    Raises ValueError when a class has fewer than M images: a smaller class would silently
    make the set unbalanced, and the point of the experiment is "M per class".
    """
    if m < 1:
        raise ValueError(f"need at least one image per class, got m={m}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(data.labels).tolist():
        indices = (data.labels == label).nonzero().flatten()
        if len(indices) < m:
            raise ValueError(f"class {label} has only {len(indices)} images, fewer than m={m}")
        chosen.append(indices[torch.randperm(len(indices), generator=generator)[:m]])
    order = torch.cat(chosen)
    order = order[torch.randperm(len(order), generator=generator)]
    return LabelledImages(data.images[order], data.labels[order])


@dataclass
class FewShotConfig:
    """Hyperparameters of the fine-tuning loop.

    The paper gives none for this phase; the defaults were measured on the MNIST digits with
    M = 10 (LeNet-5 -> LeNet-5-half, teacher 97.6%): from scratch 86% (89-90% at lr 3e-3), and a
    60-iteration DFAD student went from 87% to 92% (the same at lr 1e-4). tau = 4 beat tau = 1
    by 9 points from scratch.
    """

    iterations: int = 500
    batch_size: int = 64  # capped at the number of images
    images_per_class: int | None = None  # None: use all of `data`; M: take_per_class(data, M)
    lr: float = 1e-3  # Adam; fine-tuning a zero-shot student wants the lower end (1e-4 .. 1e-3)
    weight_decay: float = 5e-4
    temperature: float = 4.0  # Hinton's KD temperature
    label_weight: float = 0.0  # weight of cross-entropy on the true labels; 0 = teacher only
    beta: float | None = None  # attention weight; None means ZSKT's 250 * num_classes
    attention: bool = True
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10

    def effective(self, num_classes: int) -> FewShotConfig:
        """This config with every derived default filled in."""
        return replace(self, beta=default_beta(num_classes) if self.beta is None else self.beta)


Config = FewShotConfig


@torch.no_grad()
def _teacher_targets(
    teacher: torch.nn.Module, recorder: ActivationRecorder, images: torch.Tensor, chunk: int = 256
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The frozen teacher's logits and attention maps for every image, computed once.

    Attention maps ([N, H*W]) rather than activations ([N, C, H, W]) are kept: they are all the
    loss needs and a channel-count smaller, which matters for M = 100 on CIFAR-100.
    """
    logits, maps = [], []
    for first in range(0, len(images), chunk):
        logits.append(teacher(images[first : first + chunk]))
        maps.append([attention_map(a) for a in recorder.activations])
    return torch.cat(logits), [torch.cat(per_tap) for per_tap in zip(*maps, strict=True)]


def _attention_to_maps(
    teacher_maps: list[torch.Tensor], student_activations: list[torch.Tensor]
) -> torch.Tensor:
    """core.losses.attention_loss with the teacher side already reduced to attention maps."""
    total = student_activations[0].new_zeros(())
    for teacher_map, activation in zip(teacher_maps, student_activations, strict=True):
        total = total + (teacher_map - attention_map(activation)).pow(2).mean()
    return total


def distill(
    task: DistillationTask,
    config: FewShotConfig,
    data: LabelledImages,
    hooks: TrainingHooks | None = None,
    resume_from: dict[str, Any] | None = None,
) -> DistillationResult:
    """Fine-tune `task.student` on the real images `data` with KD (+ AT, + optional labels).

    `data` is in the teacher's normalised input space; with `images_per_class` set, M images per
    class are drawn from it first (with `seed`), so a job can hand over its whole labelled set.
    """
    hooks = hooks or TrainingHooks()
    config = config.effective(task.num_classes)
    assert config.beta is not None
    if config.images_per_class is not None:
        data = take_per_class(data, config.images_per_class, config.seed)
    if len(data.images) == 0:
        raise ValueError("few-shot transfer needs at least one real image")
    device = torch.device(config.device)
    sampler = seed_everything(config.seed)
    teacher = frozen(task.teacher.to(device))
    student = task.student.to(device).train()
    warnings: list[str] = []

    teacher_taps, student_taps, warning = attention_recorders(
        teacher,
        task.teacher_taps,
        student,
        task.student_taps,
        task.input_shape,
        config.attention,
        without="fine-tuning uses the KD term alone",
    )
    if warning:
        warnings.append(warning)
        hooks.on_warning(warning)

    images, labels = data.images.to(device), data.labels.to(device)
    try:
        teacher_logits_all, teacher_maps_all = _teacher_targets(teacher, teacher_taps, images)
    finally:
        teacher_taps.close()

    optimizer = torch.optim.Adam(
        student.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations)
    start = 0
    if resume_from:
        student.load_state_dict(resume_from["student"])
        optimizer.load_state_dict(resume_from["optimizer_student"])
        scheduler.load_state_dict(resume_from["scheduler_student"])
        sampler.set_state(resume_from["sampler"])
        restore_rng_state(resume_from["rng"])
        start = int(resume_from["step"])

    batch_size = min(config.batch_size, len(images))
    throughput = Throughput(batch_size)
    throughput.reset(start)
    metrics: dict[str, float] = {}
    step = start
    try:
        for step in range(start + 1, config.iterations + 1):
            # a fresh random batch each step: with M*C images an "epoch" is only a few steps
            batch = torch.randperm(len(images), generator=sampler)[:batch_size].to(device)
            student_logits = student(images[batch])
            teacher_logits = teacher_logits_all[batch]
            loss_kd = config.temperature**2 * kl_divergence(
                teacher_logits, student_logits, config.temperature
            )
            loss_attention = (
                _attention_to_maps([m[batch] for m in teacher_maps_all], student_taps.activations)
                if teacher_taps.active
                else loss_kd.new_zeros(())
            )
            loss_labels = (
                F.cross_entropy(student_logits, labels[batch])
                if config.label_weight
                else loss_kd.new_zeros(())
            )
            loss = loss_kd + config.beta * loss_attention + config.label_weight * loss_labels
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

            if step % config.log_every == 0 or step == config.iterations:
                metrics = {
                    "loss_student": loss.item(),
                    "kd": loss_kd.item(),
                    "attention": loss_attention.item(),
                    "cross_entropy": loss_labels.item(),
                    "train_agreement": agreement(teacher_logits, student_logits.detach()),
                    "lr_student": scheduler.get_last_lr()[0],
                }
                check_finite(step, metrics)
                hooks.on_log(step, metrics, throughput.progress(step, config.iterations))
            if hooks.checkpoint_every and step % hooks.checkpoint_every == 0:
                hooks.on_checkpoint(
                    step,
                    {
                        "method": "fewshot",
                        "step": step,
                        "config": asdict(config),
                        "student": student.state_dict(),
                        "optimizer_student": optimizer.state_dict(),
                        "scheduler_student": scheduler.state_dict(),
                        "sampler": sampler.get_state(),
                        "rng": rng_state(),
                    },
                )
            if hooks.should_stop(step):
                raise CancelledError(step)
    finally:
        student_taps.close()

    return DistillationResult(
        student=student,
        steps=step,
        metrics=metrics,
        elapsed_seconds=time.perf_counter() - throughput.started,
        warnings=warnings,
    )
