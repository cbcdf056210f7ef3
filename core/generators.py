"""Generators that map z ~ N(0, I) to pseudo inputs in the teacher's normalised input space."""

from __future__ import annotations

import itertools
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

    def __init__(
        self,
        z_dim: int,
        out_channels: int,
        image_size: int,
        width: int,
        output: tuple[nn.Module, ...] | None = None,
        name: str = "ZSKT",
    ) -> None:
        super().__init__()
        if image_size % 4 != 0:
            raise ValueError(
                f"the {name} generator needs an image size divisible by 4, got {image_size}"
            )
        if width < 2:
            raise ValueError(f"generator width must be at least 2, got {width}")
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
            *(output or (nn.BatchNorm2d(out_channels, affine=True),)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.width, self.init_size, self.init_size)
        return self.body(x)


@register_generator
def zskt(
    z_dim: int = 100, out_channels: int = 3, image_size: int = 32, width: int = 128
) -> nn.Module:
    return ZSKTGenerator(z_dim, out_channels, image_size, width)


class DAFLGenerator(ZSKTGenerator):
    """DAFL's generator (Chen et al., 2019), DFAD's "generator A" for images up to 64 px.

    The ZSKT layout, except that the output goes through Tanh and then a BatchNorm without
    affine parameters: Tanh bounds each pixel, the parameter-free BN then standardises every
    channel over the batch, so samples land at roughly zero mean and unit variance, the scale of
    a teacher's normalised inputs. The paper's width is 128 (DFAD's ngf=64 doubled).
    """

    def __init__(self, z_dim: int, out_channels: int, image_size: int, width: int) -> None:
        output = (nn.Tanh(), nn.BatchNorm2d(out_channels, affine=False))
        super().__init__(z_dim, out_channels, image_size, width, output=output, name="DAFL")


class DCGANGenerator(nn.Module):
    """DCGAN-style generator (Radford et al., 2016), DFAD's "generator B" for larger images.

    Linear(z -> 8f*(s/16)^2) -> BN -> four [ConvTranspose 4x4 stride 2 -> BN -> LeakyReLU(0.2)]
    (channels 8f -> 4f -> 2f -> f -> f) -> conv3x3 f->C -> Tanh, with f = 64 * width. Four
    transposed convs double the size four times, hence the s/16 seed map. Weights start at
    N(0, 0.02) and BN scales at N(1, 0.02), DCGAN's initialisation, which keeps the early
    samples from saturating the Tanh.
    """

    def __init__(self, z_dim: int, out_channels: int, image_size: int, width: float) -> None:
        super().__init__()
        if image_size % 16 != 0:
            raise ValueError(
                f"the DCGAN generator needs an image size divisible by 16, got {image_size}"
            )
        features = max(1, round(64 * width))
        self.z_dim = z_dim
        self.seed_channels = 8 * features
        self.init_size = image_size // 16
        self.project = nn.Linear(z_dim, self.seed_channels * self.init_size**2)
        layers: list[nn.Module] = [nn.BatchNorm2d(self.seed_channels)]
        channels = (8 * features, 4 * features, 2 * features, features, features)
        for in_channels, out_channels_ in itertools.pairwise(channels):
            layers += [
                nn.ConvTranspose2d(in_channels, out_channels_, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out_channels_),
                nn.LeakyReLU(0.2),
            ]
        layers += [nn.Conv2d(features, out_channels, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.seed_channels, self.init_size, self.init_size)
        return self.body(x)


@register_generator
def dafl(
    z_dim: int = 256, out_channels: int = 3, image_size: int = 32, width: int = 128
) -> nn.Module:
    return DAFLGenerator(z_dim, out_channels, image_size, width)


@register_generator
def dcgan(
    z_dim: int = 256, out_channels: int = 3, image_size: int = 128, width: float = 1.0
) -> nn.Module:
    return DCGANGenerator(z_dim, out_channels, image_size, width)


# DFAD used generator A on 32 px data and B on 128 px (Caltech-101). Between the two this
# project draws the line at 64 px: A's two up-samplings from an (s/4)^2 seed map are still a
# shallow path at 64 px, while beyond it B's four learned up-samplings are the paper's choice.
LARGE_IMAGE_PIXELS = 64


def generator_for(input_shape: tuple[int, int, int]) -> str:
    """The registry name of the generator DFAD would use for inputs of shape (C, H, W):
    "dafl" (generator A) up to 64 px, "dcgan" (generator B) above."""
    _, height, width = input_shape
    return "dafl" if max(height, width) <= LARGE_IMAGE_PIXELS else "dcgan"


# Generator A's paper width: 128 channels after the projection (DFAD's ngf = 64, doubled; DAFL's
# released generator); generator B is parameterised by a multiplier of its ngf = 64.
PAPER_DAFL_WIDTH = 128


def build_scaled_generator(
    name: str, z_dim: int, input_shape: tuple[int, int, int], width: float
) -> nn.Module:
    """A registered generator at `width` times the paper's width for inputs of shape (C, H, W)."""
    if name not in generator_names():
        raise ValueError(f"unknown generator {name!r}; the generators are {generator_names()}")
    channels, size, _ = input_shape
    scaled: float | int = (
        max(2, round(PAPER_DAFL_WIDTH * width)) if name in ("dafl", "zskt") else width
    )
    return build_generator(name, z_dim=z_dim, out_channels=channels, image_size=size, width=scaled)


def is_mnist_like(input_shape: tuple[int, int, int]) -> bool:
    """Single-channel inputs of at most 32 px: the papers' MNIST settings apply to them."""
    channels, height, width = input_shape
    return channels == 1 and max(height, width) <= 32
