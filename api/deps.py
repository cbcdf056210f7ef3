"""Typed dependencies, declared once: a route's signature reads like its contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.authentication import tenant_of
from api.errors import ApiError
from service.auth import key_id_for
from service.blobstore import BlobStore
from service.idempotency import IdempotencyConflictError, replayed_resource
from service.models import Base
from service.queue import JobQueue
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]


bearer = HTTPBearer(auto_error=False, description="an API key made with `dfkd keys create`")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def get_tenant(
    session: SessionDep,
    settings: SettingsDep,
    credentials: CredentialsDep,
) -> str:
    """The caller's tenant. Without a key: the default tenant on an open deployment, else 401."""
    secret = credentials.credentials if credentials is not None else None
    return tenant_of(session, secret, settings.require_api_keys)


TenantDep = Annotated[str, Depends(get_tenant)]


def get_key_id(session: SessionDep, credentials: CredentialsDep) -> str | None:
    """The caller's key id (after TenantDep checked it), for records of who did what."""
    return key_id_for(session, credentials.credentials if credentials is not None else None)


KeyIdDep = Annotated[str | None, Depends(get_key_id)]


Row = TypeVar("Row", bound=Base)


def owned(session: Session, model: type[Row], row_id: str, tenant: str) -> Row | None:
    """The row if it exists and belongs to the tenant; another tenant's id looks like no id."""
    row = session.get(model, row_id)
    return row if row is not None and row.tenant_id == tenant else None


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="retry-safe creation: the same key and body return the first result; another body is a 409",
    ),
]


def replay(
    session: Session,
    tenant: str,
    endpoint: str,
    key: str | None,
    fingerprint: str,
    response: Response,
) -> str | None:
    """The id an earlier request with this key made (and mark the response a replay), or None."""
    if key is None:
        return None
    try:
        existing = replayed_resource(session, tenant, endpoint, key, fingerprint)
    except IdempotencyConflictError:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"Idempotency-Key {key!r} was used with a different request",
        ) from None
    if existing is not None:
        response.headers["Idempotent-Replayed"] = "true"
    return existing
