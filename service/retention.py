"""What the service keeps after a job ends: its checkpoint only if asked, its job only for
`DFKD_RETENTION_DAYS`."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session

from service.blob_keys import checkpoint_key
from service.blobstore import BlobStore, BlobStoreError
from service.deletion import delete_job
from service.job_state import expired_jobs
from service.models import Job, utcnow
from service.settings import Settings

log = logging.getLogger(__name__)

EXPIRED_PER_PASS = 100  # a pass stays short; the next one takes the rest


def drop_checkpoint(blobs: BlobStore, settings: Settings, job_id: str) -> None:
    """A job that ended does not resume: its checkpoint (the largest file it made) goes, unless
    the operator keeps them (DFKD_KEEP_CHECKPOINTS)."""
    if settings.keep_checkpoints:
        return
    try:
        blobs.delete(checkpoint_key(job_id))
    except BlobStoreError as error:  # a DELETE or retention removes it with the job later
        log.warning("job %s: checkpoint not deleted: %s", job_id, error)


def expire_jobs(session: Session, blobs: BlobStore, settings: Settings) -> list[str]:
    """Deletes (rows and blobs) jobs that ended more than DFKD_RETENTION_DAYS ago; each deletion
    is recorded with reason `retention`. Returns their ids."""
    if settings.retention_days is None:
        return []
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    expired: list[str] = []
    for job_id in expired_jobs(session, cutoff, EXPIRED_PER_PASS):
        job = session.get(Job, job_id)
        if job is None:
            continue
        delete_job(session, blobs, job_id, job.tenant_id, None, reason="retention")
        expired.append(job_id)
    return expired
