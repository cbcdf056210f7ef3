"""Quota arithmetic and its race: limits from settings or a tenant's override, and two requests
for the last slot, one of which must wait for the other's commit and then be refused. On the
embedded default's SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine, make_session_factory, session_scope
from service.migrate import upgrade_to_head
from service.models import DEFAULT_TENANT, Dataset, Job, JobStatus, Teacher, Tenant, new_id
from service.quotas import (
    QuotaExceededError,
    check_storage,
    clear_overrides,
    reserve_job_slot,
    set_overrides,
    stored_bytes,
    tenant_limits,
)
from service.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> sessionmaker[Session]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'dfkd.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade_to_head(url)
    engine = make_engine(url)
    request.addfinalizer(engine.dispose)
    return make_session_factory(engine)


def add_teacher(session: Session, size: int, record_size: int | None = None) -> Teacher:
    teacher = Teacher(
        id=new_id("tch"),
        tenant_id=DEFAULT_TENANT,
        name="t",
        format="safetensors",
        architecture="lenet5",
        architecture_kwargs={},
        input_shape=[1, 32, 32],
        num_classes=10,
        blob_key="k",
        sha256="0" * 64,
        size_bytes=size,
        parameter_count=1,
    )
    if record_size is not None:
        teacher.metadata_key = "m"
        teacher.metadata_info = {"size_bytes": record_size}
    session.add(teacher)
    session.flush()
    return teacher


def add_job(session: Session, teacher_id: str, status: str = JobStatus.queued) -> None:
    session.add(
        Job(
            id=new_id("job"),
            tenant_id=DEFAULT_TENANT,
            teacher_id=teacher_id,
            method="x",
            student_architecture="lenet5_half",
            student_kwargs={},
            iterations=10,
            batch_size=8,
            seed=0,
            hyperparameters={},
            status=status,
            latest_metrics={},
        )
    )


def test_limits_come_from_settings_unless_the_tenant_overrides_them(
    sessions: sessionmaker[Session],
) -> None:
    settings = Settings(tenant_max_active_jobs=3, tenant_max_storage_bytes=1000)
    with session_scope(sessions) as session:
        limits = tenant_limits(session, DEFAULT_TENANT, settings)
        assert (limits.max_active_jobs, limits.max_storage_bytes) == (3, 1000)
        tenant = session.get(Tenant, DEFAULT_TENANT)
        set_overrides(tenant, max_active_jobs=0, max_storage_bytes=5)  # 0 lifts the limit
        session.flush()
        limits = tenant_limits(session, DEFAULT_TENANT, settings)
        assert (limits.max_active_jobs, limits.max_storage_bytes) == (None, 5)
        clear_overrides(tenant, active_jobs=False, storage=True)
        session.flush()
        assert tenant_limits(session, DEFAULT_TENANT, settings).max_storage_bytes == 1000
        unset = tenant_limits(session, DEFAULT_TENANT, Settings(tenant_max_storage_bytes=0))
        assert unset.max_storage_bytes is None  # 0 in the setting: unlimited too


def test_stored_bytes_count_weights_records_and_datasets(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        add_teacher(session, 100)
        add_teacher(session, 200, record_size=3_000_000_000)  # records may pass 2^31 bytes
        session.add(
            Dataset(
                id=new_id("dst"),
                tenant_id=DEFAULT_TENANT,
                name="d",
                format="npz",
                blob_key="d",
                sha256="0" * 64,
                size_bytes=40,
                num_examples=1,
                image_shape=[1, 32, 32],
                pixel_dtype="uint8",
                class_counts={"0": 1},
            )
        )
        session.flush()
        assert stored_bytes(session, DEFAULT_TENANT) == 100 + 200 + 3_000_000_000 + 40
        assert stored_bytes(session, "tnt_other") == 0
        limited = Settings(tenant_max_storage_bytes=3_000_000_400)
        check_storage(session, DEFAULT_TENANT, limited, adding=60)  # exactly at the limit
        with pytest.raises(QuotaExceededError) as refused:
            check_storage(session, DEFAULT_TENANT, limited, adding=61)
        assert (refused.value.quota, refused.value.use) == ("storage", 3_000_000_340)
        check_storage(session, DEFAULT_TENANT, limited, adding=61, freeing=1)  # a replaced record


def test_finished_jobs_free_their_slot(sessions: sessionmaker[Session]) -> None:
    settings = Settings(tenant_max_active_jobs=2)
    with session_scope(sessions) as session:
        teacher = add_teacher(session, 1)
        for status in (JobStatus.running, JobStatus.succeeded, JobStatus.failed):
            add_job(session, teacher.id, status)
        session.flush()
        reserve_job_slot(session, DEFAULT_TENANT, settings)  # 1 active of 2
        add_job(session, teacher.id, JobStatus.queued)
        session.flush()
        with pytest.raises(QuotaExceededError) as refused:
            reserve_job_slot(session, DEFAULT_TENANT, settings)
        assert (refused.value.quota, refused.value.limit, refused.value.use) == (
            "active_jobs",
            2,
            2,
        )


def race(
    sessions: sessionmaker[Session],
    take: Callable[[Session], None],
    add: Callable[[Session], None],
) -> None:
    """The first request takes the last slot and holds its transaction open; the second must
    wait for its commit and then be refused (without the lock it would count before the first
    commits and pass too)."""
    first = sessions()
    take(first)
    add(first)
    first.flush()
    outcome: list[BaseException | None] = []

    def second() -> None:
        with sessions() as session:
            try:
                take(session)
                outcome.append(None)
            except QuotaExceededError as error:
                outcome.append(error)

    thread = threading.Thread(target=second)
    try:
        thread.start()
        thread.join(1.5)
        assert thread.is_alive() and outcome == [], "the second request did not wait for the first"
        first.commit()
    finally:
        first.close()  # on failure: rolls back, so the second request is not left waiting
        thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome[0], QuotaExceededError), outcome


def test_two_jobs_racing_for_the_last_slot_do_not_both_pass(
    sessions: sessionmaker[Session],
) -> None:
    settings = Settings(tenant_max_active_jobs=1)
    with session_scope(sessions) as session:
        teacher_id = add_teacher(session, 1).id
    race(
        sessions,
        lambda session: reserve_job_slot(session, DEFAULT_TENANT, settings),
        lambda session: add_job(session, teacher_id),
    )


def test_two_uploads_racing_for_the_last_bytes_do_not_both_pass(
    sessions: sessionmaker[Session],
) -> None:
    settings = Settings(tenant_max_storage_bytes=150)
    race(
        sessions,
        lambda session: check_storage(session, DEFAULT_TENANT, settings, 100, lock=True),
        lambda session: add_teacher(session, 100),
    )
