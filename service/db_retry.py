"""Database work that survives a dropped connection (server restart, pg_terminate_backend,
failover): the transaction is rolled back and run again on a fresh connection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.db import session_scope

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_DELAYS_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


def is_disconnect(error: BaseException) -> bool:
    """A lost connection or a server that is not answering, as opposed to a bad statement."""
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and error.connection_invalidated
    )


def in_transaction(
    sessions: sessionmaker[Session],
    work: Callable[[Session], T],
    delays: tuple[float, ...] = RETRY_DELAYS_SECONDS,
) -> T:
    """Run `work` in one transaction, again from the start after a disconnect (the pool's
    pre-ping then hands out a live connection). `work` must only touch the database, so that
    running it twice is the same as once when the first try was rolled back."""
    for attempt, delay in enumerate((*delays, None)):
        try:
            with session_scope(sessions) as session:
                return work(session)
        except DBAPIError as error:
            if delay is None or not is_disconnect(error):
                raise
            log.warning(
                "database connection lost (%s); retry %d in %.1fs",
                type(error.orig).__name__,
                attempt + 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")
