"""Database tables (SQLAlchemy 2.0 typed mappings). The schema itself is owned by migrations/."""

from __future__ import annotations

import enum
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


DEFAULT_TENANT = "tnt_default"  # owns everything made without a key on an open deployment
# The largest values the columns hold on PostgreSQL and SQLite alike: row ids are BIGINT, steps
# INTEGER. A query parameter compared with them is bounded by these (SQLite's driver overflows past
# 64 bits, a 500 otherwise).
ROW_ID_MAX = 2**63 - 1
STEP_MAX = 2**31 - 1


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tnt"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # quota overrides set by `dfkd tenants set-quota`: None keeps the deployment's setting, 0 lifts it
    max_active_jobs: Mapped[int | None] = mapped_column(Integer)
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    """An API key, stored as the SHA-256 of the secret: keys are 32 random bytes, so a fast hash
    cannot be brute-forced and lets the key itself be the lookup."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotencyRecord(Base):
    """The first request made with an Idempotency-Key, so a retry gets the same object back."""

    __tablename__ = "idempotency_records"
    __table_args__ = (Index("ux_idempotency", "tenant_id", "endpoint", "key", unique=True),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Teacher(Base):
    __tablename__ = "teachers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tch"))
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id"), default=DEFAULT_TENANT, index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(20))
    architecture: Mapped[str] = mapped_column(String(100))
    architecture_kwargs: Mapped[dict[str, Any]]
    input_shape: Mapped[list[Any]]
    num_classes: Mapped[int] = mapped_column(Integer)
    input_mean: Mapped[list[Any] | None]
    input_std: Mapped[list[Any] | None]
    blob_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    # activation record shipped by the owner for the Lopes methods (core.metadata)
    metadata_key: Mapped[str | None] = mapped_column(String(300))
    metadata_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # an ONNX teacher's conversion at upload: opset, converter, max difference from onnxruntime
    conversion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # "classification" (logits [N, K]) or "segmentation" (per-pixel logits [N, K, H, W])
    task_type: Mapped[str] = mapped_column(
        String(20), default="classification", server_default="classification"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    """A labelled image set for evaluation or few-shot fine-tuning, never for data-free training."""

    __tablename__ = "datasets"
    __table_args__ = (Index("ix_datasets_created", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("dst"))
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id"), default=DEFAULT_TENANT, index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(20))
    blob_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    num_examples: Mapped[int] = mapped_column(Integer)
    image_shape: Mapped[list[Any]]
    pixel_dtype: Mapped[str] = mapped_column(String(20))
    class_counts: Mapped[dict[str, Any]]
    # "classification": labels [N]; "segmentation": masks [N, H, W], class_counts count pixels
    task_type: Mapped[str] = mapped_column(
        String(20), default="classification", server_default="classification"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id"), default=DEFAULT_TENANT, index=True
    )
    teacher_id: Mapped[str] = mapped_column(ForeignKey("teachers.id"))
    method: Mapped[str] = mapped_column(String(20))
    student_architecture: Mapped[str] = mapped_column(String(100))
    student_kwargs: Mapped[dict[str, Any]]
    iterations: Mapped[int | None] = mapped_column(Integer)  # None: the budget alone ends it
    # seconds of training, across attempts; the run ends at whichever of the two comes first
    budget_seconds: Mapped[float | None] = mapped_column(Float)
    batch_size: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    hyperparameters: Mapped[dict[str, Any]]  # effective values, every default filled in
    job_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int | None] = mapped_column(Integer)  # steps of the whole run, if known
    progress_fraction: Mapped[float | None] = mapped_column(Float)  # of iterations or budget
    samples_per_second: Mapped[float | None] = mapped_column(Float)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    latest_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    student_key: Mapped[str | None] = mapped_column(String(300))
    evaluation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    few_shot_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    few_shot_per_class: Mapped[int | None] = mapped_column(Integer)
    sample_every: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_every: Mapped[int] = mapped_column(Integer, default=0)
    # per attempt, in seconds; None: the deployment's DFKD_JOB_SOFT_TIME_LIMIT_SECONDS
    time_limit_seconds: Mapped[float | None] = mapped_column(Float)
    evaluation_options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    # plain secrets of jobs made before migration 0009, until `dfkd secrets rotate` encrypts them
    webhook_secret: Mapped[str | None] = mapped_column(String(500))
    # the secret that signs deliveries, Fernet-encrypted (service/secret_box.py); never returned
    webhook_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class MetricPoint(Base):
    __tablename__ = "metric_points"
    __table_args__ = (
        Index("ux_metric_points_job_name_step", "job_id", "name", "step", unique=True),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobArtifact(Base):
    """A file a job produced: sample grids by step, evaluation plots."""

    __tablename__ = "job_artifacts"
    __table_args__ = (Index("ix_job_artifacts_job_kind", "job_id", "kind", "step"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))  # samples | transition_curves
    step: Mapped[int] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # state | warning | error | info
    message: Mapped[str] = mapped_column(Text)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Deletion(Base):
    """One deletion of a teacher, dataset or job: who asked, what, when. No foreign key to the
    object, so the record outlives it. `completed_at` is unset while the deletion is pending (a
    running job stops first; blobs the store could not delete yet): the reaper finishes those."""

    __tablename__ = "deletions"
    __table_args__ = (
        Index("ix_deletions_tenant", "tenant_id", "id"),
        Index("ix_deletions_object", "object_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40))  # None: no key (open deployment)
    kind: Mapped[str] = mapped_column(String(20))  # teacher | dataset | job
    object_id: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(20))  # request | cascade | retention
    blobs_deleted: Mapped[int | None] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
