"""What an integrating platform does: generate a Python client from /openapi.json as served, with
no patch, then use only it.

The generator is openapi-python-client (pinned in the dev extra). It reads multipart file fields
only in OpenAPI 3.0's spelling `format: binary` (its issue #1417): the served document carries it
beside 3.1's `contentMediaType` (api/openapi.py), and this test checks that the generated upload
model takes a file. The one setting given to the generator: it has no parser for `image/png`
responses (sample grids, transition curves) and warns; `content_type_overrides` maps them to
`application/octet-stream`, so it runs with `--fail-on-warning` and any new thing it cannot read
in our schema fails this test.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from PIL import Image

from core.models import build
from core.weights import load_weights, read_state_dict
from tests.processes import create_api_key, embedded_env, start_api, stop

GENERATOR = str(Path(sys.executable).with_name("openapi-python-client"))
PACKAGE = "dfkd_client"  # not `client`: a generic top-level name could shadow another module
ENDED = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`dfkd serve` on the embedded default, API keys required as on a shared deployment."""
    env = embedded_env(tmp_path / "data", DFKD_REQUIRE_API_KEYS="true")
    process, base_url = start_api(env, tmp_path / "serve.log")
    try:
        yield base_url, env
    finally:
        stop(process)


@pytest.fixture
def generated(tmp_path: Path, server: tuple[str, dict[str, str]]) -> Iterator[Path]:
    """The client package generated from the live schema; its modules are unloaded afterwards."""
    base_url, _ = server
    schema = httpx.get(f"{base_url}/openapi.json", timeout=10)
    assert schema.status_code == 200, schema.text
    (tmp_path / "openapi.json").write_bytes(schema.content)  # exactly as served
    (tmp_path / "generator.json").write_text(
        json.dumps({"content_type_overrides": {"image/png": "application/octet-stream"}})
    )
    # the generator formats its output with ruff (post-hooks), which lives next to it in the venv
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    result = subprocess.run(
        [
            GENERATOR,
            "generate",
            "--path",
            "openapi.json",
            "--output-path",
            PACKAGE,
            "--meta",
            "none",
            "--config",
            "generator.json",
            "--fail-on-warning",
        ],
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / PACKAGE / "__init__.py").is_file(), result.stdout
    # the upload models take files, not strings (what an unmarked 3.1 schema gave: issue #1417)
    for model in ("body_teachers_upload_teacher", "body_datasets_upload_dataset"):
        source = (tmp_path / PACKAGE / "models" / f"{model}.py").read_text()
        assert "file: File\n" in source, source
    metadata = (tmp_path / PACKAGE / "models" / "body_teachers_upload_teacher.py").read_text()
    assert "metadata: File | Unset" in metadata, metadata
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path / PACKAGE
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def api(name: str) -> ModuleType:
    """`api("jobs.jobs_create_job")`: one generated endpoint module (tag, then operation id)."""
    return import_module(f"{PACKAGE}.api.{name}")


def test_a_generated_client_drives_the_whole_flow(
    server: tuple[str, dict[str, str]], generated: Path, teacher_file: Path
) -> None:
    base_url, env = server
    client_module = import_module(PACKAGE)
    models = import_module(f"{PACKAGE}.models")
    types = import_module(f"{PACKAGE}.types")
    client = client_module.AuthenticatedClient(
        base_url=base_url,
        token=create_api_key(env, "platform"),
        timeout=httpx.Timeout(30),
        raise_on_unexpected_status=True,
    )
    Status = models.JobPublicStatus

    # the generated functions are typed to AuthenticatedClient; a keyless one is turned away
    anonymous = client_module.Client(base_url=base_url, raise_on_unexpected_status=True)
    # 401 is a documented answer of every tenant operation, so the client parses it
    refused = api("jobs.jobs_list_jobs").sync_detailed(client=anonymous)
    assert refused.status_code == 401
    assert refused.parsed is not None and refused.parsed.error.code == "missing_api_key"

    with client as client, teacher_file.open("rb") as handle:
        # 1. the teacher, as the multipart body model with a real file part
        teacher = api("teachers.teachers_upload_teacher").sync(
            client=client,
            body=models.BodyTeachersUploadTeacher(
                file=types.File(
                    payload=handle,
                    file_name="lenet5.safetensors",
                    mime_type="application/octet-stream",
                ),
                architecture="lenet5",
                input_mean="[0.1307]",
                input_std="[0.3081]",
            ),
        )
        assert isinstance(teacher, models.TeacherPublic), teacher
        assert teacher.id.startswith("tch_")
        assert (teacher.architecture, teacher.name) == ("lenet5", "lenet5.safetensors")
        assert teacher.input_shape == [1, 32, 32] and teacher.num_classes == 10
        assert teacher.input_mean == [0.1307] and teacher.input_std == [0.3081]
        assert teacher.size_bytes == teacher_file.stat().st_size and teacher.parameter_count > 0

        # 2. a small ZSKT job: the body is the `zskt` member of the union on `method`
        create_job = api("jobs.jobs_create_job")
        job = create_job.sync(
            client=client,
            body=models.ZSKTJob(
                teacher_id=teacher.id,
                student=models.StudentSpec(architecture="lenet5_half"),
                iterations=30,
                batch_size=32,
                seed=3,
                sample_every=10,
                hyperparameters=models.ZSKTHyperparameters(generator_width=8),
                metadata=models.ZSKTJobMetadata.from_dict({"pipeline": "nightly"}),
            ),
        )
        assert isinstance(job, models.JobPublic), job
        assert job.id.startswith("job_") and job.teacher_id == teacher.id
        assert job.status in {Status.QUEUED, Status.RUNNING}
        assert (job.method, job.iterations, job.batch_size, job.seed) == ("zskt", 30, 32, 3)
        assert job.student.architecture == "lenet5_half"
        assert job.hyperparameters["generator_width"] == 8  # effective values, defaults filled in
        assert job.hyperparameters["log_every"] == 10
        assert job.metadata.to_dict() == {"pipeline": "nightly"}
        assert job.progress.total == 30 and job.links.student is None

        # 3. a second job, cancelled (queued behind the first on the one runner thread, or
        #    running: then it stops at its next check)
        doomed = create_job.sync(
            client=client,
            body=models.ZSKTJob(
                teacher_id=teacher.id,
                student=models.StudentSpec(architecture="lenet5_half"),
                iterations=100_000,
                batch_size=32,
                hyperparameters=models.ZSKTHyperparameters(generator_width=8),
            ),
        )
        assert isinstance(doomed, models.JobPublic), doomed
        cancelled = api("jobs.jobs_cancel_job").sync(doomed.id, client=client)
        assert isinstance(cancelled, models.JobPublic), cancelled
        assert cancelled.id == doomed.id
        assert cancelled.status == Status.CANCELLED or cancelled.cancel_requested

        # 4. poll both until they end
        get_job = api("jobs.jobs_get_job")
        deadline = time.monotonic() + 300
        while True:
            final = get_job.sync(job.id, client=client)
            stopped = get_job.sync(doomed.id, client=client)
            if final.status in ENDED and stopped.status in ENDED:
                break
            assert time.monotonic() < deadline, (final.status, stopped.status)
            time.sleep(0.5)
        assert final.status == Status.SUCCEEDED, final.error
        assert final.error is None and final.attempts == 1
        assert (final.progress.iteration, final.progress.fraction) == (30, 1.0)
        assert final.started_at is not None and final.finished_at >= final.started_at
        assert {"kl", "loss_student"} <= set(final.metrics.additional_properties)
        assert final.links.student == f"{base_url}/v1/jobs/{job.id}/student"
        assert stopped.status == Status.CANCELLED and stopped.links.student is None

        # 5. its events, a typed page
        events = api("events.events_get_events").sync(job.id, client=client)
        assert isinstance(events, models.EventsPublic), events
        states = [event.message for event in events.items if event.kind == "state"]
        assert states[0] == "queued" and states[-1] == "succeeded", states
        assert any(state.startswith("running") for state in states), states
        assert [event.id for event in events.items] == sorted(event.id for event in events.items)
        assert events.next_after is None
        later = api("events.events_get_events").sync(
            job.id, client=client, after=events.items[-1].id
        )
        assert later.items == []
        doomed_events = api("events.events_get_events").sync(doomed.id, client=client)
        assert doomed_events.items[-1].kind == "state"
        assert doomed_events.items[-1].message.startswith("cancelled"), doomed_events.items

        # 6. the generator's sample grids, and one of them as PNG
        samples = api("jobs.jobs_list_samples").sync(job.id, client=client)
        assert isinstance(samples, models.SamplesPublic), samples
        assert [sample.step for sample in samples.items] == [10, 20, 30]
        assert samples.items[-1].url == f"{base_url}/v1/jobs/{job.id}/samples/30"
        grid = api("jobs.jobs_get_sample").sync_detailed(job.id, 30, client=client)
        assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(grid.content)).format == "PNG"

        # 7. the student (the 200 has no schema, so the bytes are on the detailed response)
        download = api("jobs.jobs_download_student").sync_detailed(
            job.id, client=client, format_=models.JobsDownloadStudentFormat.SAFETENSORS
        )
        assert download.status_code == 200, download.content[:500]
        student = load_weights(build("lenet5_half"), read_state_dict(download.content))
        assert sum(parameter.numel() for parameter in student.parameters()) > 0

        # errors come back as the typed error body
        missing = api("jobs.jobs_download_student").sync(doomed.id, client=client)
        assert isinstance(missing, models.ErrorResponse), missing
        assert missing.error.code and missing.error.message
