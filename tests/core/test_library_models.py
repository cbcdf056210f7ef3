"""torchvision and timm architectures by name: built by the library with the caller's arguments,
never with downloaded weights, answering like registry entries (input shape, classes, taps)."""

from __future__ import annotations

import pytest
import timm
import torchvision

from core.memory_plan import plan_training
from core.models import ArchitectureArgumentError, UnknownArchitectureError, build, get_spec
from core.models.library import library_names, output_shape


def test_a_library_model_keeps_the_librarys_own_state_dict_keys() -> None:
    model = build("timm:resnet18", num_classes=10)
    assert (
        model.state_dict().keys()
        == timm.create_model("resnet18", num_classes=10).state_dict().keys()
    )
    tv = build("torchvision:resnet18", num_classes=7)
    assert tv.state_dict().keys() == torchvision.models.resnet18(num_classes=7).state_dict().keys()


def test_specs_read_shapes_from_the_library() -> None:
    assert get_spec("timm:resnet18").input_shape(in_chans=1) == (1, 224, 224)
    assert get_spec("timm:test_resnet").input_shape() == (3, 160, 160)  # timm's default config
    assert get_spec("torchvision:resnet18").input_shape() == (3, 224, 224)
    assert get_spec("torchvision:resnet18").num_classes(num_classes=12) == 12
    assert output_shape("timm:test_resnet", {"num_classes": 5}, (3, 32, 32)) == [1, 5]


@pytest.mark.parametrize(
    "kwargs", [{"pretrained": True}, {"weights": "DEFAULT"}, {"checkpoint_path": "/etc/passwd"}]
)
def test_arguments_that_would_fetch_or_read_weights_are_refused(kwargs: dict) -> None:
    with pytest.raises(ArchitectureArgumentError, match="refused"):
        build("timm:resnet18", **kwargs)


def test_unknown_names_and_bad_arguments_say_so() -> None:
    with pytest.raises(UnknownArchitectureError, match="timm has no model"):
        get_spec("timm:not_a_model")
    with pytest.raises(UnknownArchitectureError, match="unknown architecture library"):
        get_spec("keras:resnet18")
    with pytest.raises(ArchitectureArgumentError, match="num_classes must be from 2"):
        build("timm:resnet18", num_classes=10**9)


def test_attention_taps_come_from_the_model() -> None:
    assert get_spec("timm:resnet18").taps == ("layer1", "layer2", "layer3", "layer4")
    assert get_spec("torchvision:resnet18").taps == ("layer1", "layer2", "layer3", "layer4")
    assert len(get_spec("timm:efficientnet_b0").taps) == 4  # feature_info, stride 4 and up
    assert get_spec("timm:test_vit").taps == ()  # token blocks are no feature maps
    assert get_spec("torchvision:vgg11").taps == ()  # no stage names to read


def test_names_can_be_searched() -> None:
    found = library_names("resnet18")
    assert "timm:resnet18" in found and "torchvision:resnet18" in found
    assert all("resnet18" in name for name in found)


def test_the_memory_plan_grows_with_the_batch_and_names_the_batch_that_fits() -> None:
    teacher = build("timm:test_resnet", num_classes=10)
    student = build("timm:test_resnet", num_classes=10)
    small = plan_training(teacher, student, (3, 32, 32))
    large = plan_training(teacher, student, (3, 224, 224))
    assert large.per_sample_bytes > 40 * small.per_sample_bytes  # 49x the pixels
    limit = large.peak_bytes(100)
    assert large.largest_batch(limit) == 100
    assert large.peak_bytes(large.largest_batch(limit - 1)) < limit
    assert teacher.training  # the probe leaves the model's mode as it was
