from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from core.images import png_bytes, sample_grid


def test_png_decodes_to_the_same_pixels() -> None:
    pixels = torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8)
    decoded = Image.open(io.BytesIO(png_bytes(pixels)))
    assert decoded.size == (7, 5) and decoded.mode == "RGB"
    assert torch.equal(
        torch.tensor(list(decoded.getdata()), dtype=torch.uint8).view(5, 7, 3), pixels
    )


def test_grid_of_grey_digits_has_the_expected_size_and_undoes_normalisation() -> None:
    images = torch.full((10, 1, 8, 8), (1.0 - 0.5) / 0.25)  # normalised white
    decoded = Image.open(io.BytesIO(sample_grid(images, mean=[0.5], std=[0.25], padding=1)))
    assert decoded.mode == "L"
    assert decoded.size == (4 * 9 + 1, 3 * 9 + 1)
    assert decoded.getpixel((1, 1)) == 255


def test_png_refuses_float_pixels() -> None:
    with pytest.raises(ValueError):
        png_bytes(torch.zeros(2, 2))
