from __future__ import annotations

import pytest
import torch
from torch import nn

from core.generators import build_generator, generator_for, generator_names


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("dafl", {"z_dim": 100, "out_channels": 1, "image_size": 32, "width": 32}, (1, 32, 32)),
        ("dafl", {"z_dim": 256, "out_channels": 3, "image_size": 64, "width": 16}, (3, 64, 64)),
        (
            "dcgan",
            {"z_dim": 64, "out_channels": 3, "image_size": 128, "width": 0.125},
            (3, 128, 128),
        ),
        ("dcgan", {"z_dim": 16, "out_channels": 1, "image_size": 32, "width": 0.25}, (1, 32, 32)),
    ],
)
def test_generators_make_batches_of_the_input_shape(name: str, kwargs: dict, shape: tuple) -> None:
    generator = build_generator(name, **kwargs)
    images = generator(torch.randn(4, kwargs["z_dim"]))
    assert images.shape == (4, *shape)
    assert torch.isfinite(images).all()


def test_registry_knows_both_dfad_generators() -> None:
    assert {"zskt", "dafl", "dcgan"} <= set(generator_names())


def test_dafl_output_is_tanh_then_standardised_per_channel() -> None:
    """The parameter-free BN after Tanh puts each channel of a training batch at mean 0, std 1."""
    generator = build_generator("dafl", z_dim=8, out_channels=3, image_size=16, width=8).train()
    assert isinstance(generator.body[-2], nn.Tanh)
    assert not generator.body[-1].affine
    images = generator(torch.randn(64, 8))
    means = images.mean(dim=(0, 2, 3))
    stds = images.std(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(stds, torch.ones(3), atol=1e-2, rtol=0)


def test_dcgan_ends_in_tanh_and_starts_at_dcgan_initialisation() -> None:
    generator = build_generator("dcgan", z_dim=32, out_channels=3, image_size=64, width=0.5)
    images = generator(torch.randn(8, 32))
    assert images.abs().max() <= 1.0
    convs = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(convs) == 4 and convs[0].in_channels == 8 * 32  # 512 at width 1
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.002


def test_sizes_the_generators_cannot_make_are_refused() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        build_generator("dafl", image_size=30)
    with pytest.raises(ValueError, match="divisible by 16"):
        build_generator("dcgan", image_size=40)


def test_generator_for_picks_a_up_to_64_px_and_b_above() -> None:
    assert generator_for((1, 32, 32)) == "dafl"
    assert generator_for((3, 64, 64)) == "dafl"
    assert generator_for((3, 128, 128)) == "dcgan"
