"""Generators that map z ~ N(0, I) to pseudo inputs in the teacher's normalised input space."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

GeneratorFactory = Callable[..., nn.Module]
_GENERATORS: dict[str, GeneratorFactory] = {}


def register_generator(factory: GeneratorFactory) -> GeneratorFactory:
    _GENERATORS[factory.__name__] = factory
    return factory


def build_generator(name: str, **kwargs: object) -> nn.Module:
    try:
        factory = _GENERATORS[name]
    except KeyError:
        raise KeyError(f"unknown generator {name!r}; known: {sorted(_GENERATORS)}") from None
    return factory(**kwargs)


def generator_names() -> list[str]:
    return sorted(_GENERATORS)


@torch.no_grad()
def draw_samples(generator: nn.Module, z_dim: int, count: int, seed: int = 0) -> torch.Tensor:
    """Pseudo inputs for a sample grid: eval mode (running BN statistics) and a fixed z, so grids
    from different steps show the same draws. The generator's mode is restored afterwards."""
    device = next(generator.parameters()).device
    z = torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    was_training = generator.training
    generator.eval()
    try:
        return generator(z).cpu()
    finally:
        generator.train(was_training)


class ZSKTGenerator(nn.Module):
    """ZSKT's generator (Micaelli & Storkey, 2019), generalised over image size and width.

    Linear(z -> w*(s/4)^2) -> BN -> up x2 -> conv3x3 w->w -> BN -> LeakyReLU(0.2) -> up x2 ->
    conv3x3 w->w/2 -> BN -> LeakyReLU(0.2) -> conv3x3 w/2->C -> BatchNorm(C, affine).
    No tanh: the final BatchNorm puts samples in the teacher's normalised input space.
    The paper's width w is 128; a narrower one trades sample capacity for CPU speed.
    """

    def __init__(self, z_dim: int, out_channels: int, image_size: int, width: int) -> None:
        super().__init__()
        if image_size % 4 != 0:
            raise ValueError(
                f"the ZSKT generator needs an image size divisible by 4, got {image_size}"
            )
        self.z_dim = z_dim
        self.width = width
        self.init_size = image_size // 4
        self.project = nn.Linear(z_dim, width * self.init_size**2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, 1, 1),
            nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, out_channels, 3, 1, 1),
            nn.BatchNorm2d(out_channels, affine=True),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        return self.body(x)


@register_generator
def zskt(
    z_dim: int = 100, out_channels: int = 3, image_size: int = 32, width: int = 128
) -> nn.Module:
    return ZSKTGenerator(z_dim, out_channels, image_size, width)
