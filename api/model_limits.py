"""Refusing models too large to build, before their memory is allocated."""

from __future__ import annotations

from typing import Any

from core.models import ArchitectureArgumentError, planned_parameters


def refuse_oversized_model(architecture: str, kwargs: dict[str, Any], limit: int) -> int:
    """The model's parameter count, counted on the meta device (no memory); more than `limit`
    (the upload cap: weights of more parameters than an upload can hold could never be uploaded
    or downloaded whole) raises ArchitectureArgumentError."""
    planned = planned_parameters(architecture, **kwargs)
    if planned > limit:
        raise ArchitectureArgumentError(
            f"{architecture} with {kwargs} has {planned} parameters, more than the {limit} "
            "that fit the upload size limit"
        )
    return planned
