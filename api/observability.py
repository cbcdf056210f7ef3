"""Request ids, request latency and GET /metrics for Prometheus."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.logs import request_id
from service.models import Job, JobStatus
from service.queue import JobQueue


class JobCollector(Collector):
    """Read at scrape time from the database (the source of truth) and the queue."""

    def __init__(self, sessions: sessionmaker[Session], queue: JobQueue) -> None:
        self.sessions = sessions
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily("dfkd_jobs", "Jobs by state", labels=["status"])
        speed = GaugeMetricFamily(
            "dfkd_job_iterations_per_second",
            "Iterations per second of running jobs",
            labels=["job_id", "method"],
        )
        depth = GaugeMetricFamily("dfkd_queue_depth", "Jobs waiting to be picked up")
        with self.sessions() as session:
            counts = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            running = session.execute(
                select(Job.id, Job.method, Job.samples_per_second, Job.batch_size).where(
                    Job.status == JobStatus.running
                )
            ).all()
        for status in JobStatus:
            by_state.add_metric([status.value], counts.get(status.value, 0))
        for job_id, method, samples_per_second, batch_size in running:
            speed.add_metric([job_id, method], (samples_per_second or 0.0) / batch_size)
        waiting = self.queue.depth()
        depth.add_metric([], counts.get(JobStatus.queued.value, 0) if waiting is None else waiting)
        yield by_state
        yield speed
        yield depth


def install_observability(app: FastAPI) -> None:
    registry = CollectorRegistry()
    latency = Histogram(
        "dfkd_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )
    registry.register(JobCollector(app.state.sessions, app.state.queue))

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        incoming = request.headers.get("x-request-id")
        token = request_id.set(incoming if incoming and len(incoming) <= 200 else uuid.uuid4().hex)
        started = time.perf_counter()
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id.get() or ""
            return response
        except Exception:
            status = 500
            raise
        finally:
            template = getattr(request.scope.get("route"), "path", "unmatched")
            latency.labels(request.method, template, str(status)).observe(
                time.perf_counter() - started
            )
            request_id.reset(token)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                "description": "the Prometheus text exposition format",
            }
        },
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
