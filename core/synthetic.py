"""A method's synthesised inputs as a file others can distil from: npz with `images` (float32,
the teacher's normalised input space) and the teacher's `logits` on them."""

from __future__ import annotations

import io
import math

import numpy as np
import torch


def synthetic_npz(images: torch.Tensor, logits: torch.Tensor, max_bytes: int) -> bytes | None:
    """The newest inputs that fit in `max_bytes` (None when not even one does)."""
    per_input = 4 * (math.prod(images.shape[1:]) + logits.shape[1])
    count = min(len(images), max_bytes // per_input)
    if count == 0:
        return None
    buffer = io.BytesIO()
    np.savez(
        buffer,
        images=images[-count:].float().numpy(),
        logits=logits[-count:].float().numpy(),
    )
    return buffer.getvalue()
