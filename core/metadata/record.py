"""Metadata records (Lopes et al. 2017): what the data owner computes once, what the service reads.

A record is a list of signal groups. Each group is a chain of recorded layers plus per-class
statistics of one signal computed from them:

- `top_layer`: one group, the logits / tau, raw.
- `all_layers`: one raw group per recorded layer (each hidden pre-activation, then logits / tau).
- `spectral_all_layers`: one group over all layers; the signal is the coefficients of the
  post-activation values in the graph-Fourier basis of the whole network (core.metadata.spectral).
- `spectral_layer_pairs`: one spectral group per pair of recorded layers where the later reads the
  earlier directly (consecutive layers of a chain, and a residual network's skip connections).

File format: safetensors. Tensors `group{i}.{mean,std,directions,variances,residual,cholesky}`
(per kind, see core.metadata.statistics), `group{i}.basis` [units, k] and `group{i}.eigenvalues`
[k] for spectral groups, and `counts` [C] (examples per class). The safetensors metadata header
holds one key, `dfkd_lopes`, whose value is a JSON object: format, version, record, stats, rank,
components, temperature, num_classes, input_shape, layers [{name, shape, is_logits}], groups
[{layers: [indices], spectral: bool, dim}], teacher_sha256 (of the float32 weights it was
recorded with). Loading checks all of it against the tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from core.datasets import LabelledImages
from core.metadata.layers import MetadataError, RecordedLayer, reading_units, recorded_layers
from core.metadata.spectral import (
    connection_blocks,
    laplacian_basis,
    layer_edges,
    relu_signal,
    spectral_capacity,
)
from core.metadata.statistics import (
    DEFAULT_RANK,
    FLOAT_BYTES,
    STATS_KINDS,
    ClassStatistics,
    stats_bytes,
    tensor_shapes,
)
from core.weights import MAX_HEADER_BYTES, safetensors_header, tensor_chunks

RECORD_TYPES = ("top_layer", "all_layers", "spectral_all_layers", "spectral_layer_pairs")
DEFAULT_TEMPERATURE = 8.0
FORMAT = "dfkd-lopes-metadata"
VERSION = 1
HEADER_KEY = "dfkd_lopes"
DEFAULT_COMPONENT_FRACTION = 0.1  # share of a graph's vertices kept as coefficients by default


def default_components(vertices: int) -> int:
    return max(1, math.ceil(DEFAULT_COMPONENT_FRACTION * vertices))


def group_signal(
    layers: tuple[int, ...], basis: torch.Tensor | None, units: list[torch.Tensor]
) -> torch.Tensor:
    """What a group's statistics describe: a layer's raw pre-activations [B, units], or the
    spectral coefficients U^T relu(units of the chain) [B, k]."""
    if basis is None:
        return units[layers[0]]
    return relu_signal([units[i] for i in layers]) @ basis


@dataclass
class SignalGroup:
    """A chain of recorded layers and the statistics of its signal for every class."""

    layers: tuple[int, ...]  # indices into Metadata.layers
    statistics: ClassStatistics
    basis: torch.Tensor | None = None  # [units of the chain, k]; None for a raw group
    eigenvalues: torch.Tensor | None = None  # [k], Laplacian eigenvalues of the basis

    @property
    def spectral(self) -> bool:
        return self.basis is not None

    def signal(self, units: list[torch.Tensor]) -> torch.Tensor:
        return group_signal(self.layers, self.basis, units)

    def matched(self, units: list[torch.Tensor]) -> torch.Tensor:
        """What reconstruction compares with a target: relu(units) raw, coefficients spectral."""
        return torch.relu(units[self.layers[0]]) if self.basis is None else self.signal(units)

    def target(self, draw: torch.Tensor) -> torch.Tensor:
        """A sampled signal put in the form `matched` returns."""
        return torch.relu(draw) if self.basis is None else draw


@dataclass
class Metadata:
    record: str
    stats: str
    rank: int
    components: int | None  # requested coefficients per spectral graph (None: the default)
    temperature: float
    num_classes: int
    input_shape: tuple[int, int, int]
    layers: list[RecordedLayer]
    groups: list[SignalGroup]
    counts: torch.Tensor  # [C] examples per class
    teacher_sha256: str = ""

    def to(self, device: torch.device | str) -> Metadata:
        """A copy whose spectral bases live on `device` (statistics stay where sampling runs)."""
        groups = [
            SignalGroup(
                group.layers,
                group.statistics,
                None if group.basis is None else group.basis.to(device),
                group.eigenvalues,
            )
            for group in self.groups
        ]
        return replace(self, groups=groups)


# --- planning: what a record holds, before computing anything


def group_layers(
    record: str, layer_count: int, edges: list[tuple[int, int]] | None = None
) -> list[tuple[int, ...]]:
    """The layers of each group. Layer pairs are the `edges` of the teacher's layer graph (pairs
    where the later layer reads the earlier directly: consecutive layers in a chain, and skip
    connections too); without them, consecutive layers."""
    if record == "top_layer":
        return [(layer_count - 1,)]
    if record == "all_layers":
        return [(i,) for i in range(layer_count)]
    if record == "spectral_all_layers":
        return [tuple(range(layer_count))]
    if record == "spectral_layer_pairs":
        if layer_count < 2:
            return [(0,)]  # a logits-only network: its one "pair" is the logits alone
        if edges is None:
            edges = [(i, i + 1) for i in range(layer_count - 1)]
        return sorted(edges)
    raise MetadataError(f"unknown record {record!r}; choose one of {list(RECORD_TYPES)}")


def within_group(
    chain: tuple[int, ...], edges: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """Each edge joining two layers of `chain` -> the same edge numbered by position in the chain."""
    position = {layer: index for index, layer in enumerate(chain)}
    return {
        (lower, upper): (position[lower], position[upper])
        for lower, upper in edges
        if lower in position and upper in position
    }


def _is_spectral(record: str) -> bool:
    return record.startswith("spectral")


def estimate_bytes(
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    num_classes: int,
    record: str,
    stats: str,
    rank: int = DEFAULT_RANK,
    components: int | None = None,
) -> int:
    """Bytes of the record's tensors, known before recording (one dummy forward pass).

    The file adds a JSON header of a few kilobytes. A `full` record of a raw layer with d units
    costs C (d + d (d + 1) / 2) floats: LeNet-5's conv1 has d = 4704, about 44 MB a class.
    """
    if stats not in STATS_KINDS:
        raise MetadataError(f"unknown statistics kind {stats!r}; choose one of {list(STATS_KINDS)}")
    layers = recorded_layers(teacher, input_shape)
    edges = layer_edges(teacher, layers, input_shape) if _is_spectral(record) else []
    total = num_classes * 8  # counts, int64
    for chain in group_layers(record, len(layers), edges):
        units = sum(layers[i].units for i in chain)
        if _is_spectral(record):
            local_edges = list(within_group(chain, edges).values())
            capacity = spectral_capacity([layers[i].units for i in chain], local_edges)
            k = min(components or default_components(units), capacity)
            total += (units * k + k) * FLOAT_BYTES + stats_bytes(stats, k, num_classes, rank)
        else:
            total += stats_bytes(stats, units, num_classes, rank)
    return total


# --- recording on the owner's side


def teacher_fingerprint(teacher: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weights_file_fingerprint(path: Path) -> str:
    """teacher_fingerprint of the teacher whose weights are the safetensors file at `path`, read
    tensor by tensor in chunks: the weights are never in memory whole. The file must have passed
    validate_safetensors."""
    _, header = safetensors_header(path)
    digest = hashlib.sha256()
    for name in sorted(header):
        digest.update(name.encode())
        for _, values in tensor_chunks(path, [name]):
            digest.update(values.float().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def record_metadata(
    teacher: nn.Module,
    data: LabelledImages,
    record: str,
    stats: str = "diagonal",
    rank: int = DEFAULT_RANK,
    temperature: float = DEFAULT_TEMPERATURE,
    components: int | None = None,
    batch_size: int = 500,
) -> Metadata:
    """Per-class statistics of the teacher's activations on the owner's labelled `data`."""
    if stats not in STATS_KINDS:
        raise MetadataError(f"unknown statistics kind {stats!r}; choose one of {list(STATS_KINDS)}")
    device = next(teacher.parameters()).device
    input_shape = tuple(data.images.shape[1:])
    layers = recorded_layers(teacher, input_shape)
    num_classes = layers[-1].units
    labels = data.labels.cpu()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise MetadataError(
            f"labels must lie in [0, {num_classes}) for a {num_classes}-class teacher"
        )
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts < 2).any():
        missing = (counts < 2).nonzero().squeeze(1).tolist()
        raise MetadataError(f"class(es) {missing} have fewer than 2 examples; each class needs 2+")

    # --- the graph bases first (spectral records only): they define what is measured
    blocks = connection_blocks(teacher, layers, input_shape) if _is_spectral(record) else {}
    chains = group_layers(record, len(layers), list(blocks))
    bases: list[tuple[torch.Tensor, torch.Tensor] | None] = []
    for chain in chains:
        if not _is_spectral(record):
            bases.append(None)
            continue
        sizes = [layers[i].units for i in chain]
        group_blocks = {local: blocks[edge] for edge, local in within_group(chain, blocks).items()}
        bases.append(
            laplacian_basis(group_blocks, sizes, components or default_components(sum(sizes)))
        )

    # --- one pass over the owner's data, keeping each group's signal
    signals: list[list[torch.Tensor]] = [[] for _ in chains]
    was_training = teacher.training
    teacher.eval()
    try:
        with reading_units(teacher, layers, temperature) as read:
            for start in range(0, len(data.images), batch_size):
                units = [u.cpu() for u in read(data.images[start : start + batch_size].to(device))]
                _check_finite(units, layers, start)
                for index, (chain, basis) in enumerate(zip(chains, bases, strict=True)):
                    signals[index].append(
                        group_signal(chain, None if basis is None else basis[0], units)
                    )
    finally:
        teacher.train(was_training)

    groups = [
        SignalGroup(
            chain,
            _fit(stats, torch.cat(signal), labels, num_classes, rank, [layers[i] for i in chain]),
            None if basis is None else basis[0],
            None if basis is None else basis[1],
        )
        for chain, basis, signal in zip(chains, bases, signals, strict=True)
    ]
    return Metadata(
        record=record,
        stats=stats,
        rank=rank,
        components=components,
        temperature=temperature,
        num_classes=num_classes,
        input_shape=input_shape,  # type: ignore[arg-type]
        layers=layers,
        groups=groups,
        counts=counts,
        teacher_sha256=teacher_fingerprint(teacher),
    )


def _check_finite(units: list[torch.Tensor], layers: list[RecordedLayer], start: int) -> None:
    """A non-finite activation would poison every statistic of its layer: name it at once."""
    for layer, values in zip(layers, units, strict=True):
        if not torch.isfinite(values).all():
            row = int((~torch.isfinite(values)).any(dim=1).nonzero()[0, 0]) + start
            raise MetadataError(
                f"layer {layer.name!r} gives NaN or infinite activations on example {row} of "
                "the data: check the images (finite, normalised as the teacher expects) and the "
                "teacher's weights"
            )


def _fit(
    stats: str,
    signal: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    rank: int,
    layers: list[RecordedLayer],
) -> ClassStatistics:
    what = "the signal of layer(s) " + ", ".join(repr(layer.name) for layer in layers)
    try:
        return ClassStatistics.fit(stats, signal, labels, num_classes, rank, what=what)
    except ValueError as error:
        raise MetadataError(str(error)) from None


# --- the file


def metadata_bytes(metadata: Metadata) -> bytes:
    tensors: dict[str, torch.Tensor] = {"counts": metadata.counts.to(torch.int64)}
    for index, group in enumerate(metadata.groups):
        for name, tensor in group.statistics.tensors.items():
            tensors[f"group{index}.{name}"] = tensor.float().contiguous()
        if group.basis is not None and group.eigenvalues is not None:
            tensors[f"group{index}.basis"] = group.basis.float().contiguous()
            tensors[f"group{index}.eigenvalues"] = group.eigenvalues.float().contiguous()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "record": metadata.record,
        "stats": metadata.stats,
        "rank": metadata.rank,
        "components": metadata.components,
        "temperature": metadata.temperature,
        "num_classes": metadata.num_classes,
        "input_shape": list(metadata.input_shape),
        "layers": [
            {"name": layer.name, "shape": list(layer.shape), "is_logits": layer.is_logits}
            for layer in metadata.layers
        ],
        "groups": [
            {"layers": list(group.layers), "spectral": group.spectral, "dim": group.statistics.dim}
            for group in metadata.groups
        ],
        "teacher_sha256": metadata.teacher_sha256,
    }
    return save(tensors, metadata={HEADER_KEY: json.dumps(header)})


def save_metadata(metadata: Metadata, path: Path) -> int:
    """Write the record; returns the file's size in bytes."""
    payload = metadata_bytes(metadata)
    path.write_bytes(payload)
    return len(payload)


def _header(source: Path | bytes) -> dict:
    from safetensors import safe_open

    if isinstance(source, bytes):
        prefix, size = source[:8], len(source)
    else:
        with Path(source).open("rb") as handle:
            prefix, size = handle.read(8), Path(source).stat().st_size
    length = int.from_bytes(prefix, "little")
    if MAX_HEADER_BYTES < length <= size - 8:  # refused before it is read or parsed
        raise MetadataError(f"not a metadata record: its header is over {MAX_HEADER_BYTES} bytes")
    if isinstance(source, bytes):
        size = int.from_bytes(source[:8], "little")
        if size <= 0 or size > len(source) - 8:
            raise MetadataError("not a safetensors file (bad header length)")
        try:
            raw = json.loads(source[8 : 8 + size]).get("__metadata__") or {}
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise MetadataError(f"not a safetensors file ({error})") from error
    else:
        try:
            with safe_open(str(source), framework="pt") as handle:
                raw = handle.metadata() or {}
        except (SafetensorError, OSError) as error:
            raise MetadataError(f"not a readable safetensors file ({error})") from error
    if HEADER_KEY not in raw:
        raise MetadataError(f"not a metadata record: the header has no {HEADER_KEY!r} entry")
    try:
        header = json.loads(raw[HEADER_KEY])
    except json.JSONDecodeError as error:
        raise MetadataError(f"the {HEADER_KEY!r} header is not JSON ({error})") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MetadataError(f"the header does not describe a {FORMAT} file")
    if header.get("version") != VERSION:
        raise MetadataError(f"record version {header.get('version')} is not {VERSION}")
    return header


def load_metadata(source: Path | bytes) -> Metadata:
    """Read and validate a record written by `save_metadata` (a path or the file's bytes)."""
    header = _header(source)
    try:
        tensors = load(source) if isinstance(source, bytes) else load(Path(source).read_bytes())
    except (SafetensorError, OSError, ValueError) as error:
        raise MetadataError(f"not a readable safetensors file ({error})") from error
    try:
        return _from_parts(header, tensors)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        if isinstance(error, MetadataError):
            raise
        raise MetadataError(f"malformed metadata record: {error!r}") from error


def _from_parts(header: dict, tensors: dict[str, torch.Tensor]) -> Metadata:
    record, stats = header["record"], header["stats"]
    if record not in RECORD_TYPES:
        raise MetadataError(f"unknown record {record!r}")
    if stats not in STATS_KINDS:
        raise MetadataError(f"unknown statistics kind {stats!r}")
    num_classes, rank = int(header["num_classes"]), int(header["rank"])
    temperature = float(header["temperature"])
    if not (temperature > 0 and math.isfinite(temperature)):
        raise MetadataError(f"temperature must be positive, got {temperature}")
    layers = [
        RecordedLayer(
            str(item["name"]), tuple(int(s) for s in item["shape"]), bool(item["is_logits"])
        )
        for item in header["layers"]
    ]
    if not layers or not layers[-1].is_logits or layers[-1].units != num_classes:
        raise MetadataError("the last recorded layer must be the logits, one unit per class")
    expected_chains = group_layers(record, len(layers))
    described = [tuple(int(i) for i in group["layers"]) for group in header["groups"]]
    if described != expected_chains:
        raise MetadataError(
            f"a {record} record over {len(layers)} layers has groups {expected_chains}"
        )

    expected_names = {"counts"}
    groups = []
    for index, (chain, description) in enumerate(zip(described, header["groups"], strict=True)):
        units = sum(layers[i].units for i in chain)
        spectral = _is_spectral(record)
        if bool(description["spectral"]) != spectral:
            raise MetadataError(
                f"group {index} disagrees with the record type about being spectral"
            )
        basis = eigenvalues = None
        dim = int(description["dim"])
        if spectral:
            basis = _tensor(tensors, f"group{index}.basis", (units, dim))
            eigenvalues = _tensor(tensors, f"group{index}.eigenvalues", (dim,))
            expected_names |= {f"group{index}.basis", f"group{index}.eigenvalues"}
        elif dim != units:
            raise MetadataError(f"group {index} has {dim} values but its layer has {units} units")
        stat_tensors = {}
        for name, shape in tensor_shapes(stats, dim, num_classes, rank).items():
            stat_tensors[name] = _tensor(tensors, f"group{index}.{name}", shape)
            expected_names.add(f"group{index}.{name}")
        groups.append(SignalGroup(chain, ClassStatistics(stats, stat_tensors), basis, eigenvalues))
    unexpected = sorted(set(tensors) - expected_names)
    if unexpected:
        raise MetadataError(f"unexpected tensors in the record: {unexpected}")
    counts = tensors.get("counts")
    if counts is None or tuple(counts.shape) != (num_classes,):
        raise MetadataError(f"the record needs `counts` of shape [{num_classes}]")
    components = header.get("components")
    return Metadata(
        record=record,
        stats=stats,
        rank=rank,
        components=None if components is None else int(components),
        temperature=temperature,
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in header["input_shape"]),  # type: ignore[arg-type]
        layers=layers,
        groups=groups,
        counts=counts,
        teacher_sha256=str(header.get("teacher_sha256", "")),
    )


def _tensor(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if name not in tensors:
        raise MetadataError(f"the record lacks tensor {name}")
    tensor = tensors[name]
    if tuple(tensor.shape) != tuple(shape):
        raise MetadataError(f"tensor {name} has shape {list(tensor.shape)}, expected {list(shape)}")
    if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
        raise MetadataError(f"tensor {name} must hold finite floats")
    return tensor.float()


def check_teacher(
    metadata: Metadata,
    teacher: nn.Module,
    input_shape: tuple[int, int, int],
    fingerprint: Callable[[], str] | None = None,
) -> str | None:
    """Raise if the record's layers do not fit `teacher`; return a warning if its weights differ.
    `teacher` may live on the meta device when `fingerprint` gives its weights' fingerprint
    (e.g. weights_file_fingerprint of its file): then no weight is ever in memory."""
    if tuple(input_shape) != tuple(metadata.input_shape):
        raise MetadataError(
            f"the record was made for inputs {list(metadata.input_shape)}, the teacher takes {list(input_shape)}"
        )
    layers = recorded_layers(teacher, input_shape)
    if [(layer.name, layer.shape) for layer in layers] != [
        (layer.name, layer.shape) for layer in metadata.layers
    ]:
        raise MetadataError(
            "the record's layers do not match this teacher's: recorded "
            f"{[(layer.name, list(layer.shape)) for layer in metadata.layers]}, teacher has "
            f"{[(layer.name, list(layer.shape)) for layer in layers]}"
        )
    if metadata.teacher_sha256 and metadata.teacher_sha256 != (
        fingerprint() if fingerprint is not None else teacher_fingerprint(teacher)
    ):
        return (
            "the metadata was recorded with different teacher weights (fingerprints differ); "
            "reconstruction will target activations this teacher may not produce"
        )
    return None
