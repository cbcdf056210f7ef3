from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deletions import to_public
from api.deps import SessionDep, TenantDep
from api.schemas import DeletionsPublic
from service.models import ROW_ID_MAX, Deletion

router = APIRouter(prefix="/v1/deletions", tags=["deletions"])


@router.get("", summary="What was deleted, by whom and when, newest first")
def list_deletions(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        int | None,
        Query(ge=1, le=ROW_ID_MAX, description="only deletions with a smaller id (next page)"),
    ] = None,
) -> DeletionsPublic:
    query = select(Deletion).where(Deletion.tenant_id == tenant)
    if before is not None:
        query = query.where(Deletion.id < before)
    rows = session.scalars(query.order_by(Deletion.id.desc()).limit(limit))
    return DeletionsPublic(items=[to_public(row) for row in rows])
