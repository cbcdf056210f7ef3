"""The pieces the BatchNorm-statistics methods share: the statistics hook, the pool, the
augmentations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.augment import jitter, random_crop, random_flip
from core.batchnorm import BatchNormStatistics, batchnorm_layers, planned_batchnorm_layers
from core.pool import ImagePool


def bn_network() -> nn.Module:
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3)
    )
    for layer in batchnorm_layers(network):
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    return network.eval()


def test_the_statistics_loss_equals_a_hand_computation() -> None:
    network = bn_network()
    statistics = BatchNormStatistics(network)
    x = torch.randn(8, 1, 10, 10)
    network(x)
    expected = []
    features = x
    for module in network:
        if isinstance(module, nn.BatchNorm2d):
            mean = features.permute(1, 0, 2, 3).reshape(features.shape[1], -1).mean(1)
            variance = (
                features.permute(1, 0, 2, 3).reshape(features.shape[1], -1).var(1, unbiased=False)
            )
            expected.append(
                (mean - module.running_mean).norm() + (variance - module.running_var).norm()
            )
        features = module(features)
    terms = statistics.per_layer()
    torch.testing.assert_close(torch.stack(terms), torch.stack(expected))
    torch.testing.assert_close(statistics.loss(first_weight=10), 10 * expected[0] + expected[1])
    statistics.close()
    assert not network[1]._forward_hooks


def test_a_network_without_batchnorm_is_refused_and_counted_as_such() -> None:
    with pytest.raises(ValueError, match="no BatchNorm"):
        BatchNormStatistics(nn.Sequential(nn.Linear(2, 2)))
    assert planned_batchnorm_layers("lenet5") == 0
    assert planned_batchnorm_layers("resnet8") == 9  # stem, 2 in each of 3 blocks, 2 projections


def test_the_pool_is_bounded_keeps_the_newest_and_survives_a_checkpoint() -> None:
    pool = ImagePool(capacity=5)
    for batch in range(3):
        pool.add(torch.full((2, 1, 2, 2), float(batch)), torch.full((2, 3), float(batch)))
    assert len(pool) == 5 and pool.images[:, 0, 0, 0].tolist() == [0, 1, 1, 2, 2]
    copy = ImagePool(capacity=5)
    copy.load_state_dict(pool.state_dict())
    first, second = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    images, logits = pool.sample(4, first)
    again, again_logits = copy.sample(4, second)
    assert torch.equal(images, again) and torch.equal(logits, again_logits)
    assert torch.equal(images[:, 0, 0, 0], logits[:, 0])  # inputs stay with their logits


def test_augmentations_keep_shapes_draw_from_their_generator_and_move_pixels() -> None:
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    for augment in (
        lambda g: random_crop(images, 1, g),
        lambda g: random_flip(images, g),
        lambda g: jitter(images, 1, g),
    ):
        first = augment(torch.Generator().manual_seed(3))
        assert first.shape == images.shape
        assert torch.equal(first, augment(torch.Generator().manual_seed(3)))
    crop = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = nn.functional.pad(images, (2, 2, 2, 2))
    # every crop is some 4x4 window of its own padded image
    for index in range(2):
        windows = [
            padded[index, :, row : row + 4, column : column + 4]
            for row in range(5)
            for column in range(5)
        ]
        assert any(torch.equal(crop[index], window) for window in windows)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    for index in range(2):
        assert torch.equal(flipped[index], images[index]) or torch.equal(
            flipped[index], images[index].flip(2)
        )
