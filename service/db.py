"""Engine and sessions; PostgreSQL in production, SQLite for the embedded default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker

# More pooled connections than the threads that can ask for one at once: FastAPI runs each sync
# request in a pool of 40 threads (anyio's default), in several hops (dependencies, endpoint,
# response validation), and a request keeps its connection until its session closes after the
# last hop. With fewer connections than threads, under load every thread can sit waiting for a
# connection held by requests that are themselves waiting for a thread: nothing moves until the
# pool's 30 s timeout. bench/polling.py hit exactly that at 100 polls/s (p99 28 s, timeouts) with
# SQLAlchemy's default 5 + 10. Overflow connections close again when load drops.
API_THREADS = 40
POOL_SIZE, POOL_OVERFLOW = 10, API_THREADS + 10  # + runner, reaper, webhooks, /metrics


def make_engine(url: str, application_name: str = "dfkd") -> Engine:
    """`application_name` shows in PostgreSQL's pg_stat_activity: which process holds which
    connection (the fault tests drop only the worker's)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: DBAPIConnection, _record: object) -> None:
            cursor = connection.cursor()
            # WAL lets the API read while a runner thread writes; foreign keys are off by default.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pre_ping replaces connections the server dropped (restarts, idle timeouts).
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
        connect_args={"application_name": application_name},
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
