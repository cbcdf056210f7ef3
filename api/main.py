"""The FastAPI application, assembled from one router per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from api.authentication import KeyBeforeBody
from api.body_limit import BodySizeLimit
from api.errors import install_error_handlers
from api.event_stream import POLL_THREADS
from api.observability import install_observability, serve_internal_metrics
from api.openapi import install_contract
from api.routes import (
    architectures,
    dashboard,
    datasets,
    deletions,
    events,
    health,
    jobs,
    methods,
    teachers,
)
from api.stream_slots import StreamSlots
from api.uploads import UPLOAD_OVERHEAD
from service.blobstore import BlobStore, make_blob_store
from service.db import make_engine, make_session_factory
from service.queue import JobQueue, make_job_queue
from service.settings import Settings, get_settings

DESCRIPTION = """
Turn a trained network (the teacher) into a small one (the student) without the teacher's
training data. Upload a teacher with **POST /v1/teachers**, start a job with **POST /v1/jobs**,
poll **GET /v1/jobs/{id}**, then download the student from **GET /v1/jobs/{id}/student**.
"""


def operation_id(route: APIRoute) -> str:
    """`teachers-upload_teacher`: tag plus function name reads well in generated clients."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    settings: Settings | None = None,
    *,
    queue: JobQueue | None = None,
    blobs: BlobStore | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop_metrics = serve_internal_metrics(app)
        yield
        if stop_metrics is not None:
            stop_metrics()
        engine.dispose()

    # Swagger UI (/docs) and ReDoc (/redoc) from files in the fastapi-offline wheel, served under
    # /docs-static: the docs work without internet access (FastAPI's default is a CDN).
    app = FastAPIOffline(
        static_url="/docs-static",
        title="dfkd",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.sessions = make_session_factory(engine)
    app.state.blobs = blobs or make_blob_store(settings)
    app.state.queue = queue or make_job_queue(settings)
    app.state.stream_slots = StreamSlots(
        settings.max_event_streams, settings.max_event_streams_per_tenant
    )
    app.state.stream_polls = anyio.CapacityLimiter(POLL_THREADS)
    install_error_handlers(app)
    # inside the observability middleware, so a refused body is still counted and logged; the
    # key is checked first (outermost), before any of the body is read
    app.add_middleware(
        BodySizeLimit,
        upload_limit=settings.max_upload_bytes + UPLOAD_OVERHEAD,
        body_limit=settings.max_body_bytes,
    )
    app.add_middleware(
        KeyBeforeBody, sessions=app.state.sessions, require_keys=settings.require_api_keys
    )
    install_observability(app)
    for router in (
        health.router,
        architectures.router,
        methods.router,
        teachers.router,
        datasets.router,
        jobs.creation_router(),
        jobs.router,
        events.router,
        deletions.router,
        dashboard.router,  # HTML pages, outside the OpenAPI document
    ):
        app.include_router(router)
    app.mount(dashboard.STATIC_URL, dashboard.static_files(), name="dashboard-static")
    install_contract(app, keys_required=settings.require_api_keys)
    return app
