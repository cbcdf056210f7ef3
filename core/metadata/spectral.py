"""Graph-Fourier bases of a network, for the spectral records (Lopes et al. 2017, sec. 3.3).

The formulation (also in docs/lopes-spectral.md):

Graph. Vertices are the units of a chain of consecutive recorded layers l_a, ..., l_b (hidden
pre-activations, flattened, then the logits). Between consecutive layers l and l+1, the edge weight
between unit i of l and unit j of l+1 is

    A[j, i] = d z_{l+1, j} / d z_{l, i}   in the teacher with every Linear/Conv2d weight replaced by
                                           its absolute value and every bias set to zero

measured by pushing unit impulses through the network from layer l's output to layer l+1's output.
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
eigenvectors arbitrary. Each eigenvector's sign is fixed so that its largest-magnitude entry is
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
import itertools
import math

import torch
from torch import nn

from core.metadata.layers import RecordedLayer

IMPULSE_BATCH = 512


class _Reached(Exception):
    """Raised from a hook to end a forward pass once the layer of interest has run."""


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


def connection_blocks(
    model: nn.Module, layers: list[RecordedLayer], input_shape: tuple[int, int, int]
) -> list[torch.Tensor]:
    """For each consecutive pair (l, l+1) of `layers`, A_l [units_{l+1}, units_l] as defined above."""
    network = _absolute_network(model)
    modules = dict(network.named_modules())
    device = next(network.parameters()).device
    blocks = []
    for lower, upper in itertools.pairwise(layers):
        columns = []
        for start in range(0, lower.units, IMPULSE_BATCH):
            count = min(IMPULSE_BATCH, lower.units - start)
            impulses = torch.zeros(count, lower.units, device=device)
            impulses[torch.arange(count), torch.arange(start, start + count)] = 1.0
            response = _response(network, modules, lower, upper, impulses, input_shape)
            columns.append(response.T.cpu())
        blocks.append(torch.cat(columns, dim=1))
    return blocks


def _response(
    network: nn.Module,
    modules: dict[str, nn.Module],
    lower: RecordedLayer,
    upper: RecordedLayer,
    impulses: torch.Tensor,
    input_shape: tuple[int, int, int],
) -> torch.Tensor:
    """Output of `upper` [B, units] when `lower`'s output is replaced by `impulses` [B, units]."""
    seen: list[torch.Tensor] = []

    def replace(_module: nn.Module, _inputs: object, _output: torch.Tensor) -> torch.Tensor:
        return impulses.view(len(impulses), *lower.shape)

    def stop(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        seen.append(output.flatten(1))
        raise _Reached

    handles = [
        modules[lower.name].register_forward_hook(replace),
        modules[upper.name].register_forward_hook(stop),
    ]
    try:
        with torch.no_grad():
            network(torch.zeros(len(impulses), *input_shape, device=impulses.device))
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise RuntimeError(f"layer {upper.name!r} did not run after {lower.name!r}")
    return seen[0]


def _bipartite_parts(sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex indices of the even-numbered and the odd-numbered layers of the chain."""
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    even = [torch.arange(offsets[i], offsets[i + 1]) for i in range(0, len(sizes), 2)]
    odd = [torch.arange(offsets[i], offsets[i + 1]) for i in range(1, len(sizes), 2)]
    return torch.cat(even), torch.cat(odd) if odd else torch.zeros(0, dtype=torch.long)


def _biadjacency(blocks: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    """The [even units, odd units] block of A (float64): every edge joins an even and an odd layer."""
    even_offsets, odd_offsets = {}, {}
    even_total = odd_total = 0
    for index, size in enumerate(sizes):
        if index % 2 == 0:
            even_offsets[index], even_total = even_total, even_total + size
        else:
            odd_offsets[index], odd_total = odd_total, odd_total + size
    biadjacency = torch.zeros(even_total, odd_total, dtype=torch.float64)
    for lower, block in enumerate(blocks):  # block [units of lower + 1, units of lower]
        upper = lower + 1
        even, odd = (lower, upper) if lower % 2 == 0 else (upper, lower)
        part = block.double() if even == upper else block.double().T
        rows = slice(even_offsets[even], even_offsets[even] + sizes[even])
        cols = slice(odd_offsets[odd], odd_offsets[odd] + sizes[odd])
        biadjacency[rows, cols] = part
    return biadjacency


def _inverse_sqrt(degree: torch.Tensor) -> torch.Tensor:
    return torch.where(degree > 0, degree.clamp_min(1e-300).rsqrt(), torch.zeros_like(degree))


def laplacian_basis(
    blocks: list[torch.Tensor], sizes: list[int], components: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lowest-frequency eigenvectors U [n, k] (float32, orthonormal columns) of the normalised
    Laplacian of the layered graph, and their eigenvalues [k] in increasing order.

    The graph is bipartite (even vs odd layers), so with the normalised biadjacency
    B = D_e^-1/2 A_eo D_o^-1/2 and its singular triplets (s_i, u_i, v_i), the vectors (u_i; v_i) / sqrt 2
    are eigenvectors of L with eigenvalue 1 - s_i: a thin SVD of B (dense, exact, no sparse solver)
    gives the whole low-frequency half of the spectrum. k is at most rank(B) <= the smaller part's
    size: beyond it the eigenvalue 1 is degenerate and its eigenvectors arbitrary. A chain of one
    layer has no edges; its basis is the units themselves.
    """
    n = sum(sizes)
    if len(sizes) == 1:
        k = min(components, n)
        return torch.eye(n, k), torch.ones(k)
    even, odd = _bipartite_parts(sizes)
    biadjacency = _biadjacency(blocks, sizes)
    normalised = (
        _inverse_sqrt(biadjacency.sum(1))[:, None]
        * biadjacency
        * _inverse_sqrt(biadjacency.sum(0))[None, :]
    )
    left, singular, right_t = torch.linalg.svd(normalised, full_matrices=False)
    rank = int((singular > singular[0] * 1e-9).sum()) if len(singular) else 0
    k = max(1, min(components, rank))
    vectors = torch.zeros(n, k, dtype=torch.float64)
    vectors[even] = left[:, :k] / math.sqrt(2)
    vectors[odd] = right_t[:k].T / math.sqrt(2)
    peaks = vectors.abs().argmax(dim=0)
    vectors *= vectors[peaks, torch.arange(k)].sign()
    return vectors.float(), (1.0 - singular[:k]).float()


def relu_signal(units: list[torch.Tensor]) -> torch.Tensor:
    """The graph signal of a chain of layers: their post-activation values, concatenated."""
    return torch.cat([torch.relu(layer) for layer in units], dim=1)
