"""What a job needs from the outside world, built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy.orm import Session, sessionmaker

from core.devices import resolve_device
from service.blobstore import BlobStore, make_blob_store
from service.db import make_engine, make_session_factory
from service.settings import Settings, get_settings


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore

    @property
    def device(self) -> str:
        return resolve_device(self.settings.device)


def make_context(settings: Settings) -> WorkerContext:
    return WorkerContext(
        settings=settings,
        sessions=make_session_factory(
            make_engine(settings.resolved_database_url, application_name="dfkd-worker")
        ),
        blobs=make_blob_store(settings),
    )


@lru_cache
def process_context() -> WorkerContext:
    """One context per (forked) worker process; engines must not cross a fork."""
    return make_context(get_settings())
