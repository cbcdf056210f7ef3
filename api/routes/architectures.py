from __future__ import annotations

from fastapi import APIRouter

from api.schemas import ArchitecturePublic, ArchitecturesPublic
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
                input_shape=list(spec.input_shape()),
                num_classes=spec.num_classes(),
                attention_taps=list(spec.taps),
            )
            for spec in list_architectures()
        ]
    )
