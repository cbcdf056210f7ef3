"""What a job spec may say: the fields every method shares and each method's hyperparameters.

The per-method parts are generated from the method registry (core/method_registry.py): each
hyperparameter's type, default, bounds and description are the ones its config dataclass declares
(docs/methods.md). The job kinds form one union keyed by `method` (the registry's default method
when it is left out).
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    HttpUrl,
    Tag,
    create_model,
    model_validator,
)

from api.json_limits import bounded_json
from core.hyperparameters import HyperparameterInfo
from core.method_registry import MethodSpec, default_method, list_methods

# ids as the service makes them (service.models.new_id): the prefix says what they name
TEACHER_ID = r"^tch_[0-9a-z]+$"
DATASET_ID = r"^dst_[0-9a-z]+$"

METADATA_MAX_BYTES = 16 * 1024
BUDGET_MAX_SECONDS = 30 * 24 * 3600.0  # beyond any deployment's limit; the route checks that
METADATA_MAX_DEPTH = 8


class StudentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(
        description="a name from GET /v1/architectures", examples=["lenet5_half"]
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="constructor arguments; num_classes, in_channels and image_size default to the teacher's",
    )


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(
        description="receives a signed POST when the job succeeds, fails or is cancelled"
    )
    secret: str = Field(
        min_length=16,
        max_length=500,
        description="signs each delivery (Standard Webhooks: HMAC-SHA256 over id.timestamp.body); "
        "`whsec_<base64>` secrets are base64-decoded first. Never returned by the API",
    )


class JobSpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teacher_id: str = Field(
        description="id returned by POST /v1/teachers",
        pattern=TEACHER_ID,
        examples=["tch_0123456789abcdef01234567"],
    )
    student: StudentSpec
    webhook: WebhookSpec | None = None
    seed: int = Field(0, ge=0, le=2**63 - 1, description="seed for every random draw of the job")
    metadata: Annotated[
        dict[str, Any],
        BeforeValidator(bounded_json("metadata", METADATA_MAX_BYTES, METADATA_MAX_DEPTH)),
    ] = Field(
        default_factory=dict,
        description=f"free-form, returned as given; at most {METADATA_MAX_BYTES} bytes as JSON "
        f"and {METADATA_MAX_DEPTH} levels deep",
    )
    evaluation_dataset_id: str | None = Field(
        None,
        pattern=DATASET_ID,
        description="labelled set (POST /v1/datasets) to report accuracy, agreement and MTE on; "
        "never used for training or for choosing anything",
    )
    few_shot_dataset_id: str | None = Field(
        None,
        pattern=DATASET_ID,
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
    time_limit_seconds: float | None = Field(
        None,
        gt=0,
        description="seconds an attempt may run: past it the job stops right after its next "
        "checkpoint and fails with error.code time_limit, the checkpoint kept. Unset, or above "
        "the deployment's DFKD_JOB_SOFT_TIME_LIMIT_SECONDS, means that setting; the deployment's "
        "hard limit (DFKD_JOB_HARD_TIME_LIMIT_SECONDS) kills a job that cannot reach a checkpoint",
    )
    budget_seconds: float | None = Field(
        None,
        gt=0,
        le=BUDGET_MAX_SECONDS,
        description="seconds of training: the job ends `succeeded` with its student when they are "
        "spent (or at `iterations`, whichever comes first), and the learning-rate schedules run "
        "on the fraction of the budget spent. At most the deployment's time limit per attempt; "
        "a resumed job keeps the time it already spent. Few-shot fine-tuning runs after it",
        examples=[600],
    )

    @model_validator(mode="after")
    def _has_an_end(self) -> JobSpecBase:
        if getattr(self, "iterations", None) is None and self.budget_seconds is None:
            raise ValueError(
                "iterations or budget_seconds: give at least one (the job runs until the first "
                "is reached); GET /v1/methods shows each method's paper iterations"
            )
        return self

    @model_validator(mode="after")
    def _evaluation_set_is_held_out(self) -> JobSpecBase:
        if self.few_shot_dataset_id and self.few_shot_dataset_id == self.evaluation_dataset_id:
            raise ValueError(
                "evaluation_dataset_id and few_shot_dataset_id name the same dataset: the report "
                "would score the student on the images it was fine-tuned on; upload a held-out "
                "evaluation set of its own"
            )
        return self


def _hyperparameter_field(info: HyperparameterInfo) -> tuple[Any, Any]:
    annotation = info.type
    if info.choices:
        choice = Literal[info.choices]  # type: ignore[valid-type]
        annotation = choice | None if type(None) in get_args(info.type) else choice
    description = info.description
    if info.device_defaults is not None:
        description += " (the job shows the value its worker chose)"
    return annotation, Field(info.default, description=description, **info.bounds)


def hyperparameters_model(spec: MethodSpec) -> type[BaseModel]:
    """The `hyperparameters` object of a `spec.name` job, read from its config's fields."""
    fields = {info.name: _hyperparameter_field(info) for info in spec.hyperparameters()}
    return create_model(
        f"{spec.title}Hyperparameters",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"{spec.title} ({spec.paper}). Unset fields are derived when the job starts.",
        **fields,
    )


def job_example(spec: MethodSpec) -> dict[str, Any]:
    """A job that runs in a minute on a CPU: the method's own example hyperparameters."""
    return {
        "teacher_id": "tch_0123456789abcdef01234567",
        "method": spec.name,
        "student": {"architecture": "lenet5_half", "kwargs": {}},
        "iterations": 200,
        "batch_size": 128,
        "seed": 0,
        "hyperparameters": spec.example,
    }


def job_model(spec: MethodSpec, default: bool) -> type[JobSpecBase]:
    """One member of the job union: the shared fields, `method`, and the method's own."""
    defaults = spec.job_defaults()
    iterations, batch_size = defaults["iterations"], defaults["batch_size"]
    hyperparameters = hyperparameters_model(spec)
    method_field = Field(
        spec.name if default else ...,
        description=f"{spec.summary}{' (the default)' if default else ''}",
    )
    return create_model(
        f"{spec.title}Job",
        __base__=JobSpecBase,
        __doc__=f"{spec.title}: {spec.summary}. {spec.paper}.",
        method=(Literal[spec.name], method_field),  # type: ignore[valid-type]
        iterations=(
            int | None,
            Field(
                None,
                description=f"{iterations.description}; the paper's runs take "
                f"{iterations.default}. Give iterations, budget_seconds or both (whichever ends "
                "first)",
                **iterations.bounds,
            ),
        ),
        batch_size=(
            int,
            Field(batch_size.default, description=batch_size.description, **batch_size.bounds),
        ),
        hyperparameters=(hyperparameters, Field(default_factory=hyperparameters)),
    )


def _example_schema(model: type[BaseModel], example: dict[str, Any]) -> None:
    # (the iterations-or-budget rule stays out of the schema: an anyOf there splits every member
    # into two types in generated clients)
    model.model_config["json_schema_extra"] = {"examples": [example]}
    model.model_rebuild(force=True)


@functools.cache
def _job_union(specs: tuple[MethodSpec, ...], default: str) -> Any:
    members = []
    for spec in specs:
        model = job_model(spec, spec.name == default)
        _example_schema(model, job_example(spec))
        members.append(Annotated[model, Tag(spec.name)])
    names = ", ".join(spec.name for spec in specs)

    def method_of(value: Any) -> str:
        if isinstance(value, dict):
            return value.get("method", default)
        return getattr(value, "method", default)

    return Annotated[
        Union[tuple(members)],  # noqa: UP007 (a union built from a list)
        Discriminator(
            method_of,
            custom_error_type="unknown_method",
            custom_error_message=f"method must be one of: {names} (GET /v1/methods)",
        ),
    ]


def job_create_type() -> Any:
    """The body of POST /v1/jobs: a union keyed by `method` over the registered methods."""
    return _job_union(tuple(list_methods()), default_method())


JobSpec = JobSpecBase  # a job of any method (the route's body is `job_create_type()`)
