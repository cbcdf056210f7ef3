"""Per-tenant quotas: how many jobs a tenant may have queued or running, how many bytes it may store.

A limit comes from the deployment's setting (DFKD_TENANT_MAX_ACTIVE_JOBS,
DFKD_TENANT_MAX_STORAGE_BYTES) unless the tenant's row overrides it (`dfkd tenants set-quota`);
None or 0 means unlimited. Stored bytes are the tenant's teachers' weights and activation records
plus its datasets, as recorded at upload; job outputs (checkpoints, samples, students) have no
recorded size and are not counted.

Two requests must not both take the last slot: `lock_tenant` takes the tenant row's write lock
inside the caller's transaction before anything is counted, and the caller's commit (with the new
row in it) releases it. A second request for the same tenant waits for the first to commit and
then counts its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.models import Dataset, Job, JobStatus, Teacher, Tenant
from service.settings import Settings

ACTIVE_STATUSES = (JobStatus.queued, JobStatus.running)


@dataclass(frozen=True)
class TenantLimits:
    max_active_jobs: int | None  # None: unlimited
    max_storage_bytes: int | None


class QuotaExceededError(Exception):
    """A request would take the tenant past one of its quotas."""

    def __init__(self, quota: str, limit: int, use: int, requested: int) -> None:
        super().__init__(f"{quota}: {use} used + {requested} requested > {limit}")
        self.quota = quota  # "active_jobs" | "storage"
        self.limit = limit
        self.use = use
        self.requested = requested


def _limit(override: int | None, default: int | None) -> int | None:
    chosen = default if override is None else override
    return chosen or None  # 0 lifts the limit


def tenant_limits(session: Session, tenant_id: str, settings: Settings) -> TenantLimits:
    """The limits in force for the tenant: its overrides, else the deployment's settings."""
    row = session.execute(
        select(Tenant.max_active_jobs, Tenant.max_storage_bytes).where(Tenant.id == tenant_id)
    ).one_or_none()
    jobs, storage = row if row is not None else (None, None)
    return TenantLimits(
        max_active_jobs=_limit(jobs, settings.tenant_max_active_jobs),
        max_storage_bytes=_limit(storage, settings.tenant_max_storage_bytes),
    )


def lock_tenant(session: Session, tenant_id: str) -> None:
    """The tenant row's write lock until the caller's transaction ends: an UPDATE that changes
    nothing. On PostgreSQL a row lock (as SELECT ... FOR UPDATE takes), other tenants unaffected;
    on SQLite the database's write lock, taken before anything is read, so the count that follows
    sees every committed row (SQLite has no row locks; its writes are serialized anyway)."""
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(name=Tenant.name)
        .execution_options(synchronize_session=False)
    )


def active_jobs(session: Session, tenant_id: str) -> int:
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.tenant_id == tenant_id, Job.status.in_(ACTIVE_STATUSES))
    )


def stored_bytes(session: Session, tenant_id: str) -> int:
    """Teachers' weights and activation records plus datasets, as recorded at upload."""
    weights = session.scalar(
        select(func.coalesce(func.sum(Teacher.size_bytes), 0)).where(Teacher.tenant_id == tenant_id)
    )
    records = session.scalars(
        select(Teacher.metadata_info).where(
            Teacher.tenant_id == tenant_id, Teacher.metadata_key.is_not(None)
        )
    )
    datasets = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.tenant_id == tenant_id)
    )
    return (
        int(weights)
        + sum(int((info or {}).get("size_bytes", 0)) for info in records)
        + int(datasets)
    )


def reserve_job_slot(session: Session, tenant_id: str, settings: Settings) -> None:
    """Lock the tenant and check that one more active job fits. The caller adds the job and
    commits in the same transaction; QuotaExceededError (the lock is released on rollback)."""
    limits = tenant_limits(session, tenant_id, settings)
    if limits.max_storage_bytes is not None:  # every job writes outputs: none once over storage
        use = stored_bytes(session, tenant_id)
        if use > limits.max_storage_bytes:
            raise QuotaExceededError("storage", limits.max_storage_bytes, use, 0)
    if limits.max_active_jobs is None:
        return
    lock_tenant(session, tenant_id)
    use = active_jobs(session, tenant_id)
    if use + 1 > limits.max_active_jobs:
        raise QuotaExceededError("active_jobs", limits.max_active_jobs, use, 1)


def check_storage(
    session: Session,
    tenant_id: str,
    settings: Settings,
    adding: int,
    freeing: int = 0,
    *,
    lock: bool = False,
) -> None:
    """Raise QuotaExceededError when storing `adding` more bytes (and dropping `freeing`) would
    take the tenant past its storage limit. With `lock`, the tenant is locked first: the caller
    then commits its new row in the same transaction."""
    limit = tenant_limits(session, tenant_id, settings).max_storage_bytes
    if limit is None:
        return
    if lock:
        lock_tenant(session, tenant_id)
    use = stored_bytes(session, tenant_id) - freeing
    if use + adding > limit:
        raise QuotaExceededError("storage", limit, use, adding)


def set_overrides(
    tenant: Tenant,
    max_active_jobs: int | None = None,
    max_storage_bytes: int | None = None,
) -> None:
    """Override the given limits for one tenant (0: unlimited); the others stay as they were."""
    if max_active_jobs is not None:
        tenant.max_active_jobs = max_active_jobs
    if max_storage_bytes is not None:
        tenant.max_storage_bytes = max_storage_bytes


def clear_overrides(tenant: Tenant, active_jobs: bool, storage: bool) -> None:
    """Back to the deployment's settings for the named limits."""
    if active_jobs:
        tenant.max_active_jobs = None
    if storage:
        tenant.max_storage_bytes = None


def quota_report(session: Session, tenant: Tenant, settings: Settings) -> dict[str, Any]:
    """A tenant's overrides, the limits in force and its current use, for `dfkd tenants list`."""
    limits = tenant_limits(session, tenant.id, settings)
    return {
        "id": tenant.id,
        "tenant": tenant.name,
        "overrides": {
            "max_active_jobs": tenant.max_active_jobs,
            "max_storage_bytes": tenant.max_storage_bytes,
        },
        "limits": {
            "max_active_jobs": limits.max_active_jobs,
            "max_storage_bytes": limits.max_storage_bytes,
        },
        "use": {
            "active_jobs": active_jobs(session, tenant.id),
            "storage_bytes": stored_bytes(session, tenant.id),
        },
    }
