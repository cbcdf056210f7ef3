"""GET /v1/methods: the method registry as users see it (core/method_registry.py)."""

from __future__ import annotations

from fastapi import APIRouter

from api.errors import ApiError, ErrorResponse
from api.job_specs import job_example
from api.schemas import HyperparameterPublic, MethodPublic, MethodsPublic, RequirementPublic
from core.method_registry import (
    MethodSpec,
    UnknownMethodError,
    default_method,
    get_method,
    list_methods,
)

router = APIRouter(prefix="/v1/methods", tags=["methods"])


def to_public(spec: MethodSpec) -> MethodPublic:
    job_defaults = spec.job_defaults()
    return MethodPublic(
        name=spec.name,
        title=spec.title,
        summary=spec.summary,
        paper=spec.paper,
        task_types=list(spec.task_types),
        requirements=[
            RequirementPublic(code=requirement.code, summary=requirement.summary)
            for requirement in spec.requirements
        ],
        iterations=HyperparameterPublic(**job_defaults["iterations"].public()),
        batch_size=HyperparameterPublic(**job_defaults["batch_size"].public()),
        hyperparameters=[HyperparameterPublic(**info.public()) for info in spec.hyperparameters()],
        example=job_example(spec),
    )


@router.get("", summary="Distillation methods, their hyperparameters and requirements")
def list_all() -> MethodsPublic:
    return MethodsPublic(
        items=[to_public(spec) for spec in list_methods()], default=default_method()
    )


@router.get(
    "/{name}",
    summary="One method",
    responses={404: {"model": ErrorResponse, "description": "no such method"}},
)
def get_one(name: str) -> MethodPublic:
    try:
        return to_public(get_method(name))
    except UnknownMethodError as error:
        raise ApiError(404, "not_found", str(error)) from None
