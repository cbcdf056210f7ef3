"""Tenant quotas as HTTP answers: 429 with Retry-After, a code naming the quota, its limit and the
current use (service/quotas.py does the counting and the locking)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from sqlalchemy.orm import Session

from api.errors import ApiError
from service.blobstore import BlobStore, BlobStoreError
from service.quotas import QuotaExceededError, check_storage, reserve_job_slot
from service.settings import Settings

log = logging.getLogger("dfkd.quotas")

# A hint, not a promise: active jobs end on their own; stored bytes free up only when the tenant
# deletes something or the operator raises the quota.
RETRY_AFTER_SECONDS = 60

_HINTS = {
    "active_jobs": (
        "DFKD_TENANT_MAX_ACTIVE_JOBS",
        "active jobs (queued + running)",
        "wait for one to finish or cancel one",
    ),
    "storage": (
        "DFKD_TENANT_MAX_STORAGE_BYTES",
        "bytes stored (teachers, their activation records and datasets)",
        "delete teachers or datasets you no longer need",
    ),
}


def quota_refusal(exceeded: QuotaExceededError) -> ApiError:
    setting, what, remedy = _HINTS[exceeded.quota]
    requested = f", this request adds {exceeded.requested}" if exceeded.quota == "storage" else ""
    return ApiError(
        429,
        f"quota_{exceeded.quota}",
        f"over the tenant's quota of {exceeded.limit} {what}: {exceeded.use} in use{requested}; "
        f"{remedy}, or ask the operator to raise it ({setting} or `dfkd tenants set-quota`)",
        details=[
            {
                "quota": exceeded.quota,
                "limit": exceeded.limit,
                "current": exceeded.use,
                "requested": exceeded.requested,
            }
        ],
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


Result = TypeVar("Result")


def _answered(check: Callable[[], Result]) -> Result:
    try:
        return check()
    except QuotaExceededError as exceeded:
        raise quota_refusal(exceeded) from None


def hold_job_slot(session: Session, tenant: str, settings: Settings) -> None:
    """Before a job is added: 429 past the tenant's active-jobs quota (or over its storage). The
    tenant stays locked until the caller commits the job."""
    _answered(lambda: reserve_job_slot(session, tenant, settings))


def refuse_over_storage(
    session: Session, tenant: str, settings: Settings, adding: int, freeing: int = 0
) -> None:
    """Before anything is stored: 429 if `adding` bytes do not fit the tenant's storage quota."""
    _answered(lambda: check_storage(session, tenant, settings, adding, freeing))


def claim_storage(
    session: Session,
    tenant: str,
    settings: Settings,
    adding: int,
    blobs: BlobStore,
    stored_keys: Iterable[str],
) -> None:
    """Right before a new upload's row is committed, after its blobs are stored: the tenant is
    locked until that commit and its storage counted again, so two uploads racing for the last
    bytes cannot both pass. The loser's blobs are removed and it gets the 429."""
    try:
        check_storage(session, tenant, settings, adding, lock=True)
    except QuotaExceededError as exceeded:
        session.rollback()
        for key in stored_keys:
            try:
                blobs.delete(key)
            except BlobStoreError as error:  # an orphan blob holds no one's data: say so, go on
                log.warning("could not remove %s after a quota refusal: %s", key, error)
        raise quota_refusal(exceeded) from None
