"""Architectures by name from torchvision and timm (`torchvision:resnet18`, `timm:resnet18`).

A library name is built by the library's own constructor with the caller's keyword arguments as
that library names them, never with downloaded weights: any argument that could fetch or read a
file is refused before anything is built. The spec answers the same questions as a registry
entry (defaults, bounds, input shape, classes, attention taps), so callers need not know where
an architecture came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from core.models.registry import (
    ArchitectureArgumentError,
    Bound,
    ModelFactory,
    UnknownArchitectureError,
)

LIBRARIES = ("torchvision", "timm")
# Arguments that download or read weights (timm's pretrained / pretrained_cfg / checkpoint_path /
# cache_dir, torchvision's weights / weights_backbone / progress): nothing is fetched at run time.
_REFUSED_ARGUMENT = re.compile(r"pretrain|checkpoint|weight|path|file|url|cache|dir|hub|progress")
LIBRARY_BOUNDS: dict[str, Bound] = {
    "num_classes": Bound(2, 100_000),
    "in_chans": Bound(1, 64),
    "img_size": Bound(8, 512),
}
MAX_STRING_ARGUMENT = 100
DEFAULT_IMAGE_SIZE = 224  # torchvision's classification models and timm's default configs
# Attention taps are the main stages from stride 4 on, as the registry's ResNets have them; the
# stem (stride 2) is left out so torchvision and timm networks pair stage by stage.
MIN_TAP_REDUCTION = 4
TORCHVISION_STAGES = ("layer1", "layer2", "layer3", "layer4")


def is_library_name(name: str) -> bool:
    return ":" in name


def split_name(name: str) -> tuple[str, str]:
    library, _, model = name.partition(":")
    if library not in LIBRARIES:
        raise UnknownArchitectureError(
            f"unknown architecture library {library!r} in {name!r}; use torchvision:<name> or "
            "timm:<name> (GET /v1/architectures?q=... lists them)"
        )
    if model not in library_model_names(library):
        raise UnknownArchitectureError(
            f"{library} has no model {model!r}; GET /v1/architectures?q={model[:40]} lists "
            "the names that match"
        )
    return library, model


@lru_cache(maxsize=2)
def library_model_names(library: str) -> frozenset[str]:
    """Every classification or segmentation model the library can build by name (no weights
    needed)."""
    if library == "timm":
        import timm

        return frozenset(timm.list_models())
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models)) | (
        torchvision_segmentation_names()
    )


@lru_cache(maxsize=1)
def torchvision_segmentation_names() -> frozenset[str]:
    """torchvision's segmentation networks (DeepLabV3, FCN, LR-ASPP): per-pixel logits."""
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models.segmentation))


def _only_out(_module: nn.Module, _inputs: object, output: dict[str, torch.Tensor]) -> torch.Tensor:
    """torchvision's segmentation networks answer {"out": logits, "aux": ...}; the service, the
    exports and the losses take the logits tensor, as every other network gives it."""
    return output["out"]


def library_names(query: str | None = None) -> list[str]:
    """`library:model` names, sorted, whose name contains `query` (case-insensitive)."""
    needle = (query or "").lower()
    return sorted(
        f"{library}:{model}"
        for library in LIBRARIES
        for model in library_model_names(library)
        if needle in f"{library}:{model}".lower()
    )


def _check_argument(name: str, argument: str, value: Any) -> None:
    if _REFUSED_ARGUMENT.search(argument.lower()):
        raise ArchitectureArgumentError(
            f"{name}: argument {argument!r} is refused: nothing is downloaded or read at run "
            "time; upload the weights as safetensors instead"
        )
    if argument in LIBRARY_BOUNDS:
        LIBRARY_BOUNDS[argument].check(name, argument, value)
        return
    scalar = value is None or isinstance(value, bool | int | float)
    if isinstance(value, str):
        scalar = len(value) <= MAX_STRING_ARGUMENT
    numbers = isinstance(value, list) and len(value) <= 16
    numbers = numbers and all(isinstance(item, int | float) for item in value)
    if not (scalar or numbers):
        raise ArchitectureArgumentError(
            f"{name}: argument {argument!r} must be a number, a boolean, a short string or a "
            f"short list of numbers, got {value!r:.100}"
        )


@dataclass(frozen=True)
class LibrarySpec:
    """A torchvision or timm model by name, answering like a registry ArchitectureSpec."""

    name: str
    library: str
    model_name: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    bounds: dict[str, Bound] = field(default_factory=dict)

    @property
    def factory(self) -> ModelFactory:
        return lambda **kwargs: build_library_model(self.name, **kwargs)

    def resolve_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        for argument, value in kwargs.items():
            _check_argument(self.name, argument, value)
        return dict(kwargs)

    def input_shape(self, **kwargs: Any) -> tuple[int, int, int]:
        """The library model's default input: timm's pretrained config (its size, `in_chans`
        channels, `img_size` where given), torchvision's 3 x 224 x 224."""
        resolved = self.resolve_kwargs(**kwargs)
        channels = int(resolved.get("in_chans", 3))
        size = resolved.get("img_size")
        if size is None and self.library == "timm":
            size = _timm_default_size(self.model_name)
        size = int(size or DEFAULT_IMAGE_SIZE)
        return (channels, size, size)

    def num_classes(self, **kwargs: Any) -> int:
        """Read off the model itself: one forward pass on the meta device (no memory)."""
        with torch.device("meta"), torch.no_grad():
            model = build_library_model(self.name, **kwargs).eval()
            logits = model(torch.empty(1, *self.input_shape(**kwargs)))
        return int(logits.shape[1])

    @property
    def task(self) -> str:
        segmentation = self.library == "torchvision" and (
            self.model_name in torchvision_segmentation_names()
        )
        return "segmentation" if segmentation else "classification"

    @property
    def taps(self) -> tuple[str, ...]:
        return library_taps(self.name)


def _timm_default_size(model_name: str) -> int | None:
    import timm

    config = timm.get_pretrained_cfg(model_name)
    input_size = getattr(config, "input_size", None) if config is not None else None
    return int(input_size[-1]) if input_size else None


def library_spec(name: str) -> LibrarySpec:
    library, model_name = split_name(name)
    return LibrarySpec(
        name=name,
        library=library,
        model_name=model_name,
        description=f"{library}'s {model_name}, built by the library (no pretrained weights)",
        bounds={k: v for k, v in LIBRARY_BOUNDS.items() if library == "timm" or k != "in_chans"},
    )


def build_library_model(name: str, **kwargs: Any) -> nn.Module:
    library, model_name = split_name(name)
    for argument, value in kwargs.items():
        _check_argument(name, argument, value)
    try:
        if library == "timm":
            import timm

            return timm.create_model(model_name, pretrained=False, **kwargs)
        import torchvision

        if model_name in torchvision_segmentation_names():
            # weights_backbone defaults to ImageNet weights, a download: never here
            model = torchvision.models.get_model(
                model_name, weights=None, weights_backbone=None, **kwargs
            )
            model.register_forward_hook(_only_out)
            return model
        return torchvision.models.get_model(model_name, weights=None, **kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError, KeyError) as error:
        raise ArchitectureArgumentError(f"cannot build {name!r} with {kwargs}: {error}") from error


def inherited_kwargs(
    architecture: str, input_shape: tuple[int, int, int], num_classes: int
) -> dict[str, Any]:
    """The shape arguments a student takes from its teacher, as its constructor names them:
    the registry's num_classes / in_channels / image_size, timm's num_classes / in_chans,
    torchvision's num_classes."""
    if not is_library_name(architecture):
        return {
            "num_classes": num_classes,
            "in_channels": input_shape[0],
            "image_size": input_shape[1],
        }
    if architecture.startswith("timm:"):
        return {"num_classes": num_classes, "in_chans": input_shape[0]}
    return {"num_classes": num_classes}


def output_shape(name: str, kwargs: dict[str, Any], input_shape: tuple[int, ...]) -> list[int]:
    """The model's output shape for one input, on the meta device; a model that cannot take the
    input is an ArchitectureArgumentError saying so."""
    with torch.device("meta"):
        model = build_library_model(name, **kwargs).eval()  # one input: BN's running stats
        try:
            with torch.no_grad():
                output = model(torch.empty(1, *input_shape))
        except Exception as error:  # a library model refuses inputs it cannot take in many ways
            raise ArchitectureArgumentError(
                f"{name} does not take inputs of shape {list(input_shape)}: {error}"
            ) from None
    return list(output.shape) if isinstance(output, torch.Tensor) else []


@lru_cache(maxsize=256)
def library_taps(name: str) -> tuple[str, ...]:
    """The stages attention transfer reads: timm's `feature_info` (stride 4 and up),
    torchvision's ResNet-style `layer1`..`layer4`; none where the model cannot say."""
    library, _ = split_name(name)
    with torch.device("meta"):
        model = build_library_model(name)
    modules = dict(model.named_modules())
    if library == "timm":
        info = getattr(model, "feature_info", None) or []
        names = tuple(
            entry["module"]
            for entry in info
            if isinstance(entry, dict)
            and entry.get("reduction", 0) >= MIN_TAP_REDUCTION
            and entry.get("module") in modules
        )
    else:
        names = TORCHVISION_STAGES if all(s in modules for s in TORCHVISION_STAGES) else ()
    return _spatial(model, names, library_spec(name).input_shape())


def _spatial(
    model: nn.Module, names: tuple[str, ...], shape: tuple[int, int, int]
) -> tuple[str, ...]:
    """The taps whose outputs are feature maps [N, C, H, W] (a transformer's token blocks are
    not: attention maps need a spatial grid); all or none, so the stages stay paired."""
    if not names:
        return ()
    modules = dict(model.named_modules())
    ranks: dict[str, int] = {}
    handles = [
        modules[tap].register_forward_hook(
            lambda _m, _i, out, tap=tap: ranks.__setitem__(tap, getattr(out, "ndim", 0))
        )
        for tap in names
    ]
    try:
        with torch.device("meta"), torch.no_grad():
            model(torch.empty(1, *shape))
    finally:
        for handle in handles:
            handle.remove()
    return names if all(ranks.get(tap) == 4 for tap in names) else ()
