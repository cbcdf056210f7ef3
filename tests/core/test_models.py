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
        ("hinton1200", {}, (1, 28, 28)),
        ("hinton800", {"num_classes": 5, "dropout": 0.2}, (1, 28, 28)),
        ("hinton800", {"in_channels": 3, "image_size": 32}, (3, 32, 32)),
        ("resnet18", {"width": 8}, (3, 32, 32)),
        (
            "resnet18",
            {"width": 8, "in_channels": 1, "image_size": 28, "num_classes": 3},
            (1, 28, 28),
        ),
        ("resnet34", {"width": 8, "num_classes": 100}, (3, 32, 32)),
        ("alexnet", {"width": 0.125}, (3, 32, 32)),
        ("alexnet", {"width": 0.125, "in_channels": 1, "image_size": 64}, (1, 64, 64)),
        ("alexnet_half", {"num_classes": 2, "image_size": 16}, (3, 16, 16)),
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
    assert {
        "lenet5",
        "lenet5_half",
        "wrn",
        "hinton1200",
        "hinton800",
        "resnet18",
        "resnet34",
        "alexnet",
        "alexnet_half",
    } <= names
    assert get_spec("wrn").taps == ("group1", "group2", "group3")
    assert get_spec("resnet18").taps == ("layer1", "layer2", "layer3", "layer4")
    assert get_spec("hinton800").taps == ()


def test_unknown_architecture_and_arguments_are_named_in_the_error() -> None:
    with pytest.raises(UnknownArchitectureError, match="resnet9000"):
        build("resnet9000")
    with pytest.raises(ArchitectureArgumentError, match="widen_factor"):
        build("lenet5", widen_factor=2)
    with pytest.raises(ArchitectureArgumentError, match="6n\\+4"):
        build("wrn", depth=11)
    with pytest.raises(ArchitectureArgumentError, match="image_size must be from 16 to 512"):
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


def test_hinton_mlps_have_the_published_layer_sizes() -> None:
    teacher, student = build("hinton1200"), build("hinton800")
    assert [m.out_features for m in (teacher.fc1, teacher.fc2, teacher.fc3)] == [1200, 1200, 10]
    assert [m.out_features for m in (student.fc1, student.fc2, student.fc3)] == [800, 800, 10]
    assert teacher.fc1.in_features == 784


def test_cifar_resnet_stem_keeps_full_resolution_and_taps_halve_per_stage() -> None:
    model = build("resnet18", width=8)
    shapes = tap_shapes(model, get_spec("resnet18").taps, (3, 32, 32))
    assert shapes == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    count = sum(p.numel() for p in build("resnet18").parameters())
    assert 11_000_000 < count < 11_300_000  # the CIFAR ResNet-18's well-known ~11.2M
    assert sum(p.numel() for p in build("resnet34").parameters()) > 21_000_000


def test_alexnet_taps_and_half_width() -> None:
    shapes = tap_shapes(build("alexnet"), get_spec("alexnet").taps, (3, 32, 32))
    assert shapes == [(64, 16, 16), (192, 8, 8), (256, 4, 4)]
    half_shapes = tap_shapes(build("alexnet_half"), get_spec("alexnet_half").taps, (3, 32, 32))
    assert half_shapes == [(32, 16, 16), (96, 8, 8), (128, 4, 4)]
    # matching spatial sizes: attention transfer works between the pair
    assert (
        len(
            matching_taps(
                build("alexnet"),
                get_spec("alexnet").taps,
                build("alexnet_half"),
                get_spec("alexnet_half").taps,
                (3, 32, 32),
            )
        )
        == 3
    )
