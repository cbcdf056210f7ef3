"""Graph-Fourier bases of a network, for the spectral records (Lopes et al. 2017, sec. 3.3).

The formulation (also in docs/lopes-spectral.md):

Graph. Vertices are the units of a group of recorded layers (hidden pre-activations, flattened,
then the logits). Layer u is joined to an earlier layer l when u reads l directly: along a path of
the forward pass that crosses no other recorded layer (in a chain, l and l+1; in a residual
network also the skip connections, e.g. a block's input to the layer after the addition). The edge
weight between unit i of l and unit j of u is

    A[j, i] = d z_{u, j} / d z_{l, i}   in the teacher with every Linear/Conv2d weight replaced by
                                         its absolute value and every bias set to zero, and every
                                         other recorded layer's output held at zero

measured by pushing unit impulses through the network from layer l's output to every later layer.
Every signal in that network is non-negative, so ReLU passes it unchanged and max pooling routes
an impulse to the pooled unit whose window holds it: for a Linear layer A = |W|; for a conv layer
A is the unrolled convolution with |W| (composed with whatever pooling/flattening lies between), so
units stay spatial. Channel-level vertices would have been cheaper but lose where in the image a
unit looks, which is what the reconstruction must recover. There are no edges inside a layer.

Basis. With degrees D = diag(A 1), the symmetric normalised Laplacian L = I - D^-1/2 A D^-1/2
(vertices of degree 0 get D^-1/2 = 0) has orthonormal eigenvectors; the k with the smallest
eigenvalues (the smoothest signals on the graph) form U [n, k]. The graph is bipartite (edges only
join even-numbered to odd-numbered layers), so these come exactly from a thin SVD of the
normalised biadjacency B = D_e^-1/2 A_eo D_o^-1/2: for each singular triplet (s, u, v),
(u; v) / sqrt 2 is an eigenvector of L with eigenvalue 1 - s. That costs one dense SVD whose small
side is the smaller part (1 200 for Hinton-1200, 1 684 for LeNet-5: seconds on a CPU) instead of a
sparse eigensolver, and k is capped at rank(B): past it the eigenvalue 1 is degenerate and its
eigenvectors arbitrary. A chain is always bipartite (even vs odd layers), and so is a residual
network whose skips jump an even number of layers; when the layer graph has an odd cycle (a
1x1-conv shortcut beside two convs), the basis comes from a dense symmetric eigendecomposition of
D^-1/2 A D^-1/2 instead (its largest eigenvalues are L's smallest), which is refused above
MAX_DENSE_VERTICES units. Each eigenvector's sign is fixed so that its largest-magnitude entry is
positive; the basis is stored in the record anyway, so the service never recomputes it.

Signal and coefficients. The signal on the vertices is the post-activation value of each unit:
relu(z_l) for each layer of the chain, relu(logits / tau) for the logits, concatenated in layer
order. Its coefficients c = U^T relu(z) [k] are what the per-class statistics describe, and what
reconstruction matches: loss = mean_k (c_target - U^T relu(z(x)))^2 per graph, summed over graphs.
(ReLU is taken before the transform so that, as in the top- and all-layers objectives, negative
pre-activations that the network cannot tell apart are never asked to match.)

Records. `spectral_all_layers`: one graph over all recorded layers. `spectral_layer_pairs`: one
graph per consecutive pair (l, l+1), each with its own basis and statistics.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from core.metadata.layers import MetadataError, RecordedLayer

IMPULSE_BATCH = 512
MAX_DENSE_VERTICES = 8_000  # LeNet-5's 6 518 units took 160 s on 2 CPU cores


def _absolute_network(model: nn.Module) -> nn.Module:
    """A copy in eval mode with |W| for every weight and no bias or shift anywhere."""
    network = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                module.weight.abs_()
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.weight is not None:
                    module.weight.abs_()
                if module.bias is not None:
                    module.bias.zero_()
                if module.running_mean is not None:
                    module.running_mean.zero_()
    return network.requires_grad_(False)


Edges = dict[tuple[int, int], torch.Tensor]  # (lower, upper) layer indices -> A [upper, lower]


def connection_blocks(
    model: nn.Module, layers: list[RecordedLayer], input_shape: tuple[int, int, int]
) -> Edges:
    """A_{l,u} [units_u, units_l] for every pair l < u of `layers` (in forward order) where u reads
    l directly, as defined above; pairs with no connection are left out."""
    network = _absolute_network(model)
    modules = dict(network.named_modules())
    device = next(network.parameters()).device
    blocks: Edges = {}
    for lower, layer in enumerate(layers[:-1]):
        columns: dict[int, list[torch.Tensor]] = {}
        for start in range(0, layer.units, IMPULSE_BATCH):
            count = min(IMPULSE_BATCH, layer.units - start)
            impulses = torch.zeros(count, layer.units, device=device)
            impulses[torch.arange(count), torch.arange(start, start + count)] = 1.0
            responses = _direct_responses(network, modules, layers, lower, impulses, input_shape)
            for upper, response in responses.items():
                columns.setdefault(upper, []).append(response.T.cpu())
        for upper, parts in columns.items():
            block = torch.cat(parts, dim=1)
            if block.any():
                blocks[(lower, upper)] = block
    return blocks


def layer_edges(
    model: nn.Module, layers: list[RecordedLayer], input_shape: tuple[int, int, int]
) -> list[tuple[int, int]]:
    """The pairs (l, u) that `connection_blocks` would return, from one all-ones impulse per layer
    (cheap: for planning a record before recording it)."""
    network = _absolute_network(model)
    modules = dict(network.named_modules())
    device = next(network.parameters()).device
    edges = []
    for lower, layer in enumerate(layers[:-1]):
        impulse = torch.ones(1, layer.units, device=device)
        responses = _direct_responses(network, modules, layers, lower, impulse, input_shape)
        edges += [(lower, upper) for upper, response in responses.items() if response.any()]
    return edges


def _direct_responses(
    network: nn.Module,
    modules: dict[str, nn.Module],
    layers: list[RecordedLayer],
    lower: int,
    impulses: torch.Tensor,
    input_shape: tuple[int, int, int],
) -> dict[int, torch.Tensor]:
    """Output [B, units] of every layer after `lower` when `lower`'s output is replaced by
    `impulses` [B, units] and every other recorded layer's output by zeros (after it is read), so
    each response holds only the paths that cross no other recorded layer."""
    seen: dict[int, torch.Tensor] = {}

    def replace(_module: nn.Module, _inputs: object, _output: torch.Tensor) -> torch.Tensor:
        return impulses.view(len(impulses), *layers[lower].shape)

    def read_then_cut(index: int) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
            if index > lower:
                seen[index] = output.flatten(1).clone()
            return torch.zeros_like(output)

        return hook

    handles = [modules[layers[lower].name].register_forward_hook(replace)]
    handles += [
        modules[layer.name].register_forward_hook(read_then_cut(index))
        for index, layer in enumerate(layers)
        if index != lower
    ]
    try:
        with torch.no_grad():
            network(torch.zeros(len(impulses), *input_shape, device=impulses.device))
    finally:
        for handle in handles:
            handle.remove()
    missing = [layers[i].name for i in range(lower + 1, len(layers)) if i not in seen]
    if missing:
        raise RuntimeError(f"layer(s) {missing} did not run after {layers[lower].name!r}")
    return seen


def two_colouring(edges: list[tuple[int, int]], layer_count: int) -> list[int] | None:
    """A side (0 or 1) per layer with every edge joining the two sides, or None when the layer
    graph has an odd cycle. Layers without edges go to side 0."""
    side: list[int | None] = [None] * layer_count
    neighbours: dict[int, list[int]] = {i: [] for i in range(layer_count)}
    for lower, upper in edges:
        neighbours[lower].append(upper)
        neighbours[upper].append(lower)
    for root in range(layer_count):
        if side[root] is not None:
            continue
        side[root], queue = 0, [root]
        while queue:
            layer = queue.pop()
            for other in neighbours[layer]:
                if side[other] is None:
                    side[other] = 1 - side[layer]  # type: ignore[operator]
                    queue.append(other)
                elif side[other] == side[layer]:
                    return None
    return [int(s) for s in side]  # type: ignore[arg-type]


def _offsets(sizes: list[int]) -> list[int]:
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    return offsets


def _adjacency(blocks: Edges, sizes: list[int]) -> torch.Tensor:
    """The symmetric [n, n] adjacency (float64) of the whole graph."""
    offsets = _offsets(sizes)
    adjacency = torch.zeros(offsets[-1], offsets[-1], dtype=torch.float64)
    for (lower, upper), block in blocks.items():
        rows = slice(offsets[upper], offsets[upper + 1])
        cols = slice(offsets[lower], offsets[lower + 1])
        adjacency[rows, cols] = block.double()
        adjacency[cols, rows] = block.double().T
    return adjacency


def _inverse_sqrt(degree: torch.Tensor) -> torch.Tensor:
    return torch.where(degree > 0, degree.clamp_min(1e-300).rsqrt(), torch.zeros_like(degree))


def spectral_capacity(sizes: list[int], edges: list[tuple[int, int]]) -> int:
    """Most coefficients a group's basis can have: the smaller side's units for a bipartite graph
    (the rank bound below), all units otherwise; one layer alone keeps all its units."""
    side = two_colouring(edges, len(sizes))
    if len(sizes) == 1 or side is None:
        return sum(sizes)
    ones = sum(size for size, s in zip(sizes, side, strict=True) if s)
    zeros = sum(sizes) - ones
    return min(zeros, ones) if ones else zeros


def laplacian_basis(
    blocks: Edges, sizes: list[int], components: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest-frequency eigenvectors U [n, k] (float32, orthonormal columns) of the normalised
    Laplacian of the layer graph, and their eigenvalues [k] in increasing order.

    Bipartite graphs (every chain): with the sides' normalised biadjacency
    B = D_0^-1/2 A_01 D_1^-1/2 and its singular triplets (s_i, u_i, v_i), the vectors (u_i; v_i) / sqrt 2
    are eigenvectors of L with eigenvalue 1 - s_i: a thin SVD of B (dense, exact, no sparse solver)
    gives the whole low-frequency half of the spectrum. k is at most rank(B) <= the smaller side's
    size: beyond it the eigenvalue 1 is degenerate and its eigenvectors arbitrary. Other graphs: a
    dense eigendecomposition, k at most the count of positive eigenvalues of D^-1/2 A D^-1/2. A
    group of one layer has no edges; its basis is the units themselves.
    """
    n = sum(sizes)
    if len(sizes) == 1:
        k = min(components, n)
        return torch.eye(n, k), torch.ones(k)
    side = two_colouring(list(blocks), len(sizes))
    if side is None:
        vectors, eigenvalues = _dense_basis(blocks, sizes, components)
    else:
        vectors, eigenvalues = _bipartite_basis(blocks, sizes, side, components)
    peaks = vectors.abs().argmax(dim=0)
    vectors *= vectors[peaks, torch.arange(vectors.shape[1])].sign()
    return vectors.float(), eigenvalues.float()


def _bipartite_basis(
    blocks: Edges, sizes: list[int], side: list[int], components: int
) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = _offsets(sizes)
    parts = [
        torch.cat(
            [torch.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes)) if side[i] == s]
            or [torch.zeros(0, dtype=torch.long)]
        )
        for s in (0, 1)
    ]
    # each layer's offset within its side: the [side 0 units, side 1 units] block of A
    within, totals = [0] * len(sizes), [0, 0]
    for index, size in enumerate(sizes):
        within[index], totals[side[index]] = totals[side[index]], totals[side[index]] + size
    biadjacency = torch.zeros(totals[0], totals[1], dtype=torch.float64)
    for (lower, upper), block in blocks.items():  # block [units of upper, units of lower]
        zero, one = (lower, upper) if side[lower] == 0 else (upper, lower)
        part = block.double() if zero == upper else block.double().T
        rows = slice(within[zero], within[zero] + sizes[zero])
        cols = slice(within[one], within[one] + sizes[one])
        biadjacency[rows, cols] = part
    normalised = (
        _inverse_sqrt(biadjacency.sum(1))[:, None]
        * biadjacency
        * _inverse_sqrt(biadjacency.sum(0))[None, :]
    )
    left, singular, right_t = torch.linalg.svd(normalised, full_matrices=False)
    rank = int((singular > singular[0] * 1e-9).sum()) if len(singular) else 0
    k = max(1, min(components, rank))
    vectors = torch.zeros(sum(sizes), k, dtype=torch.float64)
    vectors[parts[0]] = left[:, :k] / math.sqrt(2)
    vectors[parts[1]] = right_t[:k].T / math.sqrt(2)
    return vectors, 1.0 - singular[:k]


def _dense_basis(
    blocks: Edges, sizes: list[int], components: int
) -> tuple[torch.Tensor, torch.Tensor]:
    n = sum(sizes)
    if n > MAX_DENSE_VERTICES:
        raise MetadataError(
            f"this teacher's layer graph is not bipartite (a shortcut beside a path of odd length) "
            f"and has {n} units: its spectral basis needs a dense eigendecomposition, done up to "
            f"{MAX_DENSE_VERTICES} units; use a top_layer or all_layers record, or record fewer layers"
        )
    adjacency = _adjacency(blocks, sizes)
    scale = _inverse_sqrt(adjacency.sum(1))
    values, vectors = torch.linalg.eigh(scale[:, None] * adjacency * scale[None, :])
    order = values.flip(0)  # largest first: L = I - S has them as its smallest
    positive = int((order > order[0] * 1e-9).sum())
    k = max(1, min(components, positive))
    return vectors.flip(1)[:, :k].clone(), 1.0 - order[:k]


def relu_signal(units: list[torch.Tensor]) -> torch.Tensor:
    """The graph signal of a chain of layers: their post-activation values, concatenated."""
    return torch.cat([torch.relu(layer) for layer in units], dim=1)
