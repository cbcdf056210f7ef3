"""All configuration, read once from DFKD_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DFKD_", extra="ignore")

    data_dir: Path = Field(Path("dfkd-data"), description="SQLite file and local blobs live here")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means SQLite in data_dir"
    )
    broker_url: str | None = Field(
        None, description="Celery broker (Redis); unset means the embedded runner"
    )
    celery_queue: str = Field(
        "dfkd", description="Celery queue the API sends jobs to and workers consume"
    )
    s3_endpoint: str | None = Field(
        None, description="host:port of MinIO/S3; unset means the local folder"
    )
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "dfkd"
    s3_secure: bool = Field(False, description="HTTPS to the S3 endpoint")
    s3_region: str | None = None
    require_api_keys: bool = Field(
        False,
        description="every request needs `Authorization: Bearer <key>`; off, requests without a key "
        "act as the default tenant (fine on localhost, never on a network)",
    )
    log_format: str = Field(
        "json", description="json (one object a line, with request and job ids) or text"
    )
    allow_program_teachers: bool = Field(
        False,
        description="accept TorchScript and torch.export (.pt2) teachers; loading one runs the uploader's "
        "code (in workers only), so enable it only for uploaders you trust",
    )
    device: str = Field("auto", description="torch device for jobs: auto, cpu, cuda, cuda:1, ...")
    worker_memory_bytes: int | None = Field(
        None,
        gt=0,
        description="memory a job may use on this worker; a job whose estimated peak at its batch "
        "size is larger fails at once with out_of_memory, naming the largest batch that fits. "
        "Unset: the GPU's memory, or the machine's (its cgroup limit where lower)",
    )
    torch_threads: int | None = Field(
        None, description="intra-op threads per job; unset means torch's default"
    )
    compile_models: bool = Field(
        False,
        description="torch.compile the training passes of the generator-based methods: a compile of a "
        "minute or so at the start of each job, for faster iterations (measure with bench/speed.py)",
    )
    runner_processes: int = Field(
        1,
        ge=1,
        validation_alias=AliasChoices(
            "runner_processes", "DFKD_RUNNER_PROCESSES", "DFKD_RUNNER_THREADS"
        ),
        description="concurrent jobs in the embedded runner, one child process each "
        "(DFKD_RUNNER_THREADS, its old name, is still read)",
    )
    runner_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="added to the embedded runner processes' nice value, so the API's requests "
        "come before the job on a busy machine (0: the job and the API share the cores evenly)",
    )
    max_upload_bytes: int = Field(2 * 1024**3, description="largest accepted upload")
    max_body_bytes: int = Field(
        1024**2,
        gt=0,
        description="largest request body outside the upload routes (JSON job specs): larger "
        "ones get 413 body_too_large before a byte of them is parsed",
    )
    max_event_streams: int = Field(
        256,
        ge=1,
        description="open Server-Sent Event streams per API process, all tenants together; "
        "one more gets 429 too_many_streams",
    )
    max_event_streams_per_tenant: int = Field(
        16, ge=1, description="open Server-Sent Event streams per tenant and API process"
    )
    event_stream_max_seconds: float = Field(
        900,
        gt=0,
        description="an event stream ends after this long with a `reconnect` event; the client "
        "resumes where it was with Last-Event-ID (EventSource does so by itself)",
    )
    metrics_access: Literal["open", "api_key", "internal"] = Field(
        "open",
        description="GET /metrics: open (aggregates only, no tenant data), api_key (any valid "
        "key), or internal (not on the API's port: on metrics_host:metrics_port)",
    )
    metrics_host: str = Field("127.0.0.1", description="address of the internal metrics port")
    metrics_port: int = Field(
        9464, ge=1, le=65535, description="the internal metrics port (metrics_access=internal)"
    )
    forward_check_max_bytes: int = Field(
        64 * 1024**2,
        description="weights up to this size are also loaded and run on a dummy batch at upload; "
        "larger ones are checked in flat memory (header against the architecture, every float "
        "finite, read in chunks) and first run in the worker",
    )
    forward_check_max_activation_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="the upload's forward check runs only when its activations (estimated on the "
        "meta device at the check's batch of 2) fit in this many bytes; larger ones are checked in "
        "flat memory and first run in the worker",
    )
    max_teacher_parameters: int = Field(
        500_000_000,
        ge=1,
        description="teachers of more parameters (counted on the meta device) are refused with 422",
    )
    max_student_parameters: int = Field(
        100_000_000,
        ge=1,
        description="students of more parameters (counted on the meta device) are refused with 422: "
        "a worker holds a student several times over (weights, gradients, optimiser state)",
    )
    max_dataset_array_bytes: int = Field(
        1024**3,
        ge=1,
        description="datasets whose arrays unpack to more bytes are refused with 422 before "
        "anything is decompressed (jobs hold the images as float32: up to 4x this for uint8 pixels)",
    )
    max_lopes_sample_bytes: int = Field(
        1024**3,
        ge=1,
        description="jobs whose method would hold more bytes of synthesised inputs (a metadata "
        "method's reconstructed set: samples x C x H x W float32) are refused with 422",
    )
    max_synthetic_artifact_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="a pool method's synthesised inputs are published (GET /v1/jobs/{id}/synthetic) "
        "up to this many bytes of float32 images and logits: the newest inputs that fit; 0 "
        "publishes none",
    )
    job_lease_seconds: float = Field(
        30,
        gt=0,
        description="a running job whose lease lapses is presumed dead: put back in the queue and "
        "re-enqueued by the lease reaper (30 s: a killed worker's job runs again within a minute)",
    )
    lease_renew_seconds: float | None = Field(
        None,
        gt=0,
        description="how often a running job renews its lease, from a thread of its own (and the "
        "reaper looks for lapsed ones); unset means a sixth of the lease, so five beats in a row "
        "can be missed before a live job looks dead",
    )
    tenant_max_active_jobs: int | None = Field(
        None,
        ge=0,
        description="jobs a tenant may have queued or running at once; one more POST /v1/jobs gets "
        "429 quota_active_jobs. Unset or 0: unlimited. `dfkd tenants set-quota` overrides it per tenant",
    )
    tenant_max_storage_bytes: int | None = Field(
        None,
        ge=0,
        description="bytes a tenant may store: its teachers' weights and activation records plus its "
        "datasets (job outputs are not counted); an upload past it gets 429 quota_storage. Unset or "
        "0: unlimited. `dfkd tenants set-quota` overrides it per tenant",
    )
    max_attempts: int = Field(3, description="deliveries of one job before it fails for good")
    checkpoint_every: int = Field(200, description="iterations between job checkpoints")
    keep_checkpoints: bool = Field(
        False,
        description="keep a job's checkpoint after it ends; off, it is deleted when the job "
        "succeeds, fails or is cancelled (nothing resumes a finished job)",
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description="finished jobs (their rows and every blob they made) are deleted this many "
        "days after they ended, by the reaper of every worker and of the embedded runner; unset "
        "keeps them",
    )
    job_soft_time_limit_seconds: float = Field(
        7 * 24 * 3600,
        gt=0,
        description="per attempt: past it a job stops at its next checkpoint and fails with "
        "error.code time_limit (the checkpoint is kept)",
    )
    job_hard_time_limit_seconds: float | None = Field(
        None,
        gt=0,
        description="per attempt: past it Celery (or the embedded runner's monitor) kills the "
        "job's process and the job fails with time_limit; unset means the soft limit plus an hour",
    )
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description="comma-separated CIDRs (e.g. `10.20.0.0/16,fd12::/64`) webhooks may be sent "
        "to although they are private, loopback or otherwise internal: an operator's own "
        "receivers. Unset: public addresses only",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key (32 url-safe base64 bytes; `dfkd secrets generate-key` makes one) "
        "that encrypts webhook secrets in the database; API and workers need the same one. "
        "Unset: one is made and kept in data_dir/secret.key (mode 0600)",
    )
    secret_keys_old: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="comma-separated earlier Fernet keys, still read after a rotation until "
        "`dfkd secrets rotate` has re-encrypted every secret with secret_key",
    )

    @field_validator("webhook_allowed_networks", "secret_keys_old", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("secret_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("secret_key", "secret_keys_old")
    @classmethod
    def _fernet_keys(cls, value: Any) -> Any:
        for key in value if isinstance(value, list) else [value]:
            if key is not None:
                try:
                    Fernet(key.get_secret_value())
                except ValueError:
                    raise ValueError(
                        "not a Fernet key (32 url-safe base64-encoded bytes); make one with "
                        "`dfkd secrets generate-key`"
                    ) from None
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dfkd.sqlite3').resolve()}"

    @property
    def hard_time_limit(self) -> float:
        return self.job_hard_time_limit_seconds or self.job_soft_time_limit_seconds + 3600

    @property
    def lease_renew_interval(self) -> float:
        return self.lease_renew_seconds or self.job_lease_seconds / 6

    @property
    def uses_embedded_runner(self) -> bool:
        return not self.broker_url

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


@lru_cache
def get_settings() -> Settings:
    return Settings()
