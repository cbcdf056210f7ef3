"""`dfkd serve` on the embedded default (SQLite, local folder, in-process runner), over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from core.datasets import LabelledImages
from tests.flow import distil_over_http
from tests.processes import embedded_env, start_api, stop


def test_teacher_in_student_out_on_the_embedded_default(
    tmp_path: Path, teacher_file: Path, digits: tuple[LabelledImages, LabelledImages]
) -> None:
    env = embedded_env(tmp_path / "data")
    process, base_url = start_api(env, tmp_path / "serve.log")
    try:
        final = distil_over_http(base_url, teacher_file, digits[1])
    finally:
        stop(process)
    # chance is 10%; 150 iterations reach ~92% here (teacher ~97%), see tests/flow.py
    assert final["student_accuracy"] >= 0.85, final
    assert not final["download_redirected"]  # the local folder is streamed by the API
    # structured logs: one JSON object a line, the job's lines carry its id
    lines = [
        json.loads(line)
        for line in (tmp_path / "serve.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(
        entry.get("job_id") == final["id"] and "succeeded" in entry["message"] for entry in lines
    )
    assert (tmp_path / "data" / "dfkd.sqlite3").is_file()
    assert (tmp_path / "data" / "blobs" / "jobs" / final["id"] / "student.safetensors").is_file()
