from __future__ import annotations

import pytest
import torch

from core.models import (
    ArchitectureArgumentError,
    UnknownArchitectureError,
    build,
    get_spec,
    list_architectures,
)
from core.taps import matching_taps, tap_shapes


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("lenet5", {}, (1, 32, 32)),
        ("lenet5_half", {"num_classes": 7}, (1, 32, 32)),
        ("lenet5", {"in_channels": 3, "image_size": 28}, (3, 28, 28)),
        ("wrn", {"depth": 10, "widen_factor": 1, "num_classes": 5}, (3, 32, 32)),
        ("wrn", {"depth": 16, "widen_factor": 2, "in_channels": 1, "image_size": 16}, (1, 16, 16)),
    ],
)
def test_build_gives_logits_of_the_declared_shape(name: str, kwargs: dict, shape: tuple) -> None:
    model = build(name, **kwargs)
    spec = get_spec(name)
    assert spec.input_shape(**kwargs) == shape
    logits = model(torch.randn(3, *shape))
    assert logits.shape == (3, spec.num_classes(**kwargs))


def test_half_lenet_has_fewer_parameters_than_lenet() -> None:
    def count(name: str) -> int:
        return sum(p.numel() for p in build(name).parameters())

    assert count("lenet5_half") < count("lenet5") / 2.5


def test_registry_lists_the_minimum_architectures_with_taps() -> None:
    names = {spec.name for spec in list_architectures()}
    assert {"lenet5", "lenet5_half", "wrn"} <= names
    assert get_spec("wrn").taps == ("group1", "group2", "group3")


def test_unknown_architecture_and_arguments_are_named_in_the_error() -> None:
    with pytest.raises(UnknownArchitectureError, match="resnet9000"):
        build("resnet9000")
    with pytest.raises(ArchitectureArgumentError, match="widen_factor"):
        build("lenet5", widen_factor=2)
    with pytest.raises(ArchitectureArgumentError, match="6n\\+4"):
        build("wrn", depth=11)
    with pytest.raises(ArchitectureArgumentError, match="too small"):
        build("lenet5", image_size=8)


def test_wrn_taps_halve_in_size_per_group() -> None:
    model = build("wrn", depth=10, widen_factor=2)
    shapes = tap_shapes(model, get_spec("wrn").taps, (3, 32, 32))
    assert shapes == [(32, 32, 32), (64, 16, 16), (128, 8, 8)]


def test_matching_taps_pairs_lenets_and_rejects_mismatched_sizes() -> None:
    lenet, half = build("lenet5"), build("lenet5_half")
    pairs = matching_taps(
        lenet, get_spec("lenet5").taps, half, get_spec("lenet5_half").taps, (1, 32, 32)
    )
    assert pairs == [("block1", "block1"), ("block2", "block2")]
    wrn = build("wrn", depth=10, in_channels=1)
    assert (
        matching_taps(lenet, get_spec("lenet5").taps, wrn, get_spec("wrn").taps, (1, 32, 32)) == []
    )
