"""What a job spec may say: the fields every method shares and each method's hyperparameters.

Defaults come from the papers (docs/algorithms.md); each field's description names its source.
The three job kinds form one union keyed by `method` (zskt when it is left out).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    HttpUrl,
    Tag,
    model_validator,
)

from api.json_limits import bounded_json
from core.methods.dfad import DFADConfig
from core.methods.lopes import LopesConfig
from core.methods.zskt import (
    PAPER_BETA_AT_MEAN_REDUCTION,
    PAPER_GRAD_CLIP_AT_MEAN_REDUCTION,
    ZSKTConfig,
)

# ids as the service makes them (service.models.new_id): the prefix says what they name
TEACHER_ID = r"^tch_[0-9a-z]+$"
DATASET_ID = r"^dst_[0-9a-z]+$"

_ZSKT = ZSKTConfig()
_DFAD = DFADConfig()
_LOPES = LopesConfig()
METADATA_MAX_BYTES = 16 * 1024
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
    grad_clip: float | None = Field(
        None,
        ge=0,
        description=(
            f"gradient-norm clip for both networks; 0 disables. Unset means "
            f"{PAPER_GRAD_CLIP_AT_MEAN_REDUCTION:g} x num_classes: the paper's "
            f"{PAPER_GRAD_CLIP_AT_MEAN_REDUCTION:g} was set for losses averaged over batch and "
            "classes; the batchmean losses here are C times larger, and so are their gradients"
        ),
    )
    generator_width: int | None = Field(
        None,
        ge=4,
        le=1024,
        description="channels of the generator's first conv. The paper's 128 was tuned for a GPU budget: "
        "unset means 128 on a GPU worker and 32 on a CPU worker (~4x faster, enough for MNIST); "
        "the job shows the value its worker chose",
    )
    attention: bool = Field(
        _ZSKT.attention,
        description="attention transfer on taps of matching spatial size (paper: on)",
    )
    log_every: int = Field(
        _ZSKT.log_every, ge=1, le=100_000, description="iterations between metric points"
    )


class DFADHyperparameters(BaseModel):
    """DFAD (Fang et al., 2019). Unset fields are derived from the teacher's input shape."""

    model_config = ConfigDict(extra="forbid")

    student_steps: int = Field(
        _DFAD.student_steps,
        ge=1,
        le=1000,
        description="student steps per iteration, fresh z each (paper: 5)",
    )
    generator_steps: int = Field(
        _DFAD.generator_steps, ge=0, le=100, description="generator steps per iteration (paper: 1)"
    )
    lr_student: float | None = Field(
        None,
        gt=0,
        le=10,
        description="SGD learning rate of the student, x0.1 at 40% and 80% of training. Unset: 0.01 for "
        "MNIST-like inputs (1 channel, <= 32 px; paper's MNIST value), else 0.1 (paper's CIFAR value)",
    )
    weight_decay: float | None = Field(
        None,
        ge=0,
        le=1,
        description="SGD weight decay. Unset: 1e-4 for MNIST-like inputs, else 5e-4 (paper)",
    )
    momentum: float = Field(_DFAD.momentum, ge=0, lt=1, description="SGD momentum (paper: 0.9)")
    lr_generator: float = Field(
        _DFAD.lr_generator,
        gt=0,
        le=1,
        description="Adam learning rate of the generator (paper: 1e-3)",
    )
    z_dim: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="noise dimension. Unset: 100 for 1-channel inputs, else 256 (paper)",
    )
    generator: Literal["dafl", "dcgan"] | None = Field(
        None,
        description="dafl (generator A, <= 64 px) or dcgan (generator B, 128 px). Unset: chosen by input size",
    )
    generator_width: float | None = Field(
        None,
        gt=0,
        le=4,
        description="multiple of the paper's generator width. The paper's 1 was tuned for a GPU budget: "
        "unset means 1 on a GPU worker and 0.25 on a CPU worker (~5x faster, still ~95% on MNIST digits); "
        "the job shows the value its worker chose",
    )
    log_every: int = Field(
        _DFAD.log_every, ge=1, le=100_000, description="iterations between metric points"
    )


class LopesHyperparameters(BaseModel):
    """Lopes, Fenu & Starner (2017): reconstruct inputs from the teacher's activation record, then
    distil on them. Needs a teacher uploaded with `metadata` (dfkd record-metadata)."""

    model_config = ConfigDict(extra="forbid")

    samples: int = Field(
        _LOPES.samples,
        ge=1,
        le=10_000_000,
        description="inputs to reconstruct, cycling over the classes",
    )
    reconstruction_steps: int = Field(
        _LOPES.reconstruction_steps,
        ge=1,
        le=100_000,
        description="Adam steps on each input (paper: 1000)",
    )
    reconstruction_lr: float = Field(
        _LOPES.reconstruction_lr,
        gt=0,
        le=10,
        description="Adam learning rate on the inputs (paper: 0.05-0.07)",
    )
    reconstruction_batch: int = Field(
        _LOPES.reconstruction_batch, ge=1, le=65_536, description="inputs optimised together"
    )
    init_std: float = Field(
        _LOPES.init_std, gt=0, le=100, description="std of the noise the inputs start from"
    )
    lr_student: float = Field(
        _LOPES.lr_student, gt=0, le=1, description="Adam learning rate of the student"
    )
    temperature: float = Field(
        _LOPES.temperature, gt=0, le=100, description="distillation temperature tau (paper: 8)"
    )
    log_every: int = Field(
        _LOPES.log_every, ge=1, le=100_000, description="iterations between metric points"
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

    @model_validator(mode="after")
    def _evaluation_set_is_held_out(self) -> JobSpecBase:
        if self.few_shot_dataset_id and self.few_shot_dataset_id == self.evaluation_dataset_id:
            raise ValueError(
                "evaluation_dataset_id and few_shot_dataset_id name the same dataset: the report "
                "would score the student on the images it was fine-tuned on; upload a held-out "
                "evaluation set of its own"
            )
        return self


ZSKT_EXAMPLE = {
    "teacher_id": "tch_0123456789abcdef01234567",
    "method": "zskt",
    "student": {"architecture": "lenet5_half", "kwargs": {}},
    "iterations": 300,
    "batch_size": 128,
    "seed": 0,
    "hyperparameters": {"generator_width": 32},
}
DFAD_EXAMPLE = {
    "teacher_id": "tch_0123456789abcdef01234567",
    "method": "dfad",
    "student": {"architecture": "lenet5_half"},
    "iterations": 200,
    "batch_size": 128,
    "hyperparameters": {"generator_width": 0.25},
}
LOPES_EXAMPLE = {
    "teacher_id": "tch_0123456789abcdef01234567",
    "method": "lopes",
    "student": {"architecture": "hinton800"},
    "iterations": 2000,
    "hyperparameters": {"samples": 4096, "reconstruction_steps": 200},
}


class ZSKTJob(JobSpecBase):
    model_config = ConfigDict(title="ZSKT job", json_schema_extra={"examples": [ZSKT_EXAMPLE]})

    method: Literal["zskt"] = Field("zskt", description="adversarial belief matching (default)")
    iterations: int = Field(
        _ZSKT.iterations, ge=1, le=10_000_000, description="training iterations (paper: 80 000)"
    )
    batch_size: int = Field(
        _ZSKT.batch_size, ge=2, le=8192, description="pseudo inputs per iteration (paper: 128)"
    )
    hyperparameters: ZSKTHyperparameters = Field(default_factory=ZSKTHyperparameters)


class DFADJob(JobSpecBase):
    model_config = ConfigDict(title="DFAD job", json_schema_extra={"examples": [DFAD_EXAMPLE]})

    method: Literal["dfad"]
    iterations: int = Field(
        _DFAD.iterations,
        ge=1,
        le=10_000_000,
        description="iterations (paper's CIFAR script: 500 epochs x 50)",
    )
    batch_size: int = Field(
        _DFAD.batch_size,
        ge=2,
        le=8192,
        description="pseudo inputs per step (paper: 256 CIFAR, 512 MNIST)",
    )
    hyperparameters: DFADHyperparameters = Field(default_factory=DFADHyperparameters)


class LopesJob(JobSpecBase):
    model_config = ConfigDict(
        title="Lopes metadata job", json_schema_extra={"examples": [LOPES_EXAMPLE]}
    )

    method: Literal["lopes"]
    iterations: int = Field(
        _LOPES.iterations, ge=1, le=10_000_000, description="student steps on the reconstructed set"
    )
    batch_size: int = Field(_LOPES.batch_size, ge=2, le=8192, description="student batch")
    hyperparameters: LopesHyperparameters = Field(default_factory=LopesHyperparameters)


def _method_of(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("method", "zskt")
    return getattr(value, "method", "zskt")


JobCreate = Annotated[
    Annotated[ZSKTJob, Tag("zskt")]
    | Annotated[DFADJob, Tag("dfad")]
    | Annotated[LopesJob, Tag("lopes")],
    Discriminator(
        _method_of,
        custom_error_type="unknown_method",
        custom_error_message="method must be zskt, dfad or lopes",
    ),
]
JobSpec = ZSKTJob | DFADJob | LopesJob
