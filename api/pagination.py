"""Keyset cursors over (created_at, id), newest first.

A cursor is `<microseconds since 1970 UTC>_<id>` of the last row of a page: every string of
that shape is a position in the order, so the schema's pattern says exactly what is accepted
and a client never gets a 422 for a well-formed cursor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.errors import ApiError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# at most 17 digits: 10^17 microseconds is the year 5138, inside what datetime holds
CURSOR = r"^([0-9]{1,17})_([0-9a-z_]+)$"
# RFC 3339 date-time (what OpenAPI's `format: date-time` means): a zone is required
DATE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"


def encode_cursor(created_at: datetime, row_id: str) -> str:
    since_epoch = _utc(created_at) - EPOCH
    return f"{since_epoch // timedelta(microseconds=1)}_{row_id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    match = re.fullmatch(CURSOR, cursor)
    if match is None:  # the query parameter's pattern refuses these first
        raise ApiError(422, "invalid_cursor", "`after` is not a cursor this API returned")
    return EPOCH + timedelta(microseconds=int(match[1])), match[2]


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


def _date_time_query(description: str) -> Any:
    return Query(
        description=f"{description} (RFC 3339, e.g. 2026-01-31T12:00:00Z)",
        pattern=DATE_TIME,
        json_schema_extra={"format": "date-time"},
    )


def created_range(
    created_after: Annotated[
        str | None, _date_time_query("only objects created at or after")
    ] = None,
    created_before: Annotated[str | None, _date_time_query("only objects created before")] = None,
) -> CreatedRange:
    # created_after >= created_before is an empty range: a valid question, answered by an empty page
    return CreatedRange(
        _parse_date_time(created_after, "created_after"),
        _parse_date_time(created_before, "created_before"),
    )


def _parse_date_time(text: str | None, field: str) -> datetime | None:
    """The moment in UTC. One that UTC cannot hold (year 1 at +05:00, year 9999 at -05:00) lies
    before or after every stored time, so the earliest or latest UTC moment means the same."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError as error:  # the pattern holds but the date does not exist (2026-02-30)
        raise ApiError(422, "validation_error", f"{field}: {error}") from None
    try:
        return _utc(moment)
    except OverflowError:
        edge = datetime.min if moment.year == datetime.min.year else datetime.max
        return edge.replace(tzinfo=UTC)


CreatedRangeDep = Annotated[CreatedRange, Depends(created_range)]


PageLimit = Annotated[int, Query(ge=1, le=200, description="items per page")]
PageAfter = Annotated[
    str | None, Query(description="next_cursor of the previous page", pattern=CURSOR)
]


def fetch_page(
    session: Session, query: Select, model: Any, after: str | None, limit: int
) -> tuple[list[Any], str | None, bool]:
    """One page of `model` rows, newest first: (rows, next cursor, has more)."""
    rows = list(session.scalars(newest_first_page(query, model.created_at, model.id, after, limit)))
    page, more = rows[:limit], len(rows) > limit
    return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None, more
