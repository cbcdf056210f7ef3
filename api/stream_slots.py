"""Caps on open event streams, per tenant and in total, counted in this API process."""

from __future__ import annotations

import threading
from collections import Counter

from api.errors import ApiError

RETRY_AFTER_SECONDS = 5


class StreamSlots:
    """Slots for open streams. `take` happens in the request (a 429 is still possible then);
    `give_back` once the stream has ended, however it ended."""

    def __init__(self, total: int, per_tenant: int) -> None:
        self.total = total
        self.per_tenant = per_tenant
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()  # taken in request threads, given back on the event loop

    @property
    def open(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def take(self, tenant: str) -> None:
        with self._lock:
            if self._open[tenant] >= self.per_tenant:
                raise too_many_streams(
                    f"this tenant already has {self._open[tenant]} open event streams, the most "
                    "allowed (DFKD_MAX_EVENT_STREAMS_PER_TENANT); close one, or poll the JSON pages"
                )
            if sum(self._open.values()) >= self.total:
                raise too_many_streams(
                    f"the API already serves {self.total} open event streams, the most allowed "
                    "(DFKD_MAX_EVENT_STREAMS); try again shortly, or poll the JSON pages"
                )
            self._open[tenant] += 1

    def give_back(self, tenant: str) -> None:
        with self._lock:
            self._open[tenant] -= 1
            if self._open[tenant] <= 0:
                del self._open[tenant]


def too_many_streams(message: str) -> ApiError:
    return ApiError(
        429, "too_many_streams", message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )
