"""Teacher and student architectures, one registry for both."""

from core.models import (  # noqa: F401  (registers the architectures)
    alexnet,
    lenet,
    mlp,
    resnet,
    segmentation,
    wrn,
)
from core.models.footprint import forward_peak_bytes
from core.models.registry import (
    ArchitectureArgumentError,
    ArchitectureSpec,
    Bound,
    UnknownArchitectureError,
    build,
    get_spec,
    list_architectures,
    planned_parameters,
    register_model,
)

__all__ = [
    "ArchitectureArgumentError",
    "ArchitectureSpec",
    "Bound",
    "UnknownArchitectureError",
    "build",
    "forward_peak_bytes",
    "get_spec",
    "list_architectures",
    "planned_parameters",
    "register_model",
]
