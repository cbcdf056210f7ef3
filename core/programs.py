"""Teachers shipped as programs (TorchScript archives, torch.export .pt2 files).

Loading one runs the uploader's code, so the service accepts them only where the operator allows
it, checks the archive's structure without loading it in the API, and loads it only in workers.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import nn

PROGRAM_FORMATS = ("torchscript", "torch_export")
MAX_ENTRIES = 10_000
MAX_COMPRESSION_RATIO = 200


class ProgramArchiveError(ValueError):
    pass


def check_program_archive(path: Path, max_uncompressed_bytes: int) -> None:
    """Both formats are zip archives: refuse anything else, and zip bombs, before any load."""
    if not zipfile.is_zipfile(path):
        raise ProgramArchiveError("not a zip archive; TorchScript and .pt2 files are zip archives")
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise ProgramArchiveError(
                f"the archive holds {len(entries)} entries (limit {MAX_ENTRIES})"
            )
        total = sum(entry.file_size for entry in entries)
        if total > max_uncompressed_bytes:
            raise ProgramArchiveError(
                f"the archive unpacks to {total} bytes (limit {max_uncompressed_bytes})"
            )
        for entry in entries:
            if (
                entry.compress_size
                and entry.file_size / entry.compress_size > MAX_COMPRESSION_RATIO
            ):
                raise ProgramArchiveError(
                    f"entry {entry.filename!r} is compressed {entry.file_size // entry.compress_size}x: refused as a zip bomb"
                )


class ExportedProgram(nn.Module):
    """An exported program as a module. Its graph fixed eval-mode behaviour at export time and it
    refuses train()/eval(), so switching modes here changes only this wrapper's flag."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def train(self, mode: bool = True) -> ExportedProgram:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def load_program(data: bytes, program_format: str, device: str = "cpu") -> nn.Module:
    """Runs the uploader's program: call only where the operator allowed program teachers."""
    if program_format == "torchscript":
        return torch.jit.load(io.BytesIO(data), map_location=device)
    if program_format == "torch_export":
        return ExportedProgram(torch.export.load(io.BytesIO(data)).module().to(device))
    raise ValueError(f"unknown program format {program_format!r}")
