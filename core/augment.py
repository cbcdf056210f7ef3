"""Augmentations of synthesised batches, in torch on the batch's device (the 2020s methods:
random crop with padding, horizontal flip, DeepInversion's jitter). Each takes a generator, so a
resumed run draws the same ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _draws(count: int, high: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, (count,), generator=generator).to(device)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by `padding` (zeros) and crop it back at a random offset of its own."""
    if padding == 0:
        return images
    count, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = _draws(count, 2 * padding + 1, generator, images.device)
    columns = _draws(count, 2 * padding + 1, generator, images.device)
    index_rows = rows[:, None] + torch.arange(height, device=images.device)[None, :]
    index_columns = columns[:, None] + torch.arange(width, device=images.device)[None, :]
    batch = torch.arange(count, device=images.device)[:, None, None]
    gathered = padded.permute(0, 2, 3, 1)[batch, index_rows[:, :, None], index_columns[:, None, :]]
    return gathered.permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flipped = _draws(len(images), 2, generator, images.device).bool()
    return torch.where(flipped[:, None, None, None], images.flip(3), images)


def jitter(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Roll the whole batch by one random shift of up to `max_shift` pixels in each direction."""
    if max_shift == 0:
        return images
    shifts = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=shifts, dims=(2, 3))


def random_resized_crop(
    images: torch.Tensor, min_scale: float, generator: torch.Generator
) -> torch.Tensor:
    """A random square crop of each image covering between `min_scale` and all of its area,
    resized back to the image's size (bilinear): CMI's "local view"."""
    count = len(images)
    sides = (min_scale + (1 - min_scale) * torch.rand(count, generator=generator)).sqrt()
    # the crop's centre may lie anywhere that keeps the crop inside the image
    centres = (1 - sides)[:, None] * (2 * torch.rand(count, 2, generator=generator) - 1)
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = sides
    theta[:, :, 2] = centres
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), False)
    return F.grid_sample(images, grid, mode="bilinear", align_corners=False)
