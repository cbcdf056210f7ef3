from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(
        description="database, broker, storage: `ok` or `unavailable: <why>`"
    )


@router.get(
    "/readyz",
    summary="Database, broker and storage are reachable",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is unreachable"}},
)
def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {}

    def probe(name: str, check: Callable[[], object]) -> None:
        try:
            check()
            checks[name] = "ok"
        except Exception as error:
            checks[name] = f"unavailable: {error}"

    def database() -> None:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))

    probe("database", database)
    probe("broker", state.queue.check)
    probe("storage", state.blobs.check)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
