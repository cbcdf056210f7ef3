"""The classifier-feature tap DAFL's activation loss reads."""

from __future__ import annotations

import torch
from torch import nn

from core.models import build
from core.taps import InputRecorder, classifier_input_layer


def test_the_classifier_input_is_the_first_linear_of_a_convolutional_network() -> None:
    lenet = build("lenet5")
    assert classifier_input_layer(lenet) is lenet.classifier[1]  # 120 conv features, as released
    resnet = build("resnet8", width=8)
    assert classifier_input_layer(resnet) is resnet.fc


def test_an_mlp_is_read_at_its_last_linear_and_a_network_without_one_gives_none() -> None:
    mlp = build("hinton800")
    linears = [module for module in mlp.modules() if isinstance(module, nn.Linear)]
    assert classifier_input_layer(mlp) is linears[-1]
    assert classifier_input_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())) is None


def test_the_recorder_keeps_the_layers_input_flattened_until_closed() -> None:
    lenet = build("lenet5").eval()
    recorder = InputRecorder(classifier_input_layer(lenet))
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        lenet(images)
        expected = lenet.block3(lenet.block2(lenet.block1(images))).flatten(1)
    assert torch.equal(recorder.features, expected) and recorder.features.shape == (3, 120)
    recorder.close()
    lenet(images)
    assert recorder.latest is None
