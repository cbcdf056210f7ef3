"""A job's events: state changes, warnings, errors and metric points; JSON pages or a live SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.deps import SessionDep, TenantDep, owned
from api.errors import ApiError
from api.schemas import EventPublic, EventsPublic, as_utc
from service.models import FINAL_STATUSES, Job, JobEvent, MetricPoint

router = APIRouter(prefix="/v1/jobs", tags=["events"])

SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0


def _event(row: JobEvent) -> EventPublic:
    return EventPublic(id=row.id, kind=row.kind, message=row.message, time=as_utc(row.time))


@router.get(
    "/{job_id}/events",
    summary="Job events: JSON pages, or Server-Sent Events live until the job ends",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON page, or an SSE stream"}
    },
)
def get_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    # bounded by what the database's 64-bit integers hold (SQLite overflowed past it: a 500)
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="only events with a larger id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventsPublic:
    if owned(session, Job, job_id, tenant) is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if accept and "text/event-stream" in accept:
        events_after, metrics_after = _resume_point(last_event_id, after)
        stream = _stream(request.app.state.sessions, job_id, events_after, metrics_after)
        return StreamingResponse(  # type: ignore[return-value]
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
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
        items=[_event(r) for r in page], next_after=page[-1].id if len(rows) > limit else None
    )


def _resume_point(last_event_id: str | None, after: int) -> tuple[int, int]:
    """SSE ids are `<event id>:<metric point id>`, so a reconnect resumes both series."""
    if last_event_id:
        try:
            events, metrics = (int(part) for part in last_event_id.split(":"))
            return events, metrics
        except ValueError:
            raise ApiError(
                422, "invalid_last_event_id", "Last-Event-ID is not one this API sent"
            ) from None
    return after, 0


def _sse(event_id: str, kind: str, data: dict) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def _stream(
    sessions: sessionmaker[Session], job_id: str, events_after: int, metrics_after: int
) -> Iterator[str]:
    """Polls the database (the source of truth) and forwards what is new; ends after the job's
    final state has been sent. Runs in the threadpool, one thread per open stream."""
    last_sent = time.monotonic()
    while True:
        with sessions() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            events = list(
                session.scalars(
                    select(JobEvent)
                    .where(JobEvent.job_id == job_id, JobEvent.id > events_after)
                    .order_by(JobEvent.id)
                )
            )
            points = list(
                session.scalars(
                    select(MetricPoint)
                    .where(MetricPoint.job_id == job_id, MetricPoint.id > metrics_after)
                    .order_by(MetricPoint.id)
                    .limit(5000)
                )
            )
        for point in points:
            metrics_after = point.id
            data = {
                "name": point.name,
                "step": point.step,
                "value": point.value,
                "time": as_utc(point.time).isoformat(),
            }
            yield _sse(f"{events_after}:{metrics_after}", "metric", data)
        for event in events:
            events_after = event.id
            yield _sse(
                f"{events_after}:{metrics_after}", event.kind, _event(event).model_dump(mode="json")
            )
        if events or points:
            last_sent = time.monotonic()
        if status in FINAL_STATUSES and not events and not points:
            yield _sse(f"{events_after}:{metrics_after}", "end", {"status": status})
            return
        if time.monotonic() - last_sent > SSE_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        time.sleep(SSE_POLL_SECONDS)
