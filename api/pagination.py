"""Opaque keyset cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

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
