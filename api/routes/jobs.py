from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response, status
from fastapi.responses import RedirectResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deletions import deletion_answer
from api.deps import (
    BlobsDep,
    IdempotencyKey,
    KeyIdDep,
    QueueDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    owned,
    replay,
)
from api.errors import ApiError, ErrorResponse
from api.job_checks import checked_job, fingerprint_parts
from api.job_specs import JobSpec, job_create_type
from api.pagination import CreatedRangeDep, PageAfter, PageLimit, fetch_page
from api.quota_checks import hold_job_slot
from api.schemas import (
    DeletionPublic,
    JobError,
    JobLinks,
    JobPublic,
    JobsPublic,
    MetricPointPublic,
    MetricsPublic,
    Progress,
    SamplePublic,
    SamplesPublic,
    StudentSpec,
    as_utc,
)
from api.student_config import student_config
from service.blobstore import BlobNotFoundError
from service.deletion import delete_job as delete_job_and_files
from service.idempotency import commit_once, request_fingerprint
from service.job_state import CancelOutcome, add_event, fail_unqueued, request_cancel
from service.models import (
    STEP_MAX,
    Job,
    JobArtifact,
    JobStatus,
    MetricPoint,
    Teacher,
    new_id,
)
from service.queue import JobQueue, QueueUnavailableError
from service.retention import drop_checkpoint
from service.secret_box import encrypt_secret
from service.time_limits import effective_time_limit
from service.webhooks import deliver_job_webhook

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def to_public(job: Job, request: Request) -> JobPublic:
    base = str(request.url_for("get_job", job_id=job.id))
    metrics = {k: float(v) for k, v in job.latest_metrics.items()}
    return JobPublic(
        id=job.id,
        teacher_id=job.teacher_id,
        method=job.method,
        student=StudentSpec(architecture=job.student_architecture, kwargs=job.student_kwargs),
        iterations=job.iterations,
        budget_seconds=job.budget_seconds,
        batch_size=job.batch_size,
        seed=job.seed,
        hyperparameters=job.hyperparameters,
        metadata=job.job_metadata,
        status=job.status,
        progress=Progress(
            iteration=job.progress_step,
            total=job.progress_total or job.iterations,
            fraction=1.0 if job.status == JobStatus.succeeded else job.progress_fraction or 0.0,
            samples_per_second=job.samples_per_second,
            eta_seconds=0.0 if job.status == JobStatus.succeeded else job.eta_seconds,
            flops_per_second=metrics.get("flops_per_second"),
            utilisation=metrics.get("utilisation"),
            peak_rss_bytes=int(metrics["peak_rss_bytes"]) if "peak_rss_bytes" in metrics else None,
        ),
        metrics=metrics,
        webhook_url=job.webhook_url,
        evaluation_dataset_id=job.evaluation_dataset_id,
        few_shot_dataset_id=job.few_shot_dataset_id,
        few_shot_per_class=job.few_shot_per_class,
        sample_every=job.sample_every,
        checkpoint_every=job.checkpoint_every,
        time_limit_seconds=effective_time_limit(job.time_limit_seconds, request.app.state.settings),
        report=job.report,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        created_at=as_utc(job.created_at),
        started_at=as_utc(job.started_at),
        finished_at=as_utc(job.finished_at),
        links=JobLinks(
            self=base,
            metrics=f"{base}/metrics",
            samples=f"{base}/samples",
            student=f"{base}/student" if job.status == JobStatus.succeeded else None,
            report=f"{base}/report" if job.report else None,
        ),
    )


def create_job(
    body: JobSpec,  # the union of the registered methods' jobs: see creation_router
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    queue: QueueDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    fingerprint = request_fingerprint(fingerprint_parts(body, settings))
    replayed = replay(session, tenant, "jobs", idempotency_key, fingerprint, response)
    if replayed is not None:
        return to_public(owned(session, Job, replayed, tenant), request)
    teacher, student_kwargs, effective = checked_job(body, session, tenant, settings)
    hold_job_slot(session, tenant, settings)  # the tenant stays locked until the job is committed
    job = Job(
        id=new_id("job"),
        tenant_id=tenant,
        teacher_id=teacher.id,
        method=body.method,
        student_architecture=body.student.architecture,
        student_kwargs=student_kwargs,
        iterations=body.iterations,
        budget_seconds=body.budget_seconds,
        batch_size=body.batch_size,
        seed=body.seed,
        hyperparameters=effective,
        job_metadata=body.metadata,
        evaluation_dataset_id=body.evaluation_dataset_id,
        few_shot_dataset_id=body.few_shot_dataset_id,
        few_shot_per_class=body.few_shot_per_class if body.few_shot_dataset_id else None,
        sample_every=body.sample_every,
        checkpoint_every=body.checkpoint_every or settings.checkpoint_every,
        time_limit_seconds=body.time_limit_seconds,
        evaluation_options={"mte_images": body.mte_images, "mte_steps": body.mte_steps},
        webhook_url=str(body.webhook.url) if body.webhook else None,
        webhook_secret_encrypted=encrypt_secret(settings, body.webhook.secret)
        if body.webhook
        else None,
        status=JobStatus.queued,
        latest_metrics={},
    )
    session.add(job)
    add_event(session, job.id, "state", "queued")
    winner = commit_once(session, tenant, "jobs", idempotency_key, fingerprint, job.id)
    if winner != job.id:  # a concurrent retry with the same key got there first
        response.headers["Idempotent-Replayed"] = "true"
        return to_public(owned(session, Job, winner, tenant), request)
    _enqueue(queue, session, job)
    return to_public(job, request)


def _enqueue(queue: JobQueue, session: Session, job: Job) -> None:
    """Hand the stored job to the workers; 503 (the job failed, nothing runs) when the broker is
    down."""
    try:
        queue.enqueue(job.id)
    except QueueUnavailableError as error:
        message = f"{error}; the job was not started, submit it again once the broker is back"
        failed = fail_unqueued(session, job.id, "broker_unavailable", message)
        session.commit()
        if failed:
            raise ApiError(503, "broker_unavailable", message) from None
        session.refresh(job)  # it left the queue another way meanwhile (taken or cancelled)


def creation_router() -> APIRouter:
    """POST /v1/jobs with its body typed as the union of the methods registered when the app is
    made (core/method_registry.py), so a method added to core/methods/ needs nothing here."""
    endpoint = types.FunctionType(
        create_job.__code__, create_job.__globals__, create_job.__name__, create_job.__defaults__
    )
    endpoint.__annotations__ = {**create_job.__annotations__, "body": job_create_type()}
    creation = APIRouter(prefix="/v1/jobs", tags=["jobs"])
    creation.add_api_route(
        "",
        endpoint,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        summary="Start a distillation job",
        description="The body's `method` picks one of GET /v1/methods; each method's "
        "`hyperparameters` are listed there with their defaults.",
    )
    return creation


@router.get("", summary="Jobs, newest first")
def list_jobs(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    created: CreatedRangeDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    teacher_id: Annotated[str | None, Query(description="only jobs of this teacher")] = None,
    method: Annotated[str | None, Query(description="only jobs of this method")] = None,
    limit: PageLimit = 50,
    after: PageAfter = None,
) -> JobsPublic:
    query = select(Job).where(Job.tenant_id == tenant)
    if status_filter is not None:
        query = query.where(Job.status == status_filter)
    if teacher_id is not None:
        query = query.where(Job.teacher_id == teacher_id)
    if method is not None:
        query = query.where(Job.method == method)
    query = created.apply(query, Job.created_at)
    rows, cursor, more = fetch_page(session, query, Job, after, limit)
    return JobsPublic(
        items=[to_public(job, request) for job in rows], next_cursor=cursor, has_more=more
    )


def _job_or_404(session: Session, job_id: str, tenant: str) -> Job:
    job = owned(session, Job, job_id, tenant)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


@router.get("/{job_id}", summary="One job: status, progress, latest metrics")
def get_job(job_id: str, request: Request, session: SessionDep, tenant: TenantDep) -> JobPublic:
    return to_public(_job_or_404(session, job_id, tenant), request)


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask a job to stop",
    responses={409: {"model": ErrorResponse, "description": "the job already ended"}},
)
def cancel_job(
    job_id: str,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    background: BackgroundTasks,
    blobs: BlobsDep,
    settings: SettingsDep,
) -> JobPublic:
    job = _job_or_404(session, job_id, tenant)
    outcome = request_cancel(session, job.id)
    session.commit()
    session.refresh(job)
    if outcome == CancelOutcome.already_ended:
        raise ApiError(409, "job_finished", f"the job already ended as {job.status}")
    if outcome == CancelOutcome.cancelled:  # no worker ends it: its webhook and checkpoint here
        background.add_task(
            deliver_job_webhook, request.app.state.sessions, request.app.state.settings, job.id
        )
        background.add_task(drop_checkpoint, blobs, settings, job.id)
    return to_public(job, request)


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a job and every file it made",
    description="A queued job is cancelled and deleted at once; a running one is cancelled and "
    "deleted once it has stopped (202 with the pending deletion); then GET answers 404.",
    responses={
        202: {
            "model": DeletionPublic,
            "description": "running jobs were cancelled; the object goes once they have stopped",
        }
    },
)
def delete_job(
    job_id: str, session: SessionDep, tenant: TenantDep, key_id: KeyIdDep, blobs: BlobsDep
) -> Response:
    job = _job_or_404(session, job_id, tenant)
    return deletion_answer(lambda: delete_job_and_files(session, blobs, job.id, tenant, key_id))


@router.get("/{job_id}/metrics", summary="Metric time series")
def get_metrics(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    name: Annotated[list[str] | None, Query(description="only these metrics (repeatable)")] = None,
    after_step: Annotated[int, Query(ge=-1, le=STEP_MAX)] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> MetricsPublic:
    _job_or_404(session, job_id, tenant)
    query = select(MetricPoint).where(MetricPoint.job_id == job_id, MetricPoint.step > after_step)
    if name:
        query = query.where(MetricPoint.name.in_(name))
    ordered = query.order_by(MetricPoint.step, MetricPoint.name)
    rows = list(session.scalars(ordered.limit(limit + 1)))
    page, next_after = rows[:limit], None
    if len(rows) > limit:
        last_step = page[-1].step
        if rows[limit].step == last_step:
            # never split one step across pages: end before it, or give it whole if it fills the page
            page = [row for row in page if row.step < last_step] or list(
                session.scalars(ordered.where(MetricPoint.step == last_step))
            )
        next_after = page[-1].step
    return MetricsPublic(
        items=[
            MetricPointPublic(name=r.name, step=r.step, value=r.value, time=as_utc(r.time))
            for r in page
        ],
        next_after_step=next_after,
    )


@router.get(
    "/{job_id}/student",
    summary="The distilled student: safetensors, ONNX or TorchScript",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "the file",
        },
        307: {"description": "S3 storage: a short-lived presigned URL to fetch the file from"},
        409: {
            "model": ErrorResponse,
            "description": "`student_not_ready`: the job has not succeeded",
        },
    },
)
def download_student(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    blobs: BlobsDep,
    format: Annotated[
        Literal["safetensors", "onnx", "torchscript"],
        Query(
            description="safetensors (weights for core.models.build), onnx (checked in onnxruntime) or torchscript"
        ),
    ] = "safetensors",
    delivery: Annotated[
        Literal["redirect", "stream"],
        Query(
            description="on S3 storage, redirect (307 to a short-lived presigned URL) or stream through the API"
        ),
    ] = "redirect",
) -> Response:
    job = _job_or_404(session, job_id, tenant)
    if job.status != JobStatus.succeeded or not job.student_key:
        raise ApiError(
            409,
            "student_not_ready",
            f"the job is {job.status}; the student exists once it succeeded",
        )
    if format == "safetensors":
        key = job.student_key
    else:
        key = session.scalar(
            select(JobArtifact.blob_key).where(
                JobArtifact.job_id == job.id, JobArtifact.kind == f"student_{format}"
            )
        )
        if key is None:
            raise ApiError(
                404, "not_found", f"no {format} export of this student; the job's events say why"
            )
    extension = {"safetensors": "safetensors", "onnx": "onnx", "torchscript": "torchscript.pt"}[
        format
    ]
    filename = f"{job.id}-{job.student_architecture.replace(':', '-')}.{extension}"
    if delivery == "redirect" and (url := blobs.presigned_url(key)) is not None:
        return RedirectResponse(url, status_code=307)
    return _stream_blob(blobs, key, "application/octet-stream", filename)


@router.get(
    "/{job_id}/student/config",
    summary="The student's config.json (timm's pretrained-config shape)",
    responses={
        409: {
            "model": ErrorResponse,
            "description": "`student_not_ready`: the job has not succeeded",
        },
    },
)
def student_config_json(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    """architecture, num_classes, model_args, pretrained_cfg (input_size, mean, std), the
    teacher's sha256 and the method. Saved as config.json beside the safetensors student saved as
    model.safetensors, a timm student loads with
    `timm.create_model("local-dir:<folder>", pretrained=True)`."""
    job = _job_or_404(session, job_id, tenant)
    if job.status != JobStatus.succeeded or not job.student_key:
        raise ApiError(
            409,
            "student_not_ready",
            f"the job is {job.status}; the student exists once it succeeded",
        )
    return student_config(job, session.get(Teacher, job.teacher_id))


def _stream_blob(
    blobs: BlobsDep, key: str, media_type: str, filename: str | None = None
) -> StreamingResponse:
    try:
        chunks = blobs.iter_chunks(key)
        first = next(chunks, b"")
    except BlobNotFoundError:
        raise ApiError(404, "not_found", "the file is missing from storage") from None

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks

    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else None
    return StreamingResponse(body(), media_type=media_type, headers=headers)


@router.get("/{job_id}/samples", summary="Generator sample grids by step")
def list_samples(
    job_id: str, request: Request, session: SessionDep, tenant: TenantDep
) -> SamplesPublic:
    _job_or_404(session, job_id, tenant)
    steps = session.scalars(
        select(JobArtifact.step)
        .where(JobArtifact.job_id == job_id, JobArtifact.kind == "samples")
        .order_by(JobArtifact.step)
    )
    return SamplesPublic(
        items=[
            SamplePublic(
                step=step, url=str(request.url_for("get_sample", job_id=job_id, step=step))
            )
            for step in steps
        ]
    )


@router.get(
    "/{job_id}/samples/{step}",
    summary="One sample grid (PNG)",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/png": {}}, "description": "PNG image"}},
)
def get_sample(
    job_id: str,
    step: Annotated[int, Path(ge=0, le=STEP_MAX)],
    session: SessionDep,
    tenant: TenantDep,
    blobs: BlobsDep,
) -> StreamingResponse:
    _job_or_404(session, job_id, tenant)
    key = session.scalar(
        select(JobArtifact.blob_key).where(
            JobArtifact.job_id == job_id, JobArtifact.kind == "samples", JobArtifact.step == step
        )
    )
    if key is None:
        raise ApiError(
            404,
            "not_found",
            f"no sample grid at step {step}; GET /v1/jobs/{job_id}/samples lists them",
        )
    return _stream_blob(blobs, key, "image/png")


@router.get(
    "/{job_id}/report",
    summary="The evaluation report (needs an evaluation dataset)",
    responses={
        409: {
            "model": ErrorResponse,
            "description": "no report: the job has no evaluation dataset or has not succeeded",
        }
    },
)
def get_report(job_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    job = _job_or_404(session, job_id, tenant)
    if job.report is None:
        reason = (
            "the job has no evaluation_dataset_id"
            if job.evaluation_dataset_id is None
            else f"the job is {job.status}; the report is written when it succeeds"
        )
        raise ApiError(409, "report_not_ready", reason)
    return job.report


@router.get(
    "/{job_id}/report/transition-curves.png",
    summary="MTE transition curves (PNG)",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/png": {}}, "description": "PNG image"}},
)
def get_transition_curves(
    job_id: str, session: SessionDep, tenant: TenantDep, blobs: BlobsDep
) -> StreamingResponse:
    _job_or_404(session, job_id, tenant)
    key = session.scalar(
        select(JobArtifact.blob_key).where(
            JobArtifact.job_id == job_id, JobArtifact.kind == "transition_curves"
        )
    )
    if key is None:
        raise ApiError(404, "not_found", "this job has no transition-curve plot")
    return _stream_blob(blobs, key, "image/png")


@router.get(
    "/{job_id}/synthetic",
    summary="The synthesised inputs of a pool method (npz: images, teacher logits)",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "npz with `images` [N, C, H, W] float32 in the teacher's normalised "
            "input space and the teacher's `logits` [N, classes] on them",
        }
    },
)
def get_synthetic(
    job_id: str, session: SessionDep, tenant: TenantDep, blobs: BlobsDep
) -> StreamingResponse:
    job = _job_or_404(session, job_id, tenant)
    key = session.scalar(
        select(JobArtifact.blob_key).where(
            JobArtifact.job_id == job_id, JobArtifact.kind == "synthetic"
        )
    )
    if key is None:
        raise ApiError(
            404,
            "not_found",
            f"no synthetic set: the job is {job.status}, and only methods that keep a pool of "
            "synthesised inputs publish one when they succeed (GET /v1/methods)",
        )
    return _stream_blob(blobs, key, "application/octet-stream", f"{job.id}-synthetic.npz")
