"""Request ids, request latency and GET /metrics for Prometheus.

No series carries tenant data (job ids, tenant names, raw paths): jobs are counted by state and
summed by method, requests labelled by route template. Who may read them is the operator's
choice (DFKD_METRICS_ACCESS): anyone, any valid API key, or only an internal port.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.authentication import tenant_of
from api.deps import CredentialsDep
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
            "Iterations per second of the running jobs, summed by method",
            labels=["method"],
        )
        depth = GaugeMetricFamily("dfkd_queue_depth", "Jobs waiting to be picked up")
        with self.sessions() as session:
            counts = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            running = session.execute(
                select(Job.method, Job.samples_per_second, Job.batch_size).where(
                    Job.status == JobStatus.running
                )
            ).all()
        for status in JobStatus:
            by_state.add_metric([status.value], counts.get(status.value, 0))
        by_method: dict[str, float] = {}
        for method, samples_per_second, batch_size in running:
            by_method[method] = (
                by_method.get(method, 0.0) + (samples_per_second or 0.0) / batch_size
            )
        for method, iterations_per_second in sorted(by_method.items()):
            speed.add_metric([method], iterations_per_second)
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
    streams = Gauge("dfkd_event_streams_open", "Open Server-Sent Event streams", registry=registry)
    streams.set_function(lambda: app.state.stream_slots.open)

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

    app.state.metrics_registry = registry
    access = app.state.settings.metrics_access
    if access == "internal":
        return  # served by serve_internal_metrics on its own port, not on the API's

    def require_key(request: Request, credentials: CredentialsDep) -> None:
        with request.app.state.sessions() as session:
            secret = credentials.credentials if credentials is not None else None
            tenant_of(session, secret, require_keys=True)

    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # the key is a dependency only where the operator asked for one, so the schema's security
    # says what this deployment enforces on /metrics
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["health"],
        summary="Prometheus metrics (aggregates only: no job ids, tenants or raw paths)",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                "description": "the Prometheus text exposition format",
            }
        },
        dependencies=[Depends(require_key)] if access == "api_key" else [],
    )


def serve_internal_metrics(app: FastAPI) -> Callable[[], None] | None:
    """With DFKD_METRICS_ACCESS=internal, serves the metrics on their own address (an internal
    port, never the API's); returns the function that stops that server."""
    settings = app.state.settings
    if settings.metrics_access != "internal":
        return None
    server, thread = start_http_server(
        settings.metrics_port, settings.metrics_host, registry=app.state.metrics_registry
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
