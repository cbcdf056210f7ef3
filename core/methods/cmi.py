"""CMI: contrastive model inversion (Fang, Song, Wang, Shen, Wang & Song, IJCAI 2021).

DeepInversion's batches look alike: nothing stops two batches from inverting to the same few
modes. CMI synthesises each batch with a freshly initialised generator and a learnable latent z
against

    bn * BN-statistics loss + oh * CE(T(x), targets) + adv * (-KL(S || T) where S and T agree)
    + cr * contrastive loss

The contrastive loss (InfoNCE at temperature `cr_temperature`) embeds every input through the
teacher (the channel means of every BatchNorm layer's input, concatenated) and a small MLP head
trained with the generator: an input's two views (a random crop-and-flip "global" view and a
random resized "local" view) are the positive pair, the batch's other inputs and a memory bank
of earlier batches' embeddings are the negatives. So new inputs are pushed away from everything
synthesised before. The round's best inputs go to the pool (core/pool_synthesis.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.augment import random_resized_crop
from core.generators import build_generator
from core.hyperparameters import hyperparameter
from core.loop import MethodContext
from core.losses import float32_math
from core.method_registry import BATCHNORM_STATISTICS, register_method
from core.pool_synthesis import PoolSynthesisConfig, PoolSynthesisRun

LOCAL_VIEW_MIN_SCALE = 0.25  # the local view covers 25-100% of the image (CMI's released aug)
HEAD_HIDDEN, HEAD_OUTPUT = 256, 128


class ProjectionHead(nn.Module):
    """Linear -> ReLU -> Linear, outputs L2-normalised: the space the contrast is measured in."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(features, HEAD_HIDDEN), nn.ReLU(), nn.Linear(HEAD_HIDDEN, HEAD_OUTPUT)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.body(features), dim=1)


def contrastive_loss(
    local: torch.Tensor, global_: torch.Tensor, bank: torch.Tensor, temperature: float
) -> torch.Tensor:
    """InfoNCE: row i of `local` should be nearest to row i of `global_` among all of `global_`
    and `bank` (embeddings, L2-normalised)."""
    with float32_math(local):
        candidates = torch.cat([global_, bank]) if len(bank) else global_
        logits = local.float() @ candidates.float().T / temperature
        return F.cross_entropy(logits, torch.arange(len(local), device=local.device))


@dataclass
class CMIConfig(PoolSynthesisConfig):
    """Defaults: the released CIFAR-10 script on a GPU; CPU values measured in docs/methods.md,
    "CMI"."""

    synthesis_steps: int | None = hyperparameter(
        None,
        "steps of the fresh generator and z on each batch; unset: 200 on a GPU (released "
        "g_steps), 40 on a CPU",
        ge=1,
        le=100_000,
        cpu=40,
        gpu=200,
    )
    lr_generator: float = hyperparameter(
        1e-3, "Adam lr of generator, z and head (released 1e-3)", gt=0
    )
    bn: float = hyperparameter(1.0, "weight of the BatchNorm-statistics loss (released 1)", ge=0)
    one_hot: float = hyperparameter(1.0, "weight of the CE to the targets (released 1)", ge=0)
    adv: float = hyperparameter(0.5, "weight of the adversarial term (released 0.5)", ge=0)
    cr: float = hyperparameter(0.8, "weight of the contrastive loss (released 0.8)", ge=0)
    cr_temperature: float = hyperparameter(
        0.2, "temperature of the contrastive loss (released 0.2)", gt=0
    )
    bank_size: int = hyperparameter(
        4096, "earlier inputs' embeddings kept as negatives (released n_neg 4096)", ge=0
    )
    z_dim: int = hyperparameter(256, "latent dimension (released nz 256)", ge=1, le=4096)
    generator_width: int | None = hyperparameter(
        None,
        "channels after the generator's projection; unset: 128 on a GPU (released), 32 on a CPU",
        ge=2,
        le=1024,
        cpu=32,
        gpu=128,
    )


@register_method(
    "cmi",
    title="CMI",
    summary="each batch from a fresh generator, matched to the teacher's BatchNorm statistics "
    "and pushed away from earlier batches by a contrastive loss; the student learns by KD on "
    "the pool",
    paper="Fang, Song, Wang, Shen, Wang & Song, Contrastive Model Inversion for Data-Free "
    "Knowledge Distillation, IJCAI 2021",
    config=CMIConfig,
    requirements=(BATCHNORM_STATISTICS,),
    example={"synthesis_steps": 20},
)
class CMI(PoolSynthesisRun):
    config: CMIConfig

    def __init__(self, context: MethodContext) -> None:
        super().__init__(context)
        features = sum(layer.num_features for layer in self.statistics.layers)
        self.head = ProjectionHead(features).to(context.device)
        self.head_optimizer = torch.optim.Adam(
            self.head.parameters(), lr=self.config.lr_generator, betas=(0.5, 0.999)
        )
        self.bank = torch.zeros(0, features)  # teacher features of earlier inputs (CPU)

    def synthesis_steps_per_round(self) -> int:
        assert self.config.synthesis_steps is not None
        return self.config.synthesis_steps

    def fresh_generator(self) -> nn.Module:
        """A generator initialised from the synthesis stream (so a resumed run builds the same)."""
        config, (channels, size, _) = self.config, self.context.task.input_shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.draws)))
            generator = build_generator(
                "dafl",
                z_dim=config.z_dim,
                out_channels=channels,
                image_size=size,
                width=config.generator_width,
            )
        return generator.to(self.context.device)

    def synthesise(self, step: int, fraction: float) -> torch.Tensor:
        config = self.config
        assert config.synthesis_steps is not None
        generator = self.fresh_generator()
        z = self.noise(config.batch_size, config.z_dim).requires_grad_()
        targets = self.targets()
        optimizer = torch.optim.Adam(
            [{"params": generator.parameters()}, {"params": [z]}],
            lr=config.lr_generator,
            betas=(0.5, 0.999),
        )
        bank = self.bank[-config.bank_size :].to(self.context.device) if config.bank_size else None
        best_loss, best, best_features = math.inf, None, None
        for _ in range(config.synthesis_steps):
            inputs = generator(z)
            global_view = self.augment(inputs, self.draws)
            teacher_logits = self.run_teacher(global_view)
            bn = self.statistics.loss()
            global_features = self.statistics.instance_means()
            oh = F.cross_entropy(teacher_logits.float(), targets)
            adv = self.adversarial(config.adv, teacher_logits, global_view)
            self.run_teacher(random_resized_crop(inputs, LOCAL_VIEW_MIN_SCALE, self.draws))
            local_features = self.statistics.instance_means()
            negatives = (
                self.head(bank)
                if bank is not None and len(bank)
                else global_features.new_zeros(0, HEAD_OUTPUT)
            )
            contrast = contrastive_loss(
                self.head(local_features),
                self.head(global_features),
                negatives,
                config.cr_temperature,
            )
            loss = config.bn * bn + config.one_hot * oh + config.adv * adv + config.cr * contrast
            if loss.item() < best_loss:
                best_loss = loss.item()
                best, best_features = inputs.detach(), global_features.detach()
            optimizer.zero_grad(set_to_none=True)
            self.head_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self.head_optimizer.step()
        assert best is not None and best_features is not None
        if config.bank_size:
            self.bank = torch.cat([self.bank, best_features.cpu()])[-config.bank_size :]
        self.terms = {
            "loss_synthesis": best_loss,
            "loss_bn": bn.item(),
            "loss_one_hot": oh.item(),
            "loss_adversarial": adv.item(),
            "loss_contrast": contrast.item(),
            "target_agreement": (teacher_logits.argmax(1) == targets).float().mean().item(),
        }
        return best

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "head": self.head.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
            "bank": self.bank,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank = state["bank"].cpu()
