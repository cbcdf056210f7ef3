from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.schemas import ArchitecturePublic, ArchitecturesPublic, ArgumentBound
from core.models import list_architectures
from core.models.library import LIBRARIES, library_names, torchvision_segmentation_names

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])

SearchQuery = Annotated[
    str | None,
    Query(
        max_length=100,
        description="case-insensitive part of a name, e.g. resnet: filters the registry and the "
        "torchvision / timm names",
    ),
]


@router.get("", summary="Architectures teachers and students can be built from")
def list_all(q: SearchQuery = None) -> ArchitecturesPublic:
    needle = (q or "").lower()
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
                task=spec.task,
            )
            for spec in list_architectures()
            if needle in spec.name.lower()
        ],
        libraries=[f"{library}:<name>" for library in LIBRARIES],
        library_models=library_names(q),
        library_segmentation_models=[
            f"torchvision:{name}"
            for name in sorted(torchvision_segmentation_names())
            if needle in f"torchvision:{name}".lower()
        ],
    )
