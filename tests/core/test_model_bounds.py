"""Every registry architecture bounds its size-driving arguments, checked before anything is
built; parameters are counted on the meta device only once the bounds hold; the forward check's
activations are estimated on the meta device."""

from __future__ import annotations

import math

import pytest
import torch

from core.models import (
    ArchitectureArgumentError,
    ArchitectureSpec,
    build,
    forward_peak_bytes,
    get_spec,
    list_architectures,
    planned_parameters,
    register_model,
)
from core.models.registry import SHAPE_BOUNDS
from service.settings import Settings
from tests.memory import CLEAR_REFS, peak_rss, reset_peak_rss


@pytest.mark.parametrize("spec", list_architectures(), ids=lambda spec: spec.name)
def test_every_numeric_argument_is_bounded_and_its_default_is_inside(
    spec: ArchitectureSpec,
) -> None:
    numeric = {
        name
        for name, value in spec.defaults.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    assert numeric <= set(spec.bounds), f"{spec.name}: unbounded {numeric - set(spec.bounds)}"
    assert {"num_classes", "in_channels", "image_size"} <= set(spec.bounds)
    spec.resolve_kwargs()  # the defaults pass their own bounds


def test_a_new_architecture_must_declare_bounds_for_its_numeric_arguments() -> None:
    def probe(
        num_classes: int = 10, in_channels: int = 1, image_size: int = 32, depth: int = 3
    ) -> torch.nn.Module:
        return torch.nn.Linear(1, 1)

    with pytest.raises(TypeError, match=r"probe must declare bounds for \['depth'\]"):
        register_model(taps=())(probe)


@pytest.mark.parametrize(
    ("architecture", "kwargs", "fragments"),
    [
        ("wrn", {"depth": 12004}, ["depth", "10", "100", "12004"]),
        ("wrn", {"widen_factor": 110}, ["widen_factor", "1", "20", "110"]),
        ("wrn", {"image_size": 1536}, ["image_size", "8", "512", "1536"]),
        ("resnet34", {"in_channels": 10_000}, ["in_channels", "64", "10000"]),
        ("resnet18", {"width": 4096}, ["width", "256", "4096"]),
        ("lenet5", {"image_size": 12}, ["image_size", "16", "512", "12"]),
        ("alexnet", {"width": float("nan")}, ["width", "4.0", "nan"]),
        ("hinton1200", {"num_classes": 10**9}, ["num_classes", "100000", "1000000000"]),
        ("lenet5", {"num_classes": "ten"}, ["num_classes", "an integer", "'ten'"]),
        ("lenet5", {"num_classes": True}, ["num_classes", "an integer"]),
        ("wrn", {"depth": 16.0}, ["depth", "an integer"]),
    ],
)
def test_an_argument_outside_its_bound_is_named_with_the_bound_and_the_value(
    architecture: str, kwargs: dict, fragments: list[str]
) -> None:
    with pytest.raises(ArchitectureArgumentError) as raised:
        planned_parameters(architecture, **kwargs)
    for fragment in fragments:
        assert fragment in str(raised.value), (fragment, str(raised.value))


def test_a_long_string_value_is_quoted_short() -> None:
    with pytest.raises(ArchitectureArgumentError) as raised:
        get_spec("lenet5").resolve_kwargs(num_classes="x" * 100_000)
    assert len(str(raised.value)) < 300


def test_the_widest_deepest_wrn_is_counted_in_a_blink() -> None:
    """depth and width at their bounds: the meta build behind the count stays cheap."""
    count = planned_parameters("wrn", depth=100, widen_factor=20)
    assert count > Settings().max_student_parameters  # refused as a student by the API


@pytest.mark.parametrize(
    ("architecture", "kwargs"),
    [
        ("wrn", {"depth": 40, "widen_factor": 2}),
        ("wrn", {"depth": 28, "widen_factor": 10}),
        ("resnet34", {}),
        ("resnet18", {}),
        ("alexnet", {}),
        ("hinton1200", {}),
        ("lenet5", {}),
    ],
)
def test_documented_sizes_fit_the_default_parameter_limits(architecture: str, kwargs: dict) -> None:
    settings = Settings()
    count = planned_parameters(architecture, **kwargs)
    assert count <= settings.max_student_parameters <= settings.max_teacher_parameters


def test_the_shape_bounds_admit_imagenet_like_inputs() -> None:
    assert SHAPE_BOUNDS["image_size"].maximum >= 224
    assert SHAPE_BOUNDS["num_classes"].maximum >= 1000


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs /proc/self/clear_refs")
@pytest.mark.parametrize(
    ("architecture", "kwargs"),
    [
        ("wrn", {"depth": 16, "widen_factor": 1, "image_size": 256}),
        ("resnet18", {"width": 16, "image_size": 256}),
        ("alexnet", {"width": 0.25, "image_size": 256}),
        ("lenet5", {"image_size": 512}),
    ],
)
def test_the_forward_estimate_covers_the_measured_peak(architecture: str, kwargs: dict) -> None:
    """The estimate bounds what the upload's forward check (batch 2, no grad) really takes."""
    spec = get_spec(architecture)
    shape = spec.input_shape(**kwargs)
    with torch.device("meta"):
        estimate = forward_peak_bytes(build(architecture, **kwargs), shape, 2)
    model = build(architecture, **kwargs).eval()
    batch = torch.zeros(2, *shape)
    small = {**kwargs, "image_size": 32}
    with torch.no_grad():
        # load the kernels on a small input, so the measured pass allocates its own activations
        build(architecture, **small).eval()(torch.zeros(2, *spec.input_shape(**small)))
        reset_peak_rss()
        start = peak_rss()
        model(batch)
    growth = peak_rss() - start
    largest_input = 2 * math.prod(shape) * 4
    assert growth <= estimate, (growth, estimate)
    assert estimate >= largest_input
