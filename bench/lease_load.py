"""The write load of job leases on PostgreSQL under the default settings: what one running job's
heartbeat costs, and what one reaper pass costs, measured through the code the workers run.

    .venv/bin/python bench/lease_load.py                 # 600 renewals, 200 running jobs, ~1 min
    .venv/bin/python bench/lease_load.py --renewals 100 --jobs 20

A throwaway database on 127.0.0.1:5432 (user postgres), migrated to head. `--jobs` jobs are
claimed (running, each with a lease); one of them renews its lease `--renewals` times in a row
through `LeaseKeeper.renew` (one transaction, one conditional UPDATE, as the heartbeat thread
does), each timed; the WAL written is read from `pg_current_wal_lsn()` before and after. Then
`reap_once` (the reaper's pass: one SELECT of lapsed leases, none lapsed) is timed as often.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from service_harness import (
    command_line,
    machine,
    machine_line,
    postgres_database,
    save_results,
)
from sqlalchemy import text

from service.db import session_scope
from service.job_state import claim_job
from service.migrate import upgrade_to_head
from service.models import Job, Teacher
from service.settings import Settings
from worker.context import make_context
from worker.lease import LeaseKeeper
from worker.reaper import reap_once


def running_jobs(settings: Settings, count: int) -> list[str]:
    """`count` claimed jobs of one teacher, as workers would hold them."""
    context = make_context(settings)
    with session_scope(context.sessions) as session:
        teacher = Teacher(
            name="bench", format="safetensors", architecture="lenet5", architecture_kwargs={},
            input_shape=[1, 32, 32], num_classes=10, input_mean=None, input_std=None,
            blob_key="bench", sha256="0" * 64, size_bytes=1, parameter_count=1,
        )  # fmt: skip
        session.add(teacher)
        session.flush()
        jobs = [
            Job(
                teacher_id=teacher.id,
                method="zskt",
                student_architecture="lenet5_half",
                student_kwargs={},
                iterations=1,
                batch_size=2,
                seed=0,
                hyperparameters={},
                job_metadata={},
                latest_metrics={},
            )
            for _ in range(count)
        ]
        session.add_all(jobs)
        session.flush()
        ids = [job.id for job in jobs]
    for job_id in ids:
        with session_scope(context.sessions) as session:
            assert claim_job(session, job_id, settings.job_lease_seconds, settings.max_attempts)
    return ids


def timed(action: Callable[[], object], times: int) -> list[float]:
    """Milliseconds of each call."""
    spans = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        spans.append((time.perf_counter() - started) * 1000)
    return spans


def wal_lsn(settings: Settings) -> int:
    with session_scope(make_context(settings).sessions) as session:
        return int(session.execute(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar())


def summary(spans: list[float]) -> dict[str, float]:
    ordered = sorted(spans)
    return {
        "mean_ms": statistics.fmean(spans),
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, round(len(ordered) * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--renewals", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    info = machine()
    with postgres_database() as url, tempfile.TemporaryDirectory() as tmp:
        upgrade_to_head(url)
        settings = Settings(database_url=url, data_dir=Path(tmp))
        job_ids = running_jobs(settings, args.jobs)
        context = make_context(settings)
        keeper = LeaseKeeper(context, job_ids[0], attempt=1)
        timed(keeper.renew, 20)  # connections opened, statements prepared
        wal_before = wal_lsn(settings)
        renewals = timed(keeper.renew, args.renewals)
        wal_bytes = (wal_lsn(settings) - wal_before) / args.renewals
        assert not keeper.lost.is_set(), "a renewal found the job gone: the figures mean nothing"
        passes = timed(lambda: reap_once(context, lambda _: None), args.renewals)
    per_minute = 60 / settings.lease_renew_interval
    results = {
        "lease_seconds": settings.job_lease_seconds,
        "renew_every_seconds": settings.lease_renew_interval,
        "renewals_per_minute_per_job": per_minute,
        "renewal": summary(renewals),
        "wal_bytes_per_renewal": wal_bytes,
        "reaper_passes_per_minute_per_worker": per_minute,
        "reaper_pass": summary(passes),
        "running_jobs": args.jobs,
    }
    print(json.dumps(results, indent=2))
    renewal = results["renewal"]
    print(
        f"`{command_line()}`\n\n{machine_line(info)}\n\n"
        f"lease {settings.job_lease_seconds:.0f} s renewed every "
        f"{settings.lease_renew_interval:.0f} s: {per_minute:.0f} renewals a minute per running "
        f"job, each {renewal['mean_ms']:.2f} ms mean (p50 {renewal['p50_ms']:.2f}, p99 "
        f"{renewal['p99_ms']:.2f}) and {wal_bytes:.0f} WAL bytes; a reaper pass with "
        f"{args.jobs} running jobs {results['reaper_pass']['mean_ms']:.2f} ms mean "
        f"(p99 {results['reaper_pass']['p99_ms']:.2f}), {per_minute:.0f} a minute per worker"
    )
    save_results("lease_load", {"machine": info, "command": command_line(), **results})


if __name__ == "__main__":
    main()
