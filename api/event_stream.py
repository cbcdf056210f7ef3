"""A job's live Server-Sent Events stream that holds nothing while it waits.

Each poll opens a short database session in one of a few threads reserved for stream polls, reads
what is new, closes the session and gives the thread back; between polls the stream is a sleeping
coroutine on the event loop. So open streams cost neither request threads nor pooled connections,
however many there are (bench/stream_flood.py). Each poll also re-checks the key that opened the
stream, and a stream ends after DFKD_EVENT_STREAM_MAX_SECONDS with a `reconnect` event whose id
is where the client resumes (Last-Event-ID).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.schemas import EventPublic, as_utc
from api.stream_slots import StreamSlots
from service.auth import tenant_for_key
from service.models import FINAL_STATUSES, Job, JobEvent, MetricPoint

POLL_SECONDS = 0.5
POLLS_PER_SECOND = 100  # all streams together: with more open, each polls less often
KEEPALIVE_SECONDS = 15.0
ROWS_PER_POLL = 1000  # a longer backlog is sent over several polls, without sleeping between
POLL_THREADS = 4  # stream polls of the whole process wait for these, never for request threads
RECONNECT_MILLISECONDS = 1000


@dataclass(frozen=True)
class Follow:
    """What a stream follows and for whom."""

    job_id: str
    tenant: str
    secret: str | None  # the key that opened the stream, re-checked at every poll
    events_after: int
    metrics_after: int
    max_seconds: float


@dataclass
class NewRows:
    key_valid: bool = True
    status: str | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    events: list[EventPublic] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return len(self.points) >= ROWS_PER_POLL or len(self.events) >= ROWS_PER_POLL


def read_new_rows(
    sessions: sessionmaker[Session], follow: Follow, events_after: int, metrics_after: int
) -> NewRows:
    """One poll, in one short session. The status is read before the events, so a final status
    comes with the event that recorded it."""
    with sessions() as session:
        if follow.secret is not None and tenant_for_key(session, follow.secret) != follow.tenant:
            return NewRows(key_valid=False)
        status = session.scalar(select(Job.status).where(Job.id == follow.job_id))
        points = session.execute(
            select(MetricPoint.id, MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .add_columns(MetricPoint.time)
            .where(MetricPoint.job_id == follow.job_id, MetricPoint.id > metrics_after)
            .order_by(MetricPoint.id)
            .limit(ROWS_PER_POLL)
        ).all()
        events = session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == follow.job_id, JobEvent.id > events_after)
            .order_by(JobEvent.id)
            .limit(ROWS_PER_POLL)
        ).all()
        return NewRows(
            status=status,
            points=[
                {"id": p.id, "name": p.name, "step": p.step, "value": p.value, "time": p.time}
                for p in points
            ],
            events=[
                EventPublic(id=e.id, kind=e.kind, message=e.message, time=as_utc(e.time))
                for e in events
            ],
        )


def poll_interval(open_streams: int) -> float:
    """Seconds between one stream's polls: half a second, longer once the open streams together
    would poll more than POLLS_PER_SECOND times a second (bench/stream_flood.py: 200 streams
    polling every 0.5 s cost the rest of the API a p99 of 133 ms for /healthz on SQLite)."""
    return max(POLL_SECONDS, open_streams / POLLS_PER_SECOND)


def sse(event_id: str, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


async def follow_job(
    sessions: sessionmaker[Session],
    limiter: anyio.CapacityLimiter,
    slots: StreamSlots,
    follow: Follow,
) -> AsyncIterator[str]:
    """Forwards what is new in the database (the source of truth); ends after the job's final
    state has been sent, when the key is revoked, or after `max_seconds`."""
    events_after, metrics_after = follow.events_after, follow.metrics_after
    started = last_sent = time.monotonic()
    yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
    while True:
        rows = await anyio.to_thread.run_sync(
            partial(read_new_rows, sessions, follow, events_after, metrics_after), limiter=limiter
        )
        resume_id = f"{events_after}:{metrics_after}"
        if not rows.key_valid:
            message = "the API key that opened this stream was revoked"
            yield sse(resume_id, "unauthorized", {"code": "invalid_api_key", "message": message})
            return
        chunk = []
        for point in rows.points:
            metrics_after = point.pop("id")
            point["time"] = as_utc(point["time"]).isoformat()
            chunk.append(sse(f"{events_after}:{metrics_after}", "metric", point))
        for event in rows.events:
            events_after = event.id
            chunk.append(
                sse(f"{events_after}:{metrics_after}", event.kind, event.model_dump(mode="json"))
            )
        resume_id = f"{events_after}:{metrics_after}"
        if chunk:
            last_sent = time.monotonic()
            yield "".join(chunk)
        if rows.status is None or (rows.status in FINAL_STATUSES and not chunk):
            yield sse(resume_id, "end", {"status": rows.status})
            return
        if time.monotonic() - started >= follow.max_seconds:
            yield sse(
                resume_id,
                "reconnect",
                {
                    "message": f"streams last at most {follow.max_seconds:g} s; reconnect with "
                    "Last-Event-ID to resume from here",
                },
            )
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if not rows.full:
            await asyncio.sleep(poll_interval(slots.open))


class EventStreamResponse(StreamingResponse):
    """An SSE response that gives its stream slot back when it ends, however it ends (the job
    ended, the client went away, the key was revoked, the stream reached its maximum age)."""

    def __init__(self, content: AsyncIterator[str], slots: StreamSlots, tenant: str) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.slots = slots
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slots.give_back(self.tenant)
