"""Hostile safetensors files are refused from their header, before any tensor is allocated."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save

from core.weights import WeightsError, read_state_dict


def forge(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


GOOD = save({"a": torch.ones(2, 3), "b": torch.zeros(4, dtype=torch.int64)})


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (GOOD[:-5], "do not fit"),
        (GOOD[:20], "header length"),
        (b"\xff" * 16, "header length"),
        (struct.pack("<Q", 4) + b"nope", "not JSON"),
        (
            forge(
                {"x": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 16]}},
                b"\0" * 16,
            ),
            "needs",
        ),
        (
            forge({"x": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
            "unknown dtype",
        ),
        (
            forge({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
            "not a list of sizes",
        ),
        (
            forge(
                {
                    "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "overlaps",
        ),
        (
            forge({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 40),
            "belong to no tensor",
        ),
    ],
)
def test_hostile_headers_are_refused_with_the_reason(content: bytes, fragment: str) -> None:
    with pytest.raises(WeightsError, match=fragment):
        read_state_dict(content)


def test_a_good_file_reads_back() -> None:
    weights = read_state_dict(GOOD)
    assert weights["a"].shape == (2, 3) and weights["b"].dtype == torch.int64
