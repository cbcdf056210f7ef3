"""Request and response bodies. What the API returns is never an ORM row itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.job_specs import StudentSpec


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


# --- architectures


class ArgumentBound(BaseModel):
    minimum: float
    maximum: float
    integer: bool = Field(description="only whole numbers")


class ArchitecturePublic(BaseModel):
    name: str
    description: str
    kwargs: dict[str, Any] = Field(description="keyword arguments with their defaults")
    bounds: dict[str, ArgumentBound] = Field(
        description="the values each numeric argument may take; others are refused with 422 "
        "before anything is built"
    )
    input_shape: list[int] = Field(description="[C, H, W] with the default kwargs")
    num_classes: int
    attention_taps: list[str] = Field(description="modules whose outputs feed attention transfer")
    task: Literal["classification", "segmentation"] = Field(
        description="classification: logits [N, classes]; segmentation: per-pixel logits "
        "[N, classes, H, W] at the input's size"
    )


class ArchitecturesPublic(BaseModel):
    items: list[ArchitecturePublic] = Field(description="the registry's architectures")
    libraries: list[str] = Field(
        description="library name forms also accepted as `architecture`: built by the library "
        "(no pretrained weights), `architecture_kwargs` passed to its constructor"
    )
    library_models: list[str] = Field(
        description="the torchvision / timm names accepted (those matching `q` when given)"
    )
    library_segmentation_models: list[str] = Field(
        description="those of `library_models` whose task is segmentation (per-pixel logits); "
        "the others classify"
    )


# --- methods


class HyperparameterPublic(BaseModel):
    name: str
    type: str = Field(description="integer, number, boolean, string or array; |null: may be unset")
    default: Any = Field(
        description="the value an unset field takes; null: derived when the job starts"
    )
    default_cpu: Any = Field(None, description="what an unset field becomes on a CPU worker")
    default_gpu: Any = Field(None, description="what an unset field becomes on a GPU worker")
    description: str
    bounds: dict[str, float] = Field(description="ge / gt / le / lt: the values a job may ask for")
    choices: list[str] | None = None


class RequirementPublic(BaseModel):
    code: str = Field(description="the error code of a job refused for lacking it")
    summary: str


class MethodPublic(BaseModel):
    name: str = Field(description="what a job's `method` says")
    title: str
    summary: str
    paper: str
    task_types: list[str]
    requirements: list[RequirementPublic] = Field(description="what the teacher must have")
    iterations: HyperparameterPublic = Field(
        description="the paper's run length (a job gives iterations, budget_seconds or both)"
    )
    batch_size: HyperparameterPublic
    hyperparameters: list[HyperparameterPublic] = Field(
        description="the job's `hyperparameters` object, field by field"
    )
    example: dict[str, Any] = Field(description="a job body that runs in about a minute on a CPU")


class MethodsPublic(BaseModel):
    items: list[MethodPublic]
    default: str = Field(description="the method of a job that names none")


# --- teachers


class TeacherPublic(BaseModel):
    id: str
    name: str
    format: str
    architecture: str
    architecture_kwargs: dict[str, Any] = Field(
        description="all constructor arguments, defaults filled in"
    )
    input_shape: list[int]
    num_classes: int
    input_mean: list[float] | None
    input_std: list[float] | None
    sha256: str
    size_bytes: int
    parameter_count: int | None = Field(
        description="unknown (null) for program teachers until a worker loads them"
    )
    metadata: dict[str, Any] | None = Field(
        None,
        description="summary of the activation record (for the methods that need one), if uploaded",
    )
    conversion: dict[str, Any] | None = Field(
        None,
        description="ONNX teachers: the opset, the converter and the max absolute difference "
        "between the converted module and onnxruntime on a dummy batch",
    )
    task_type: Literal["classification", "segmentation"] = Field(
        description="from the teacher's output: logits [N, classes] classify, per-pixel logits "
        "[N, classes, H, W] segment; it decides the methods and students a job may use"
    )
    created_at: datetime


class TeachersPublic(BaseModel):
    items: list[TeacherPublic]
    next_cursor: str | None
    has_more: bool


# --- datasets


class DatasetPublic(BaseModel):
    id: str
    name: str
    format: Literal["npz", "safetensors"]
    sha256: str
    size_bytes: int
    num_examples: int
    image_shape: list[int] = Field(description="[C, H, W]")
    pixel_dtype: str = Field(
        description="uint8 (pixels, normalised with the teacher's mean/std) or a float type (used as given)"
    )
    class_counts: dict[int, int] = Field(
        description="examples per label; for masks, pixels per class (ignored pixels, 255, "
        "left out)"
    )
    task_type: Literal["classification", "segmentation"] = Field(
        description="classification: `labels` [N]; segmentation: `masks` [N, H, W] of class "
        "indices, 255 = ignore"
    )
    created_at: datetime


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]
    next_cursor: str | None
    has_more: bool


# --- jobs


class Progress(BaseModel):
    iteration: int = Field(
        description="steps done (a method's phases and few-shot fine-tuning count on)"
    )
    total: int | None = Field(
        description="steps of the whole run; null while a budget alone decides"
    )
    fraction: float = Field(
        description="done, of the iterations or of budget_seconds, whichever is further along"
    )
    samples_per_second: float | None = Field(description="pseudo inputs drawn per second")
    eta_seconds: float | None = Field(
        description="seconds left, by the pace so far or by the budget, whichever ends first"
    )
    flops_per_second: float | None = Field(
        None,
        description="matmul/conv FLOPs the loop performs per second (counted on its first iteration)",
    )
    utilisation: float | None = Field(
        None,
        description="flops_per_second over the device's float32 matmul peak, measured on the worker",
    )
    peak_rss_bytes: int | None = Field(
        None, description="the largest resident memory of the job's process seen so far"
    )


class JobError(BaseModel):
    code: str
    message: str


class JobLinks(BaseModel):
    self: str
    metrics: str
    samples: str
    student: str | None = Field(description="present once the job succeeded")
    report: str | None = Field(description="present once an evaluation report exists")


class JobPublic(BaseModel):
    id: str
    teacher_id: str
    method: str
    student: StudentSpec
    iterations: int | None
    budget_seconds: float | None = Field(description="seconds of training the job may take")
    batch_size: int
    seed: int
    hyperparameters: dict[str, Any] = Field(description="effective values, every default filled in")
    metadata: dict[str, Any]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: Progress
    metrics: dict[str, float] = Field(
        description="latest metric values, with the step they were taken at"
    )
    webhook_url: str | None
    evaluation_dataset_id: str | None
    few_shot_dataset_id: str | None
    few_shot_per_class: int | None
    sample_every: int
    checkpoint_every: int
    time_limit_seconds: float = Field(description="the soft time limit this job runs under")
    report: dict[str, Any] | None = Field(
        description="evaluation on the labelled set: accuracies, agreement, MTE (last iterate)"
    )
    attempts: int
    cancel_requested: bool
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks


class JobsPublic(BaseModel):
    items: list[JobPublic]
    next_cursor: str | None = Field(description="pass as `after` for the next page")
    has_more: bool


class EventPublic(BaseModel):
    id: int
    kind: str = Field(description="state | warning | error | info | webhook")
    message: str
    time: datetime


class EventsPublic(BaseModel):
    items: list[EventPublic]
    next_after: int | None = Field(description="pass as `after` for the next page")


class SamplePublic(BaseModel):
    step: int
    url: str = Field(description="the PNG grid")


class SamplesPublic(BaseModel):
    items: list[SamplePublic]


class MetricPointPublic(BaseModel):
    name: str
    step: int
    value: float
    time: datetime


class MetricsPublic(BaseModel):
    items: list[MetricPointPublic]
    next_after_step: int | None = Field(description="pass as `after_step` for the next page")


# --- deletions


class DeletionPublic(BaseModel):
    id: int
    kind: Literal["teacher", "dataset", "job"]
    object_id: str
    reason: Literal["request", "cascade", "retention"] = Field(
        description="request: a DELETE of this object; cascade: its teacher was deleted; "
        "retention: DFKD_RETENTION_DAYS passed since the job ended"
    )
    key_id: str | None = Field(description="the API key that asked; null without a key")
    state: Literal["pending", "deleted"] = Field(
        description="pending: waiting for running jobs to stop (they were cancelled); deleted: "
        "the object and every file it made are gone"
    )
    waiting_for: list[str] = Field(
        default_factory=list, description="jobs still stopping before the object goes"
    )
    blobs_deleted: int | None = Field(description="stored files removed")
    requested_at: datetime
    completed_at: datetime | None


class DeletionsPublic(BaseModel):
    items: list[DeletionPublic]
