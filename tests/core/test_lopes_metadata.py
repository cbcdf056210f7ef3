"""The owner's side of Lopes et al.: what is recorded, its size, its file, its statistics, its graphs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from torch import nn

from core.datasets import LabelledImages
from core.metadata import (
    RECORD_TYPES,
    STATS_KINDS,
    ClassStatistics,
    MetadataError,
    check_teacher,
    estimate_bytes,
    load_metadata,
    metadata_bytes,
    record_metadata,
    recorded_layers,
    save_metadata,
)
from core.metadata.spectral import connection_blocks, laplacian_basis, layer_edges
from core.models import build

SHAPE = (1, 6, 6)


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(36, 20), nn.ReLU(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 4)
    ).eval()


def tiny_data(count: int = 200) -> LabelledImages:
    generator = torch.Generator().manual_seed(1)
    return LabelledImages(torch.randn(count, *SHAPE, generator=generator), torch.arange(count) % 4)


def test_recorded_layers_are_hidden_linear_and_conv_outputs_then_the_logits() -> None:
    layers = recorded_layers(build("lenet5"), (1, 32, 32))
    assert [(layer.name, layer.units) for layer in layers] == [
        ("block1.0", 6 * 28 * 28),
        ("block2.0", 16 * 10 * 10),
        ("block3.0", 120),
        ("classifier.1", 84),
        ("classifier.3", 10),
    ]
    assert [layer.is_logits for layer in layers] == [False] * 4 + [True]


def test_a_model_whose_last_layer_is_not_its_output_is_refused() -> None:
    class Softmaxed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(36, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1)).softmax(1)

    with pytest.raises(MetadataError, match="does not produce the model's output"):
        recorded_layers(Softmaxed(), SHAPE)


@pytest.mark.parametrize("record", RECORD_TYPES)
@pytest.mark.parametrize("stats", STATS_KINDS)
def test_round_trip_and_size_estimate(record: str, stats: str, tmp_path: Path) -> None:
    teacher = tiny_mlp()
    estimate = estimate_bytes(teacher, SHAPE, 4, record, stats, rank=3, components=6)
    metadata = record_metadata(teacher, tiny_data(), record, stats, rank=3, components=6)
    written = save_metadata(metadata, tmp_path / "meta.safetensors")
    tensor_bytes = sum(
        t.numel() * t.element_size() for g in metadata.groups for t in g.statistics.tensors.values()
    ) + sum(
        g.basis.numel() * 4 + g.eigenvalues.numel() * 4
        for g in metadata.groups
        if g.basis is not None and g.eigenvalues is not None
    )
    assert estimate == tensor_bytes + metadata.counts.numel() * 8
    assert 0 < written - estimate < 4096  # the JSON header and safetensors' index

    for source in (tmp_path / "meta.safetensors", (tmp_path / "meta.safetensors").read_bytes()):
        loaded = load_metadata(source)
        assert (loaded.record, loaded.stats, loaded.rank, loaded.temperature) == (
            record,
            stats,
            3,
            8.0,
        )
        assert loaded.layers == metadata.layers and loaded.input_shape == SHAPE
        assert loaded.teacher_sha256 == metadata.teacher_sha256
        assert torch.equal(loaded.counts, torch.full((4,), 50))
        for mine, theirs in zip(metadata.groups, loaded.groups, strict=True):
            assert mine.layers == theirs.layers
            for name, tensor in mine.statistics.tensors.items():
                torch.testing.assert_close(theirs.statistics.tensors[name], tensor)
            if mine.basis is not None:
                torch.testing.assert_close(theirs.basis, mine.basis)
    groups = {
        "top_layer": [(2,)],
        "all_layers": [(0,), (1,), (2,)],
        "spectral_all_layers": [(0, 1, 2)],
        "spectral_layer_pairs": [(0, 1), (1, 2)],
    }[record]
    assert [g.layers for g in metadata.groups] == groups


def test_top_layer_record_holds_the_logits_divided_by_the_temperature() -> None:
    teacher, data = tiny_mlp(), tiny_data()
    metadata = record_metadata(teacher, data, "top_layer", "diagonal", temperature=4.0)
    with torch.no_grad():
        logits = teacher(data.images) / 4.0
    expected = torch.stack([logits[data.labels == c].mean(0) for c in range(4)])
    torch.testing.assert_close(metadata.groups[0].statistics.tensors["mean"], expected)


def test_full_covariance_of_lenet_conv1_is_units_squared_in_the_estimate() -> None:
    """The spec's warning, in numbers: 4704 units make a 4704 x 4704 covariance per class."""
    lenet = build("lenet5")
    full = estimate_bytes(lenet, (1, 32, 32), 10, "all_layers", "full")
    units = [4704, 1600, 120, 84, 10]
    assert full == 80 + 4 * 10 * sum(d + d * (d + 1) // 2 for d in units)
    assert full > 450e6  # ~0.5 GB, of which conv1 alone is 4704^2 / 2 floats a class
    diagonal = estimate_bytes(lenet, (1, 32, 32), 10, "all_layers", "diagonal")
    spectral = estimate_bytes(lenet, (1, 32, 32), 10, "spectral_layer_pairs", "full")
    assert diagonal < 1e6 and spectral < full / 10


@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_samples_have_the_recorded_covariance(kind: str) -> None:
    """x = mu + L e has covariance L L^T = Sigma; the authors' x = mu + Sigma e would give Sigma^2."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.5, 0.5, 0.0, 0.0], [0.0, -1.0, 3.0, 0.0]])
    data = torch.randn(5000, 4, generator=generator) @ mixing.T + torch.tensor([1.0, -2.0, 0.5])
    stats = ClassStatistics.fit(kind, data, torch.zeros(5000, dtype=torch.long), 1, rank=2)
    truth = torch.cov(data.T.double())
    recorded = stats.covariance(0)
    if kind == "full":
        torch.testing.assert_close(recorded, truth, rtol=1e-3, atol=1e-3)
    draws = stats.sample(torch.zeros(200_000, dtype=torch.long), generator).double()
    empirical = torch.cov(draws.T)
    torch.testing.assert_close(empirical, recorded, rtol=0.03, atol=0.05)
    torch.testing.assert_close(draws.mean(0), data.mean(0).double(), rtol=0.02, atol=0.03)
    assert (empirical - truth @ truth).abs().max() > 10  # far from the released code's Sigma^2
    # the diagonal of a low-rank record is exact: leading directions plus residual variance
    torch.testing.assert_close(recorded.diagonal(), truth.diagonal(), rtol=1e-3, atol=1e-3)


def test_diagonal_samples_have_the_recorded_spread_per_class() -> None:
    data = torch.cat([torch.randn(3000, 3) * 2 + 5, torch.randn(3000, 3) * 0.5 - 1])
    labels = torch.cat([torch.zeros(3000), torch.ones(3000)]).long()
    stats = ClassStatistics.fit("diagonal", data, labels, 2)
    draws = stats.sample(torch.tensor([0, 1] * 50_000), torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws[0::2].std(0), torch.full((3,), 2.0), rtol=0.05, atol=0)
    torch.testing.assert_close(draws[1::2].mean(0), torch.full((3,), -1.0), rtol=0, atol=0.02)


def test_linear_connection_blocks_are_absolute_weights() -> None:
    teacher = tiny_mlp()
    blocks = connection_blocks(teacher, recorded_layers(teacher, SHAPE), SHAPE)
    assert list(blocks) == [(0, 1), (1, 2)]  # a chain: consecutive layers only
    torch.testing.assert_close(blocks[(0, 1)], teacher[3].weight.abs())
    torch.testing.assert_close(blocks[(1, 2)], teacher[5].weight.abs())


def test_conv_connection_blocks_unroll_the_convolution_through_max_pooling() -> None:
    lenet = build("lenet5").eval()
    layers = recorded_layers(lenet, (1, 32, 32))[:2]
    (block,) = connection_blocks(lenet, layers, (1, 32, 32)).values()
    assert block.shape == (1600, 4704)
    # each conv2 unit sees 6 channels x 5 x 5 pooled positions, each pooling 2 x 2 conv1 units
    assert ((block > 0).sum(1) == 6 * 5 * 5 * 4).all()
    weight = lenet.block2[0].weight.abs()  # [16, 6, 5, 5]
    # conv2 unit (channel 3, row 2, col 4) and conv1 unit (channel 1, row 2*2+2*1+1, col 2*4+2*3)
    assert block[3 * 100 + 2 * 10 + 4, 1 * 784 + 7 * 28 + 14] == weight[3, 1, 1, 3]


def test_spectral_basis_is_orthonormal_low_frequency_eigenvectors_of_the_laplacian() -> None:
    teacher = tiny_mlp()
    layers = recorded_layers(teacher, SHAPE)
    blocks = connection_blocks(teacher, layers, SHAPE)
    sizes = [layer.units for layer in layers]
    basis, eigenvalues = laplacian_basis(blocks, sizes, components=10)
    assert basis.shape == (36, 10)
    torch.testing.assert_close(basis.T @ basis, torch.eye(10), atol=1e-5, rtol=0)

    adjacency = torch.zeros(36, 36, dtype=torch.float64)
    adjacency[20:32, :20] = blocks[(0, 1)].double()
    adjacency[32:, 20:32] = blocks[(1, 2)].double()
    adjacency = adjacency + adjacency.T
    scale = adjacency.sum(1).rsqrt()
    laplacian = torch.eye(36, dtype=torch.float64) - scale[:, None] * adjacency * scale[None, :]
    spectrum = torch.linalg.eigvalsh(laplacian)
    torch.testing.assert_close(eigenvalues.double(), spectrum[:10], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        laplacian @ basis.double(), basis.double() * eigenvalues.double(), atol=1e-5, rtol=0
    )
    assert eigenvalues[0].abs() < 1e-5  # a connected graph's constant-like mode comes first
    # capped at the bipartite rank: the smaller part has 12 units (the middle layer)
    assert laplacian_basis(blocks, sizes, components=30)[0].shape == (36, 12)


def test_loading_refuses_files_that_are_not_records_or_do_not_fit(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="no 'dfkd_lopes'"):
        load_metadata(save({"w": torch.zeros(2)}))
    with pytest.raises(MetadataError):
        load_metadata(b"not a safetensors file at all")
    metadata = record_metadata(tiny_mlp(), tiny_data(), "all_layers", "diagonal")
    broken = copy.deepcopy(metadata)
    broken.groups[1].statistics.tensors["std"] = torch.zeros(4, 11)
    with pytest.raises(MetadataError, match=r"group1\.std has shape"):
        load_metadata(metadata_bytes(broken))
    broken = copy.deepcopy(metadata)
    broken.groups[0].statistics.tensors["mean"][0, 0] = float("nan")
    with pytest.raises(MetadataError, match="finite"):
        load_metadata(metadata_bytes(broken))


def test_check_teacher_refuses_other_layers_and_warns_about_other_weights() -> None:
    metadata = record_metadata(tiny_mlp(), tiny_data(), "top_layer", "diagonal")
    assert check_teacher(metadata, tiny_mlp(), SHAPE) is None
    assert "different teacher weights" in (check_teacher(metadata, tiny_mlp(seed=5), SHAPE) or "")
    other = nn.Sequential(nn.Flatten(), nn.Linear(36, 9), nn.ReLU(), nn.Linear(9, 4))
    with pytest.raises(MetadataError, match="do not match"):
        check_teacher(metadata, other, SHAPE)


def test_classes_need_two_examples() -> None:
    data = tiny_data()
    lonely = LabelledImages(data.images, torch.where(data.labels == 3, 2, data.labels))
    with pytest.raises(MetadataError, match=r"class\(es\) \[3\]"):
        record_metadata(tiny_mlp(), lonely, "top_layer", "diagonal")


class _Residual(nn.Module):
    """stem -> [a -> b] + skip -> head; with `shortcut`, the skip is a Linear of its own."""

    def __init__(self, shortcut: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Linear(36, 6)
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 6)
        self.shortcut = nn.Linear(6, 6) if shortcut else None
        self.head = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.stem(x.flatten(1)))
        branch = self.b(torch.relu(self.a(hidden)))
        skip = self.shortcut(hidden) if self.shortcut is not None else hidden
        return self.head(torch.relu(branch + skip))


def _check_basis(blocks: dict, sizes: list[int], components: int) -> None:
    """U's columns are orthonormal eigenvectors of the normalised Laplacian built from `blocks`,
    with the lowest eigenvalues."""
    basis, eigenvalues = laplacian_basis(blocks, sizes, components=components)
    k = basis.shape[1]
    torch.testing.assert_close(basis.T @ basis, torch.eye(k), atol=1e-5, rtol=0)
    n, offsets = sum(sizes), [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    for (lower, upper), block in blocks.items():
        adjacency[offsets[upper] : offsets[upper + 1], offsets[lower] : offsets[lower + 1]] = (
            block.double()
        )
    adjacency = adjacency + adjacency.T
    scale = adjacency.sum(1).rsqrt()
    laplacian = torch.eye(n, dtype=torch.float64) - scale[:, None] * adjacency * scale[None, :]
    spectrum = torch.linalg.eigvalsh(laplacian)
    torch.testing.assert_close(eigenvalues.double(), spectrum[:k], atol=1e-5, rtol=0)
    torch.testing.assert_close(
        laplacian @ basis.double(), basis.double() * eigenvalues.double(), atol=1e-5, rtol=0
    )


def test_a_residual_networks_graph_holds_its_skip_edges() -> None:
    network = _Residual(shortcut=False).eval()
    layers = recorded_layers(network, SHAPE)
    assert [layer.name for layer in layers] == ["stem", "a", "b", "head"]
    blocks = connection_blocks(network, layers, SHAPE)
    # the skip: head reads stem's output directly, around a and b
    assert sorted(blocks) == [(0, 1), (0, 3), (1, 2), (2, 3)]
    torch.testing.assert_close(blocks[(0, 3)], network.head.weight.abs())
    torch.testing.assert_close(blocks[(2, 3)], network.head.weight.abs())
    torch.testing.assert_close(blocks[(0, 1)], network.a.weight.abs())
    assert layer_edges(network, layers, SHAPE) == sorted(blocks)
    _check_basis(blocks, [layer.units for layer in layers], components=5)


def test_a_shortcut_layer_makes_an_odd_cycle_and_still_gets_its_basis() -> None:
    network = _Residual(shortcut=True).eval()
    layers = recorded_layers(network, SHAPE)
    assert [layer.name for layer in layers] == ["stem", "a", "b", "shortcut", "head"]
    blocks = connection_blocks(network, layers, SHAPE)
    assert sorted(blocks) == [(0, 1), (0, 3), (1, 2), (2, 4), (3, 4)]
    assert (2, 3) not in blocks  # b and the shortcut are siblings, not a chain
    _check_basis(blocks, [layer.units for layer in layers], components=8)


@pytest.mark.parametrize("record", ["spectral_all_layers", "spectral_layer_pairs"])
def test_spectral_records_of_a_residual_teacher_cover_every_connection(record: str) -> None:
    network = _Residual(shortcut=True).eval()
    data = LabelledImages(torch.randn(80, *SHAPE), torch.arange(80) % 4)
    metadata = record_metadata(network, data, record, "full", components=6)
    if record == "spectral_layer_pairs":
        assert [group.layers for group in metadata.groups] == [
            (0, 1),
            (0, 3),
            (1, 2),
            (2, 4),
            (3, 4),
        ]
    estimate = estimate_bytes(network, SHAPE, 4, record, "full", components=6)
    assert abs(len(metadata_bytes(metadata)) - estimate) < 8192
