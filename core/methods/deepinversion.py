"""DeepInversion and Adaptive DeepInversion (Yin et al., CVPR 2020), written from the paper.

One iteration synthesises one batch: inputs x start as noise, each with a target class y, and
`synthesis_steps` Adam steps (betas 0.5, 0.9, cosine learning rate within the batch) minimise

    CE(T(a(x)), y) + bn * BN(x) + tv_l2 * TV_2(x) + tv_l1 * TV_1(x) + l2 * ||x||^2
        + competition * (1 - JS(T(a(x)), S(a(x))))          (ADI; 0 is plain DeepInversion)

where a is a random jitter and flip each step and BN the BatchNorm-statistics loss
(core/batchnorm.py, first layer weighted `first_bn_weight`). The batch and the teacher's logits on
it join the pool (core/pool.py); the student then takes `student_steps` KD steps on batches of the
pool (core/pool_student.py). The competition term pushes new inputs to where the student, as it
is now, disagrees with the teacher (docs/methods.md, "DeepInversion").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core.augment import jitter, random_flip
from core.batchnorm import BatchNormStatistics
from core.hyperparameters import MethodConfig, hyperparameter
from core.loop import MethodContext, MethodRun
from core.method_registry import BATCHNORM_STATISTICS, register_method
from core.pool import ImagePool
from core.pool_student import PoolStudent
from core.schedules import cosine, set_learning_rate

COMPETITION_TEMPERATURE = 3.0  # ADI's softmax temperature for the Jensen-Shannon term
PROBABILITY_CLAMP = (0.01, 0.99)


def total_variation(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L2, L1) total variation: mean squared and mean absolute differences of neighbours,
    horizontally and vertically."""
    across = images[:, :, :, 1:] - images[:, :, :, :-1]
    down = images[:, :, 1:, :] - images[:, :, :-1, :]
    l2 = across.pow(2).mean() + down.pow(2).mean()
    l1 = across.abs().mean() + down.abs().mean()
    return l2, l1


def jensen_shannon(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """JS divergence between the softened outputs at ADI's temperature, clamped as in the paper,
    averaged over the batch."""
    low, high = PROBABILITY_CLAMP
    p = F.softmax(teacher_logits / COMPETITION_TEMPERATURE, dim=1).clamp(low, high)
    q = F.softmax(student_logits / COMPETITION_TEMPERATURE, dim=1).clamp(low, high)
    m = (p + q) / 2
    divergence = (p * (p / m).log()).sum(1) + (q * (q / m).log()).sum(1)
    return (divergence / 2).mean()


@dataclass
class DeepInversionConfig(MethodConfig):
    """Defaults: the authors' released CIFAR-10 script where it differs from the paper's command
    (docs/methods.md says which); `synthesis_steps` and the pool are smaller on a CPU worker."""

    competition: float = hyperparameter(
        0.0, "ADI's competition weight (1 - JS between teacher and student); 0: DeepInversion", ge=0
    )
    synthesis_steps: int | None = hyperparameter(
        None,
        "Adam steps on each synthesised batch; unset: 2 000 on a GPU (the paper), 100 on a CPU",
        ge=1,
        le=100_000,
        cpu=100,
        gpu=2000,
    )
    lr_inputs: float = hyperparameter(
        0.1, "Adam learning rate on the inputs (released script: 0.1; paper command 0.05)", gt=0
    )
    # with 100 steps the paper's 10 leaves the teacher calling a third of the inputs their class;
    # 1 gives all of them (docs/methods.md, "DeepInversion")
    bn: float | None = hyperparameter(
        None,
        "weight of the BatchNorm-statistics loss; unset: 10 on a GPU (paper command; script: "
        "100), 1 on a CPU, where a batch gets 100 steps",
        ge=0,
        cpu=1.0,
        gpu=10.0,
    )
    first_bn_weight: float = hyperparameter(
        10.0, "extra weight of the first BatchNorm layer's term (paper: 10)", ge=0
    )
    tv_l2: float = hyperparameter(2.5e-5, "weight of the L2 total variation (script: 2.5e-5)", ge=0)
    tv_l1: float = hyperparameter(0.0, "weight of the L1 total variation", ge=0)
    l2: float = hyperparameter(0.0, "weight of ||x||^2 (ImageNet script: 1e-5)", ge=0)
    jitter: int = hyperparameter(2, "largest random shift of the inputs each step, pixels", ge=0)
    flip: bool | None = hyperparameter(
        None,
        "random horizontal flips each step; unset: on for 3-channel images, off for 1-channel "
        "ones (a mirrored digit is another symbol)",
    )
    pool_size: int = hyperparameter(
        8192, "synthesised inputs kept for the student (oldest leave first)", ge=1, le=1_000_000
    )
    student_steps: int = hyperparameter(
        10, "student KD steps on the pool after each synthesised batch", ge=0, le=10_000
    )
    lr_student: float = hyperparameter(
        0.05, "SGD learning rate of the student (momentum 0.9), cosine-annealed", gt=0, le=10
    )
    weight_decay: float = hyperparameter(1e-4, "SGD weight decay of the student", ge=0, le=1)
    temperature: float = hyperparameter(
        3.0, "KD temperature (the authors' answer: 3; CMI/Fast re-implementations: 20)", gt=0
    )
    iterations: int | None = hyperparameter(
        100, "batches to synthesise (each followed by the student's steps)", ge=1, le=1_000_000
    )
    batch_size: int = hyperparameter(256, "inputs per synthesised batch (script: 256)", ge=2)

    DATA_SIZE_FIELD = "pool_size"

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> DeepInversionConfig:
        flip = self.flip
        if flip is None and input_shape is not None:
            flip = input_shape[0] == 3
        return self.with_device_defaults(flip=flip)

    def data_bytes(self, num_classes: int, input_shape: tuple[int, ...]) -> int:
        per_input = 4 * (math.prod(input_shape) + num_classes)
        return 2 * self.pool_size * per_input  # the pool and its concatenation while growing


@register_method(
    "deepinversion",
    title="DeepInversion",
    summary="inverts the teacher: optimises inputs to match its BatchNorm statistics and chosen "
    "classes (ADI: and to make the student disagree), then distils on them",
    paper="Yin, Molchanov, Alvarez, Li, Mallya, Hoiem, Jha & Kautz, Dreaming to Distill: "
    "Data-free Knowledge Transfer via DeepInversion, CVPR 2020",
    config=DeepInversionConfig,
    requirements=(BATCHNORM_STATISTICS,),
    example={"synthesis_steps": 50, "pool_size": 4096, "competition": 1.0},
)
class DeepInversion(MethodRun):
    config: DeepInversionConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        config = self.config
        self.statistics = context.closes(BatchNormStatistics(context.teacher))
        self.pool = ImagePool(config.pool_size)
        self.student = PoolStudent(
            context, config.lr_student, config.temperature, config.weight_decay, config.seed
        )
        self.draws = torch.Generator().manual_seed(config.seed * 1_000_003 + 11)
        self.latest: dict[str, torch.Tensor] = {}

    def inputs_per_step(self, step: int) -> int:
        return self.config.batch_size

    def step(self, step: int, fraction: float) -> None:
        images = self._synthesise()
        with torch.no_grad():
            logits = self.context.teacher(images)
        self.pool.add(images, logits)
        config = self.config
        self.student.train(self.pool, config.student_steps, config.batch_size, fraction)

    def _synthesise(self) -> torch.Tensor:
        config, context = self.config, self.context
        assert config.synthesis_steps is not None
        device, shape = context.device, context.task.input_shape
        targets = torch.randint(
            0, context.task.num_classes, (config.batch_size,), generator=self.draws
        )
        noise = torch.randn(config.batch_size, *shape, generator=self.draws)
        inputs = noise.to(device).requires_grad_(True)
        targets = targets.to(device)
        optimizer = torch.optim.Adam([inputs], lr=config.lr_inputs, betas=(0.5, 0.9))
        bn = config.bn
        assert bn is not None, "call with config.effective(...)"
        student = context.student
        student.eval()  # the competition asks the student as it answers at inference
        student.requires_grad_(False)
        for inner in range(config.synthesis_steps):
            set_learning_rate(optimizer, config.lr_inputs, cosine(inner / config.synthesis_steps))
            augmented = jitter(inputs, config.jitter, self.draws)
            if config.flip:
                augmented = random_flip(augmented, self.draws)
            teacher_logits = context.teacher(augmented)
            terms = {
                "cross_entropy": F.cross_entropy(teacher_logits, targets),
                "bn": self.statistics.loss(config.first_bn_weight),
            }
            terms["tv_l2"], terms["tv_l1"] = total_variation(inputs)
            terms["l2"] = inputs.pow(2).mean()
            loss = (
                terms["cross_entropy"]
                + bn * terms["bn"]
                + config.tv_l2 * terms["tv_l2"]
                + config.tv_l1 * terms["tv_l1"]
                + config.l2 * terms["l2"]
            )
            if config.competition:
                terms["competition"] = 1 - jensen_shannon(teacher_logits, student(augmented))
                loss = loss + config.competition * terms["competition"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        student.requires_grad_(True)
        student.train()
        self.latest = {name: value.detach() for name, value in terms.items()}
        self.latest["synthesis_accuracy"] = (teacher_logits.argmax(1) == targets).float().mean()
        return inputs.detach()

    def metrics(self, step: int) -> dict[str, float]:
        return {
            **{name: value.item() for name, value in self.latest.items()},
            **self.student.metrics(),
            "pool_size": float(len(self.pool)),
        }

    def samples(self, count: int) -> torch.Tensor | None:
        return self.pool.images[-count:] if len(self.pool) else None

    def synthetic_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool.images, self.pool.logits

    def state_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.state_dict(),
            "student": self.student.state_dict(),
            "draws": self.draws.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state["pool"])
        self.student.load_state_dict(state["student"])
        self.draws.set_state(state["draws"])
