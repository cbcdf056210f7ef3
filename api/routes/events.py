"""A job's events: state changes, warnings, errors and metric points; JSON pages or a live SSE stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select

from api.authentication import tenant_of
from api.deps import CredentialsDep, SettingsDep, owned
from api.errors import ApiError
from api.event_stream import EventStreamResponse, Follow, follow_job
from api.schemas import EventPublic, EventsPublic, as_utc
from service.models import ROW_ID_MAX, Job, JobEvent

router = APIRouter(prefix="/v1/jobs", tags=["events"])


@router.get(
    "/{job_id}/events",
    summary="Job events: JSON pages, or Server-Sent Events live until the job ends",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON page, or an SSE stream"},
    },
)
def get_events(
    job_id: str,
    request: Request,
    settings: SettingsDep,
    credentials: CredentialsDep,
    after: Annotated[
        int, Query(ge=0, le=ROW_ID_MAX, description="only events with a larger id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventsPublic:
    # Short sessions, not the request-scoped one: a stream must not hold a connection while open.
    secret = credentials.credentials if credentials is not None else None
    streaming = accept is not None and "text/event-stream" in accept
    with request.app.state.sessions() as session:
        tenant = tenant_of(session, secret, settings.require_api_keys)
        if owned(session, Job, job_id, tenant) is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        if not streaming:
            rows = list(
                session.scalars(
                    select(JobEvent)
                    .where(JobEvent.job_id == job_id, JobEvent.id > after)
                    .order_by(JobEvent.id)
                    .limit(limit + 1)
                )
            )
            page = rows[:limit]
            return EventsPublic(
                items=[
                    EventPublic(id=r.id, kind=r.kind, message=r.message, time=as_utc(r.time))
                    for r in page
                ],
                next_after=page[-1].id if len(rows) > limit else None,
            )
    events_after, metrics_after = _resume_point(last_event_id, after)
    state = request.app.state
    state.stream_slots.take(tenant)
    follow = Follow(
        job_id, tenant, secret, events_after, metrics_after, settings.event_stream_max_seconds
    )
    stream = follow_job(state.sessions, state.stream_polls, state.stream_slots, follow)
    return EventStreamResponse(stream, state.stream_slots, tenant)  # type: ignore[return-value]


def _resume_point(last_event_id: str | None, after: int) -> tuple[int, int]:
    """SSE ids are `<event id>:<metric point id>`, so a reconnect resumes both series."""
    if not last_event_id:
        return after, 0
    parts = last_event_id.split(":")
    if len(parts) != 2 or not all(part.isdigit() and len(part) <= 19 for part in parts):
        raise _bad_last_event_id()
    events, metrics = (int(part) for part in parts)
    if events > ROW_ID_MAX or metrics > ROW_ID_MAX:
        raise _bad_last_event_id()
    return events, metrics


def _bad_last_event_id() -> ApiError:
    return ApiError(
        422,
        "invalid_last_event_id",
        "Last-Event-ID is not one this API sent (two ids `<event>:<metric point>`, each at most "
        f"{ROW_ID_MAX})",
    )
