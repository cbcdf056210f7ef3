"""Plain supervised training, used to make test and example teachers from real labelled data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.datasets import LabelledImages
from core.segmentation import IGNORE_INDEX


def train_classifier(
    model: nn.Module,
    data: LabelledImages,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Module:
    """Adam with a one-cycle schedule on cross-entropy; `data.labels` are classes [N] or
    masks [N, H, W] (per-pixel cross-entropy, IGNORE_INDEX pixels left out)."""
    ignore = IGNORE_INDEX if data.labels.ndim == 3 else -100
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr * 3,
        total_steps=epochs * ((len(data.images) + batch_size - 1) // batch_size),
    )
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.images), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(
                model(data.images[batch]), data.labels[batch], ignore_index=ignore
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()
