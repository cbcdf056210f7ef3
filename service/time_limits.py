"""The soft time limit a job runs under: its own, capped by the deployment's."""

from __future__ import annotations

from service.settings import Settings


def effective_time_limit(requested: float | None, settings: Settings) -> float:
    """Seconds an attempt may run before it stops at its next checkpoint."""
    ceiling = float(settings.job_soft_time_limit_seconds)
    return ceiling if requested is None else min(float(requested), ceiling)
