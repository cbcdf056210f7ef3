"""Request and response bodies. What the API returns is never an ORM row itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.methods.zskt import PAPER_BETA_AT_MEAN_REDUCTION, ZSKTConfig

_ZSKT = ZSKTConfig()


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without a zone; every stored time is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


# --- architectures


class ArchitecturePublic(BaseModel):
    name: str
    description: str
    kwargs: dict[str, Any] = Field(description="keyword arguments with their defaults")
    input_shape: list[int] = Field(description="[C, H, W] with the default kwargs")
    num_classes: int
    attention_taps: list[str] = Field(description="modules whose outputs feed attention transfer")


class ArchitecturesPublic(BaseModel):
    items: list[ArchitecturePublic]


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
    parameter_count: int
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
    class_counts: dict[int, int]
    created_at: datetime


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]
    next_cursor: str | None
    has_more: bool


# --- jobs


class StudentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(
        description="a name from GET /v1/architectures", examples=["lenet5_half"]
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="constructor arguments; num_classes, in_channels and image_size default to the teacher's",
    )


class ZSKTHyperparameters(BaseModel):
    """ZSKT (Micaelli & Storkey, 2019). Defaults are the paper's CIFAR-10 scripts unless noted."""

    model_config = ConfigDict(extra="forbid")

    z_dim: int = Field(
        _ZSKT.z_dim, ge=1, le=4096, description="dimension of the generator's noise z (paper: 100)"
    )
    generator_steps: int = Field(
        _ZSKT.generator_steps,
        ge=0,
        le=100,
        description="n_g, generator steps per iteration (paper: 1)",
    )
    student_steps: int = Field(
        _ZSKT.student_steps,
        ge=1,
        le=1000,
        description="n_s, student steps per iteration on the same pseudo batch (paper: 10)",
    )
    lr_generator: float = Field(
        _ZSKT.lr_generator,
        gt=0,
        le=1,
        description="Adam learning rate of the generator, cosine-annealed (paper: 1e-3)",
    )
    lr_student: float = Field(
        _ZSKT.lr_student,
        gt=0,
        le=1,
        description="Adam learning rate of the student, cosine-annealed (paper: 2e-3)",
    )
    beta: float | None = Field(
        None,
        ge=0,
        description=(
            f"weight of the attention term. Unset means {PAPER_BETA_AT_MEAN_REDUCTION:g} x num_classes: "
            f"the paper's {PAPER_BETA_AT_MEAN_REDUCTION:g} was tuned against a KL averaged over batch and classes; "
            "this service takes the true per-sample KL (batchmean), so the same balance needs C times more"
        ),
    )
    temperature: float = Field(
        _ZSKT.temperature, gt=0, le=100, description="softmax temperature of the KL (paper: 1)"
    )
    grad_clip: float = Field(
        _ZSKT.grad_clip,
        ge=0,
        description="gradient-norm clip for both networks; 0 disables (paper: 5)",
    )
    generator_width: int = Field(
        _ZSKT.generator_width,
        ge=4,
        le=1024,
        description="channels of the generator's first conv (paper: 128, tuned for a GPU; 32 is ~4x faster on a CPU and enough for MNIST)",
    )
    attention: bool = Field(
        _ZSKT.attention,
        description="attention transfer on taps of matching spatial size (paper: on)",
    )
    log_every: int = Field(
        _ZSKT.log_every, ge=1, le=100_000, description="iterations between metric points"
    )


JOB_EXAMPLE = {
    "teacher_id": "tch_0123456789abcdef01234567",
    "method": "zskt",
    "student": {"architecture": "lenet5_half", "kwargs": {}},
    "iterations": 300,
    "batch_size": 128,
    "seed": 0,
    "hyperparameters": {"generator_width": 32},
}


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [JOB_EXAMPLE]})

    teacher_id: str = Field(description="id returned by POST /v1/teachers")
    method: Literal["zskt"] = Field("zskt", description="distillation method")
    student: StudentSpec
    iterations: int = Field(
        _ZSKT.iterations, ge=1, le=10_000_000, description="training iterations (paper: 80 000)"
    )
    batch_size: int = Field(
        _ZSKT.batch_size, ge=2, le=8192, description="pseudo inputs per iteration (paper: 128)"
    )
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed for every random draw of the job")
    hyperparameters: ZSKTHyperparameters = Field(default_factory=ZSKTHyperparameters)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="free-form, returned as given"
    )
    evaluation_dataset_id: str | None = Field(
        None,
        description="labelled set (POST /v1/datasets) to report accuracy, agreement and MTE on; "
        "never used for training or for choosing anything",
    )
    few_shot_dataset_id: str | None = Field(
        None,
        description="labelled set to fine-tune the student on after data-free training (KD + AT)",
    )
    few_shot_per_class: int = Field(
        100,
        ge=1,
        le=100_000,
        description="M, real images per class taken from the few-shot set (paper: 100)",
    )
    mte_images: int = Field(
        1000,
        ge=0,
        le=100_000,
        description="N, evaluation images the MTE walks from (paper: 1000); 0 skips MTE",
    )
    mte_steps: int = Field(
        100, ge=1, le=10_000, description="K, gradient steps per transition curve (paper: 100)"
    )
    sample_every: int = Field(
        100,
        ge=0,
        le=10_000_000,
        description="iterations between generator sample grids (PNG); 0 means none",
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="iterations between checkpoints; unset means the service's setting",
    )


class Progress(BaseModel):
    iteration: int
    total: int
    fraction: float
    samples_per_second: float | None = Field(description="pseudo inputs drawn per second")
    eta_seconds: float | None


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
    iterations: int
    batch_size: int
    seed: int
    hyperparameters: dict[str, Any] = Field(description="effective values, every default filled in")
    metadata: dict[str, Any]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: Progress
    metrics: dict[str, float] = Field(
        description="latest metric values, with the step they were taken at"
    )
    evaluation_dataset_id: str | None
    few_shot_dataset_id: str | None
    few_shot_per_class: int | None
    sample_every: int
    checkpoint_every: int
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
