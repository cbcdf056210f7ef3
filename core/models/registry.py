"""Name -> constructor registry for teachers and students (timm-style `@register_model`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]


class UnknownArchitectureError(KeyError):
    """Raised for a name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


class ArchitectureArgumentError(ValueError):
    """Raised when keyword arguments do not fit an architecture's constructor."""


Number = int | float


@dataclass(frozen=True)
class Bound:
    """The values one size-driving argument may take: checked before anything is built, so a
    request for a huge model costs no memory and no time."""

    minimum: Number
    maximum: Number
    integer: bool = True

    def check(self, architecture: str, argument: str, value: Any) -> None:
        kind = "an integer" if self.integer else "a number"
        valid_type = isinstance(value, int) or (not self.integer and isinstance(value, float))
        if isinstance(value, bool) or not valid_type:
            raise ArchitectureArgumentError(
                f"{architecture}: {argument} must be {kind} from {self.minimum} to "
                f"{self.maximum}, got {value!r:.100}"
            )
        if not self.minimum <= value <= self.maximum:
            raise ArchitectureArgumentError(
                f"{architecture}: {argument} must be from {self.minimum} to {self.maximum}, "
                f"got {value}"
            )


# What every registry model is bounded to unless its entry says otherwise: enough for the
# documented sizes (32 px CIFAR/MNIST, 224 px ImageNet-like inputs, 1 000+ classes), far below
# what would take the service's memory.
SHAPE_BOUNDS: dict[str, Bound] = {
    "num_classes": Bound(2, 100_000),
    "in_channels": Bound(1, 64),
    "image_size": Bound(8, 512),
}
RATE_BOUND = Bound(0.0, 0.99, integer=False)  # dropout-like probabilities


@dataclass(frozen=True)
class ArchitectureSpec:
    """What the registry knows about one architecture."""

    name: str
    factory: ModelFactory
    description: str
    # Module names whose outputs are the attention taps (main stages), in forward order.
    taps: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    bounds: dict[str, Bound] = field(default_factory=dict)
    # what the output is: "classification" logits [N, K] or "segmentation" logits [N, K, H, W]
    task: str = "classification"

    def resolve_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """Defaults overlaid with `kwargs`; unknown keys, and values outside the entry's bounds,
        raise ArchitectureArgumentError naming the argument, its bound and the value."""
        unknown = sorted(set(kwargs) - set(self.defaults))
        if unknown:
            raise ArchitectureArgumentError(
                f"architecture {self.name!r} takes no argument(s) {unknown}; "
                f"it takes {sorted(self.defaults)}"
            )
        resolved = {**self.defaults, **kwargs}
        for argument, bound in self.bounds.items():
            bound.check(self.name, argument, resolved[argument])
        return resolved

    def input_shape(self, **kwargs: Any) -> tuple[int, int, int]:
        resolved = self.resolve_kwargs(**kwargs)
        return (
            int(resolved["in_channels"]),
            int(resolved["image_size"]),
            int(resolved["image_size"]),
        )

    def num_classes(self, **kwargs: Any) -> int:
        return int(self.resolve_kwargs(**kwargs)["num_classes"])


_REGISTRY: dict[str, ArchitectureSpec] = {}


def register_model(
    *,
    taps: tuple[str, ...],
    bounds: dict[str, Bound] | None = None,
    task: str = "classification",
) -> Callable[[ModelFactory], ModelFactory]:
    """Register a constructor under its function name; its keyword defaults become the spec's.
    `task` says what it outputs: classification logits [N, K] or segmentation logits
    [N, K, H, W] at the input's resolution.

    Every numeric argument must be bounded: `bounds` overlays SHAPE_BOUNDS, and an argument left
    unbounded is a TypeError at import, so a new architecture cannot forget one."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        signature = inspect.signature(factory)
        defaults = {
            name: parameter.default
            for name, parameter in signature.parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        for required in ("num_classes", "in_channels", "image_size"):
            if required not in defaults:
                raise TypeError(f"{factory.__name__} must take {required}=... as a keyword")
        declared = {**SHAPE_BOUNDS, **(bounds or {})}
        unbounded = sorted(
            name
            for name, value in defaults.items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and name not in declared
        )
        if unbounded:
            raise TypeError(f"{factory.__name__} must declare bounds for {unbounded}")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[factory.__name__] = ArchitectureSpec(
            name=factory.__name__,
            factory=factory,
            description=doc.splitlines()[0] if doc else "",
            taps=taps,
            defaults=defaults,
            bounds={name: bound for name, bound in declared.items() if name in defaults},
            task=task,
        )
        return factory

    return decorate


def get_spec(name: str) -> ArchitectureSpec:
    """The registry entry, or for `torchvision:<name>` / `timm:<name>` the library's model."""
    if ":" in name:
        from core.models.library import library_spec

        return library_spec(name)  # type: ignore[return-value]  (answers like a registry entry)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; known: {sorted(_REGISTRY)}"
        ) from None


def list_architectures() -> list[ArchitectureSpec]:
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture with its defaults overlaid by `kwargs`."""
    if ":" in name:
        from core.models.library import build_library_model

        return build_library_model(name, **kwargs)
    spec = get_spec(name)
    resolved = spec.resolve_kwargs(**kwargs)
    try:
        return spec.factory(**resolved)
    except (TypeError, ValueError, RuntimeError) as error:  # e.g. a negative size
        raise ArchitectureArgumentError(
            f"cannot build {name!r} with {resolved}: {error}"
        ) from error


def planned_parameters(name: str, **kwargs: Any) -> int:
    """Parameters and buffers `build(name, **kwargs)` would allocate, counted on the meta device
    (no memory, and quick: `build` checks the entry's bounds first, so the model is never deep or
    wide past them): lets a caller refuse a huge model before building it."""
    with torch.device("meta"):
        model = build(name, **kwargs)
    return sum(tensor.numel() for tensor in model.state_dict().values())
