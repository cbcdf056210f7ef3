"""Opaque keyset cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.errors import ApiError


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), row_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "invalid_cursor", "`after` is not a cursor this API returned") from None


def newest_first_page(
    query: Select,
    created_at: InstrumentedAttribute,
    row_id: InstrumentedAttribute,
    after: str | None,
    limit: int,
) -> Select:
    if after:
        moment, last_id = decode_cursor(after)
        query = query.where(or_(created_at < moment, and_(created_at == moment, row_id < last_id)))
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit + 1)


@dataclass(frozen=True)
class CreatedRange:
    """`created_after` / `created_before` filters shared by every list."""

    after: datetime | None = None
    before: datetime | None = None

    def apply(self, query: Select, created_at: InstrumentedAttribute) -> Select:
        # stored times are UTC; a zone-less bound is read as UTC too
        if self.after is not None:
            query = query.where(created_at >= _utc(self.after))
        if self.before is not None:
            query = query.where(created_at < _utc(self.before))
        return query


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def created_range(
    created_after: Annotated[
        datetime | None, Query(description="only objects created at or after (ISO 8601)")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="only objects created before (ISO 8601)")
    ] = None,
) -> CreatedRange:
    after = _utc_or_422(created_after, "created_after")
    before = _utc_or_422(created_before, "created_before")
    if after and before and after >= before:
        raise ApiError(422, "invalid_range", "created_after must be earlier than created_before")
    return CreatedRange(after, before)


def _utc_or_422(moment: datetime | None, field: str) -> datetime | None:
    """The moment in UTC; one that UTC cannot hold (year 1 at +05:00, year 9999 at -05:00) is
    refused instead of overflowing."""
    if moment is None:
        return None
    try:
        return _utc(moment)
    except OverflowError:
        raise ApiError(
            422, "invalid_range", f"{field} {moment.isoformat()} is outside the supported dates"
        ) from None


CreatedRangeDep = Annotated[CreatedRange, Depends(created_range)]


PageLimit = Annotated[int, Query(ge=1, le=200, description="items per page")]
PageAfter = Annotated[str | None, Query(description="next_cursor of the previous page")]


def fetch_page(
    session: Session, query: Select, model: Any, after: str | None, limit: int
) -> tuple[list[Any], str | None, bool]:
    """One page of `model` rows, newest first: (rows, next cursor, has more)."""
    rows = list(session.scalars(newest_first_page(query, model.created_at, model.id, after, limit)))
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None, more
