from __future__ import annotations

from fastapi import APIRouter

from api.schemas import ArchitecturePublic, ArchitecturesPublic, ArgumentBound
from core.models import list_architectures

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])


@router.get("", summary="Architectures teachers and students can be built from")
def list_all() -> ArchitecturesPublic:
    return ArchitecturesPublic(
        items=[
            ArchitecturePublic(
                name=spec.name,
                description=spec.description,
                kwargs=spec.defaults,
                bounds={
                    name: ArgumentBound(
                        minimum=bound.minimum, maximum=bound.maximum, integer=bound.integer
                    )
                    for name, bound in spec.bounds.items()
                },
                input_shape=list(spec.input_shape()),
                num_classes=spec.num_classes(),
                attention_taps=list(spec.taps),
            )
            for spec in list_architectures()
        ]
    )
