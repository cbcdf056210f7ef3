"""`dfkd record-metadata`: the owner records on their data, sees the size first, gets a loadable file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli import record_metadata as command
from core import metadata
from core.metadata import load_metadata
from tests.processes import DFKD


def test_parser_constants_mirror_the_core() -> None:
    assert command.RECORD_TYPES == metadata.RECORD_TYPES
    assert command.STATS_KINDS == metadata.STATS_KINDS
    assert command.DEFAULT_RANK == metadata.DEFAULT_RANK
    assert command.DEFAULT_TEMPERATURE == metadata.DEFAULT_TEMPERATURE


def test_records_prints_the_size_first_and_writes_a_loadable_file(
    tmp_path: Path, teacher_file: Path, heldout_file: Path
) -> None:
    out = tmp_path / "meta.safetensors"
    base = [DFKD, "record-metadata", "--teacher", str(teacher_file), "--teacher-arch", "lenet5"]
    result = subprocess.run(
        [*base, "--data", str(heldout_file), "--record", "all_layers", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["layers"]["block1.0"] == 4704
    estimate, written = lines[1], lines[2]
    assert estimate["record"] == "all_layers" and estimate["stats"] == "diagonal"
    assert 0 < written["bytes"] - estimate["estimated_bytes"] < 4096
    assert written["bytes"] == out.stat().st_size and written["examples"] == 1000
    loaded = load_metadata(out)
    assert loaded.record == "all_layers" and loaded.temperature == 8.0
    assert [layer.units for layer in loaded.layers] == [4704, 1600, 120, 84, 10]


def test_dry_run_prints_every_option_and_writes_nothing(
    tmp_path: Path, teacher_file: Path, heldout_file: Path
) -> None:
    out = tmp_path / "meta.safetensors"
    result = subprocess.run(
        [
            DFKD,
            "record-metadata",
            "--teacher",
            str(teacher_file),
            "--teacher-arch",
            "lenet5",
            "--data",
            str(heldout_file),
            "--dry-run",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()[1:]]
    assert [row["record"] for row in rows] == list(metadata.RECORD_TYPES)
    all_layers = next(row for row in rows if row["record"] == "all_layers")
    assert all_layers["full"].endswith("MB") and float(all_layers["full"].split()[0]) > 450
    assert not out.exists()
