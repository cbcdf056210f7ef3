"""Loading weights into registry models safely (safetensors only: no code runs) and checking them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save
from torch import nn


class WeightsError(ValueError):
    """The weights cannot be used with the chosen architecture; the message says why."""


@dataclass
class StateDictMismatch:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for label, names in (
            ("missing tensors", self.missing),
            ("unexpected tensors", self.unexpected),
            ("tensors of the wrong shape", self.wrong_shape),
        ):
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{label}: {', '.join(names[:limit])}{more}")
        return "; ".join(parts)


def read_state_dict(source: Path | bytes) -> dict[str, torch.Tensor]:
    try:
        return load(source) if isinstance(source, bytes) else load_file(str(source))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"not a readable safetensors file ({error})") from error


def state_dict_bytes(model: nn.Module) -> bytes:
    return save(
        {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    )


def compare_state_dict(model: nn.Module, weights: dict[str, torch.Tensor]) -> StateDictMismatch:
    expected = model.state_dict()
    mismatch = StateDictMismatch(
        missing=sorted(set(expected) - set(weights)),
        unexpected=sorted(set(weights) - set(expected)),
    )
    for name in sorted(set(expected) & set(weights)):
        if tuple(expected[name].shape) != tuple(weights[name].shape):
            mismatch.wrong_shape.append(
                f"{name} (expected {list(expected[name].shape)}, got {list(weights[name].shape)})"
            )
    return mismatch


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """Strict load that names every tensor that does not fit."""
    mismatch = compare_state_dict(model, weights)
    if mismatch:
        raise WeightsError(f"weights do not fit the architecture: {mismatch.describe()}")
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"tensor {name} holds NaN or infinite values")
    model.load_state_dict(weights, strict=True)
    return model


def check_forward(model: nn.Module, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """One forward pass on a dummy batch must give [batch, num_classes] finite logits."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, *input_shape))
    except Exception as error:  # a user's model can fail in any way; report it, do not crash
        raise WeightsError(
            f"forward pass on a dummy batch of shape [2, {', '.join(map(str, input_shape))}] failed: {error}"
        ) from error
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise WeightsError(
            f"forward pass gave {shape}, expected [2, {num_classes}] (batch, classes)"
        )


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
