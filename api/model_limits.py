"""Refusing models too large to build, before their memory is allocated."""

from __future__ import annotations

from typing import Any

from core.models import ArchitectureArgumentError, planned_parameters


def refuse_oversized_model(
    architecture: str, kwargs: dict[str, Any], limit: int, setting: str
) -> int:
    """The model's parameter count, counted on the meta device once the registry's bounds on
    its arguments hold (no memory, milliseconds); more than `limit` (the operator's `setting`)
    raises ArchitectureArgumentError."""
    planned = planned_parameters(architecture, **kwargs)
    if planned > limit:
        raise ArchitectureArgumentError(
            f"{architecture} with {kwargs} has {planned} parameters, more than the {limit} "
            f"allowed ({setting})"
        )
    return planned
