"""The job's side of the training loop: progress, metrics, samples and checkpoints to the outside."""

from __future__ import annotations

import io
import time
from typing import Any

import torch
from sqlalchemy.orm import Session

from core.images import sample_grid, segmentation_grid
from core.training import Progress, TrainingHooks
from core.utilisation import peak_flops
from service.blob_keys import checkpoint_key, samples_key
from service.db_retry import in_transaction
from service.job_state import add_event, cancel_requested, renew_lease
from service.models import JobArtifact, MetricPoint
from worker.context import WorkerContext
from worker.lease import LeaseKeeper, LeaseLostError


class SoftTimeLimitError(RuntimeError):
    """The job ran past its soft time limit; it stopped right after writing a checkpoint."""

    def __init__(self, step: int, limit_seconds: float) -> None:
        super().__init__(f"soft time limit of {limit_seconds:.0f}s reached; stopped at step {step}")
        self.step = step
        self.limit_seconds = limit_seconds


class JobHooks(TrainingHooks):
    """Writes progress and metrics to the database off the hot loop: buffered, flushed each second.

    Every database write survives a dropped connection (retried on a fresh one), so a metric
    series has no gaps after a PostgreSQL restart."""

    flush_interval_seconds = 1.0
    cancel_check_interval_seconds = 2.0

    def __init__(
        self,
        context: WorkerContext,
        job_id: str,
        *,
        checkpoint_every: int,
        sample_every: int,
        input_mean: list[float] | None = None,
        input_std: list[float] | None = None,
        lease: LeaseKeeper | None = None,
        soft_time_limit_seconds: float | None = None,
    ) -> None:
        self.context = context
        self.job_id = job_id
        self.checkpoint_every = checkpoint_every
        self.sample_every = sample_every
        self.input_mean, self.input_std = input_mean, input_std
        self.lease = lease
        self.soft_time_limit_seconds = soft_time_limit_seconds
        self._started = time.monotonic()
        self._points: list[tuple[str, int, float]] = []
        self._progress: dict[str, Any] = {}
        self._last_flush = 0.0
        self._last_cancel_check = time.monotonic()
        self._peak_rss_bytes = 0

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        metrics = {**metrics, **self._performance(progress)}
        self._points.extend((name, step, value) for name, value in metrics.items())
        self._progress = {
            "progress_step": step,
            "progress_total": progress.total,
            "progress_fraction": progress.fraction,
            "samples_per_second": progress.samples_per_second,
            "eta_seconds": progress.eta_seconds,
            "latest_metrics": {**metrics, "step": step},
        }
        if (
            time.monotonic() - self._last_flush >= self.flush_interval_seconds
            or step == progress.total
        ):
            self.flush()

    def _performance(self, progress: Progress) -> dict[str, float]:
        """Achieved FLOP/s against this device's measured matmul peak, and resident memory."""
        values: dict[str, float] = {}
        if progress.flops_per_second is not None:
            values["flops_per_second"] = progress.flops_per_second
            values["utilisation"] = progress.flops_per_second / peak_flops(self.context.device)
        if progress.rss_bytes is not None:
            self._peak_rss_bytes = max(self._peak_rss_bytes, progress.rss_bytes)
            values["rss_bytes"] = float(progress.rss_bytes)
            values["peak_rss_bytes"] = float(self._peak_rss_bytes)
        return values

    def flush(self) -> None:
        if not self._points and not self._progress:
            return
        points, progress = self._points, self._progress
        attempt = self.lease.attempt if self.lease else None

        def write(session: Session) -> None:
            session.add_all(
                MetricPoint(job_id=self.job_id, name=name, step=step, value=value)
                for name, step, value in points
            )
            renew_lease(
                session,
                self.job_id,
                self.context.settings.job_lease_seconds,
                attempt=attempt,
                **progress,
            )

        in_transaction(self.context.sessions, write)
        self._points, self._progress = [], {}
        self._last_flush = time.monotonic()

    def on_warning(self, message: str) -> None:
        in_transaction(
            self.context.sessions,
            lambda session: add_event(session, self.job_id, "warning", message),
        )

    def should_stop(self, step: int) -> bool:
        if self.lease is not None and self.lease.lost.is_set():
            raise LeaseLostError(f"job {self.job_id} went to another attempt at step {step}")
        if time.monotonic() - self._last_cancel_check < self.cancel_check_interval_seconds:
            return False
        self._last_cancel_check = time.monotonic()
        return in_transaction(
            self.context.sessions, lambda session: cancel_requested(session, self.job_id)
        )

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.flush()  # metrics up to the checkpoint are durable before it is
        self.context.blobs.put_bytes(checkpoint_key(self.job_id), buffer.getvalue())
        limit = self.soft_time_limit_seconds
        if limit is not None and time.monotonic() - self._started >= limit:
            raise SoftTimeLimitError(step, limit)

    def on_samples(
        self, step: int, images: torch.Tensor, masks: torch.Tensor | None = None
    ) -> None:
        key = samples_key(self.job_id, step)
        if masks is None:
            grid = sample_grid(images, self.input_mean, self.input_std)
        else:  # each input beside the teacher's and the student's masks
            grid = segmentation_grid(images, masks[0], masks[1], self.input_mean, self.input_std)
        self.context.blobs.put_bytes(key, grid)
        in_transaction(
            self.context.sessions,
            lambda session: session.add(
                JobArtifact(
                    job_id=self.job_id,
                    kind="samples",
                    step=step,
                    blob_key=key,
                    content_type="image/png",
                )
            ),
        )
