"""Few-shot knowledge transfer: KD + attention transfer on M real images per class (ZSKT §4.3).

A follow-up phase of the shared loop (core/loop.py `FollowUp`), after any method. Two uses:
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

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core.datasets import LabelledImages
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext, MethodRun, Phase, run_phases
from core.losses import agreement, attention_map, kl_divergence
from core.methods.zskt import default_beta
from core.schedules import cosine, set_learning_rate
from core.taps import ActivationRecorder
from core.training import DistillationResult, DistillationTask, TrainingHooks

PHASE_NAME = "few_shot"


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
class FewShotConfig(MethodConfig):
    """Hyperparameters of the fine-tuning phase.

    The paper gives none for this phase; the defaults were measured on the MNIST digits with
    M = 10 (LeNet-5 -> LeNet-5-half, teacher 97.6%): from scratch 86% (89-90% at lr 3e-3), and a
    60-iteration DFAD student went from 87% to 92% (the same at lr 1e-4). tau = 4 beat tau = 1
    by 9 points from scratch.
    """

    iterations: int | None = hyperparameter(500, "fine-tuning steps", ge=1)
    batch_size: int = hyperparameter(64, "real images per step (capped at the set's size)", ge=1)
    images_per_class: int | None = hyperparameter(
        None, "M real images per class taken from the set; unset: all of it", ge=1
    )
    lr: float = hyperparameter(
        1e-3, "Adam learning rate, cosine-annealed (1e-4 .. 1e-3 after a data-free run)", gt=0
    )
    weight_decay: float = hyperparameter(5e-4, "Adam weight decay", ge=0)
    temperature: float = hyperparameter(4.0, "Hinton's KD temperature", gt=0)
    label_weight: float = hyperparameter(
        0.0, "weight of cross-entropy on the true labels; 0 learns from the teacher alone", ge=0
    )
    beta: float | None = hyperparameter(
        None, "attention weight; unset: ZSKT's 250 x num_classes", ge=0
    )
    attention: bool = hyperparameter(True, "attention transfer on taps of matching size")

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> FewShotConfig:
        return self.with_device_defaults(
            beta=default_beta(num_classes) if self.beta is None else self.beta
        )


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


class FewShot(MethodRun):
    """KD (+ AT, + optional labels) on real images `data`, in the teacher's normalised input
    space; with `images_per_class` set, M images per class are drawn from it first."""

    config: FewShotConfig
    method_name = PHASE_NAME

    def __init__(self, context: MethodContext, data: LabelledImages) -> None:
        super().__init__(context)
        config, device = self.config, context.device
        if config.images_per_class is not None:
            data = take_per_class(data, config.images_per_class, config.seed)
        if len(data.images) == 0:
            raise ValueError("few-shot transfer needs at least one real image")
        self.sampler = torch.Generator().manual_seed(config.seed)
        teacher_taps, self.student_taps = context.attention_taps(
            config.attention, without="fine-tuning uses the KD term alone"
        )
        self.attention = teacher_taps.active
        self.images, self.labels = data.images.to(device), data.labels.to(device)
        try:
            self.teacher_logits, self.teacher_maps = _teacher_targets(
                context.teacher, teacher_taps, self.images
            )
        finally:
            teacher_taps.close()
        self.optimizer = torch.optim.Adam(
            context.student.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.batch_size = min(config.batch_size, len(self.images))

    def inputs_per_step(self, step: int) -> int:
        return self.batch_size

    def step(self, step: int, fraction: float) -> None:
        config = self.config
        self.lr = set_learning_rate(self.optimizer, config.lr, cosine(fraction))
        # a fresh random batch each step: with M*C images an "epoch" is only a few steps
        batch = torch.randperm(len(self.images), generator=self.sampler)[: self.batch_size]
        batch = batch.to(self.context.device)
        student_logits = self.context.student(self.images[batch])
        teacher_logits = self.teacher_logits[batch]
        loss_kd = config.temperature**2 * kl_divergence(
            teacher_logits, student_logits, config.temperature
        )
        loss_attention = (
            _attention_to_maps([m[batch] for m in self.teacher_maps], self.student_taps.activations)
            if self.attention
            else loss_kd.new_zeros(())
        )
        loss_labels = (
            F.cross_entropy(student_logits, self.labels[batch])
            if config.label_weight
            else loss_kd.new_zeros(())
        )
        assert config.beta is not None
        loss = loss_kd + config.beta * loss_attention + config.label_weight * loss_labels
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.latest = (loss, loss_kd, loss_attention, loss_labels, teacher_logits, student_logits)

    def metrics(self, step: int) -> dict[str, float]:
        loss, loss_kd, loss_attention, loss_labels, teacher_logits, student_logits = self.latest
        return {
            "loss_student": loss.item(),
            "kd": loss_kd.item(),
            "attention": loss_attention.item(),
            "cross_entropy": loss_labels.item(),
            "train_agreement": agreement(teacher_logits, student_logits.detach()),
            "lr_student": self.lr,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer_student": self.optimizer.state_dict(),
            "sampler": self.sampler.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer_student"])
        self.sampler.set_state(state["sampler"])


def few_shot_phase(data: LabelledImages, config: FewShotConfig) -> Phase:
    """Fine-tuning on `data`: the phase after a method (its metrics prefixed few_shot_ there), or
    alone with `run_phases` (the paper's KD+AT baseline from scratch)."""
    return Phase(PHASE_NAME, lambda context: FewShot(context, data), config)


def fine_tune(
    task: DistillationTask,
    config: FewShotConfig,
    data: LabelledImages,
    hooks: TrainingHooks | None = None,
    resume_from: dict[str, Any] | None = None,
) -> DistillationResult:
    """Few-shot fine-tuning alone: the paper's "KD+AT with M images" baseline from scratch."""
    return run_phases(task, (few_shot_phase(data, config),), hooks, resume_from)
