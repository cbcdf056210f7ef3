"""Idempotency-Key: the same key and body give the same object; the same key and another body, 409."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import IdempotencyRecord


class IdempotencyConflictError(Exception):
    """The key was used before with a different request."""


def request_fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def replayed_resource(
    session: Session, tenant: str, endpoint: str, key: str, fingerprint: str
) -> str | None:
    """The id made by an earlier request with this key, or None if the key is new."""
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant,
            IdempotencyRecord.endpoint == endpoint,
            IdempotencyRecord.key == key,
        )
    )
    if record is None:
        return None
    if record.request_sha256 != fingerprint:
        raise IdempotencyConflictError(key)
    return record.resource_id


def commit_once(
    session: Session,
    tenant: str,
    endpoint: str,
    key: str | None,
    fingerprint: str,
    resource_id: str,
) -> str:
    """Commit the new object with its key record in one transaction. If a concurrent request with
    the same key won the race, roll ours back and return the winner's id."""
    if key is None:
        session.commit()
        return resource_id
    session.add(
        IdempotencyRecord(
            tenant_id=tenant,
            endpoint=endpoint,
            key=key,
            request_sha256=fingerprint,
            resource_id=resource_id,
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = replayed_resource(session, tenant, endpoint, key, fingerprint)
        if winner is None:
            raise
        return winner
    return resource_id
