"""Sample grids as PNG, written with zlib alone (no imaging dependency in the core)."""

from __future__ import annotations

import math
import struct
import zlib

import torch


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bytes(pixels: torch.Tensor) -> bytes:
    """Encode uint8 pixels [H, W] (grey) or [H, W, 3] (RGB) as a PNG file."""
    if pixels.dtype != torch.uint8 or pixels.ndim not in (2, 3):
        raise ValueError("png_bytes takes uint8 pixels of shape [H, W] or [H, W, 3]")
    height, width = pixels.shape[:2]
    colour_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.reshape(height, -1).numpy()
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def denormalise(
    images: torch.Tensor, mean: list[float] | None, std: list[float] | None
) -> torch.Tensor:
    """Undo the teacher's input normalisation; without one, stretch each image to [0, 1]."""
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        return (images * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)).clamp(0, 1)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


def sample_grid(
    images: torch.Tensor,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    padding: int = 2,
    stretch: bool = True,
) -> bytes:
    """A square-ish grid of pseudo inputs [N, C, H, W] as PNG bytes (1 or 3 channels shown as such,
    other channel counts as their mean); `stretch=False` takes them as [0, 1] colours already."""
    images = images.detach().float().cpu()
    images = denormalise(images, mean, std) if stretch else images
    if images.shape[1] not in (1, 3):
        images = images.mean(dim=1, keepdim=True)
    count, channels, height, width = images.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = torch.ones(
        channels, rows * (height + padding) + padding, columns * (width + padding) + padding
    )
    for index in range(count):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[:, top : top + height, left : left + width] = images[index]
    pixels = (grid * 255).round().to(torch.uint8)
    return png_bytes(pixels[0] if channels == 1 else pixels.permute(1, 2, 0).contiguous())


def palette(num_classes: int) -> torch.Tensor:
    """A fixed colour per class [K, 3] uint8, the same in every grid: class c's bits spread
    over the high bits of red, green and blue in turn (the PASCAL VOC scheme), so neighbouring
    classes differ strongly; class 0 (background, by convention) is black."""
    colours = torch.zeros(num_classes, 3, dtype=torch.uint8)
    for index in range(num_classes):
        value, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        colours[index] = torch.tensor(rgb, dtype=torch.uint8)
    return colours


def _coloured(masks: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Masks [N, H, W] as RGB floats [N, 3, H, W] in [0, 1]."""
    return (colours.float() / 255)[masks.long()].permute(0, 3, 1, 2)


def segmentation_grid(
    images: torch.Tensor,
    teacher_masks: torch.Tensor,
    student_masks: torch.Tensor,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> bytes:
    """Each input [N, C, H, W] beside the teacher's and the student's predicted masks [N, H, W]
    in the fixed palette (a class's colour does not depend on how many there are), one triple a
    cell, as PNG bytes."""
    shown = denormalise(images.detach().float().cpu(), mean, std)
    shown = shown.mean(dim=1, keepdim=True) if shown.shape[1] != 3 else shown
    colours = palette(int(max(teacher_masks.max(), student_masks.max())) + 1)
    triples = torch.cat(
        [
            shown.expand(-1, 3, -1, -1),
            _coloured(teacher_masks.cpu(), colours),
            _coloured(student_masks.cpu(), colours),
        ],
        dim=3,
    )
    return sample_grid(triples, padding=4, stretch=False)
