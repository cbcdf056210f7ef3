"""Per-class statistics of a signal (a layer's units, or spectral coefficients) and sampling from them.

Three kinds, cheapest first; d is the signal's size, r the low-rank rank, C the classes:

- `diagonal`: mean and standard deviation per value (2 d floats a class). Samples ignore
  correlations between units.
- `lowrank`: mean, the r leading principal directions with their variances, and the residual
  variance per value (d (r + 2) + r floats a class). A sample is
  mean + V (sqrt(lambda) * e1) + sqrt(residual) * e2, whose covariance is
  V diag(lambda) V^T + diag(residual): the leading correlations, and the right variance per unit.
- `full`: mean and the Cholesky factor L of the covariance (d + d (d + 1) / 2 floats a class,
  the lower triangle stored packed). A sample is mean + L e, whose covariance is L L^T. The
  authors' release multiplied the noise by the covariance itself, which gives covariance Sigma^2.

With fewer examples of a class than units the sample covariance is singular; `full` adds a small
ridge (relative to the mean variance) so that the Cholesky factor exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STATS_KINDS = ("diagonal", "lowrank", "full")
DEFAULT_RANK = 16
FLOAT_BYTES = 4  # everything is stored as float32
RIDGE = 1e-4  # relative to the mean variance; keeps singular class covariances factorable
MAX_RIDGE = 1e2  # a covariance that needs more than this is broken, not merely singular


def _check_kind(kind: str) -> None:
    if kind not in STATS_KINDS:
        raise ValueError(f"unknown statistics kind {kind!r}; choose one of {list(STATS_KINDS)}")


def tensor_shapes(kind: str, dim: int, classes: int, rank: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a record of this kind stores; the size estimate uses it."""
    _check_kind(kind)
    shapes: dict[str, tuple[int, ...]] = {"mean": (classes, dim)}
    if kind == "diagonal":
        shapes["std"] = (classes, dim)
    elif kind == "lowrank":
        rank = min(rank, dim)
        shapes |= {
            "directions": (classes, dim, rank),
            "variances": (classes, rank),
            "residual": (classes, dim),
        }
    else:
        shapes["cholesky"] = (classes, dim * (dim + 1) // 2)
    return shapes


def stats_bytes(kind: str, dim: int, classes: int, rank: int = DEFAULT_RANK) -> int:
    total = 0
    for shape in tensor_shapes(kind, dim, classes, rank).values():
        count = 1
        for size in shape:
            count *= size
        total += count * FLOAT_BYTES
    return total


@dataclass
class ClassStatistics:
    """The statistics of one signal for every class, as float32 tensors with the class first."""

    kind: str
    tensors: dict[str, torch.Tensor]

    @property
    def dim(self) -> int:
        return int(self.tensors["mean"].shape[1])

    @property
    def classes(self) -> int:
        return int(self.tensors["mean"].shape[0])

    # --- fitting on the owner's side
    @classmethod
    def fit(
        cls,
        kind: str,
        signal: torch.Tensor,
        labels: torch.Tensor,
        classes: int,
        rank: int = DEFAULT_RANK,
        what: str = "the signal",
    ) -> ClassStatistics:
        """Statistics of `signal` [N, d] for each class in range(classes); each needs 2+ examples.
        `what` names the signal in error messages."""
        _check_kind(kind)
        if not torch.isfinite(signal).all():
            raise ValueError(f"{what} holds NaN or infinite values; statistics need finite ones")
        shapes = tensor_shapes(kind, signal.shape[1], classes, rank)
        tensors = {name: torch.zeros(shape) for name, shape in shapes.items()}
        for c in range(classes):
            rows = signal[labels == c].double()
            if len(rows) < 2:
                raise ValueError(f"class {c} has {len(rows)} example(s); statistics need 2 or more")
            mean = rows.mean(0)
            centred = rows - mean
            tensors["mean"][c] = mean.float()
            if kind == "diagonal":
                tensors["std"][c] = centred.pow(2).sum(0).div(len(rows) - 1).sqrt().float()
            elif kind == "lowrank":
                directions, variances, residual = _principal(centred, shapes["variances"][1])
                tensors["directions"][c] = directions.float()
                tensors["variances"][c] = variances.float()
                tensors["residual"][c] = residual.float()
            else:
                try:
                    tensors["cholesky"][c] = _pack(_cholesky(centred)).float()
                except ValueError as error:
                    raise ValueError(f"{what}, class {c}: {error}") from None
        return cls(kind, tensors)

    # --- sampling on the service's side
    def sample(
        self, classes: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One draw per entry of `classes` [B], from N(mean_c, Sigma_c) as this kind models it."""
        out = torch.empty(len(classes), self.dim)
        for c in classes.unique().tolist():
            rows = (classes == c).nonzero().squeeze(1)
            noise = torch.randn(len(rows), self.dim, generator=generator)
            mean = self.tensors["mean"][c]
            if self.kind == "diagonal":
                draw = mean + noise * self.tensors["std"][c]
            elif self.kind == "lowrank":
                variances = self.tensors["variances"][c]
                coefficients = torch.randn(len(rows), len(variances), generator=generator)
                draw = (
                    mean
                    + (coefficients * variances.sqrt()) @ self.tensors["directions"][c].T
                    + noise * self.tensors["residual"][c].sqrt()
                )
            else:
                factor = _unpack(self.tensors["cholesky"][c], self.dim)
                draw = mean + noise @ factor.T  # x = mu + L e, so Cov x = L L^T
            out[rows] = draw
        return out

    def covariance(self, c: int) -> torch.Tensor:
        """The covariance the samples of class c have (float64), for checks and tests."""
        if self.kind == "diagonal":
            return torch.diag(self.tensors["std"][c].double().pow(2))
        if self.kind == "lowrank":
            directions = self.tensors["directions"][c].double()
            variances = self.tensors["variances"][c].double()
            return (directions * variances) @ directions.T + torch.diag(
                self.tensors["residual"][c].double()
            )
        factor = _unpack(self.tensors["cholesky"][c], self.dim).double()
        return factor @ factor.T


def _principal(centred: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading directions [d, r], their variances [r] and the variance they leave per unit [d]."""
    n = len(centred)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    directions = torch.zeros(centred.shape[1], rank, dtype=centred.dtype)
    variances = torch.zeros(rank, dtype=centred.dtype)
    kept = min(rank, len(singular))
    directions[:, :kept] = vh[:kept].T
    variances[:kept] = singular[:kept].pow(2) / (n - 1)
    total = centred.pow(2).sum(0) / (n - 1)
    residual = (total - (directions.pow(2) * variances).sum(1)).clamp_min(0)
    return directions, variances, residual


def _cholesky(centred: torch.Tensor) -> torch.Tensor:
    """The Cholesky factor of the sample covariance, with the smallest ridge (RIDGE, then x10 up
    to MAX_RIDGE, relative to the mean variance) that makes it factorable."""
    covariance = centred.T @ centred / (len(centred) - 1)
    if not torch.isfinite(covariance).all():
        raise ValueError("the covariance is not finite (values too large for float64)")
    scale = covariance.diagonal().mean().clamp_min(1e-12)
    eye = torch.eye(len(covariance), dtype=covariance.dtype)
    ridge = RIDGE
    while ridge <= MAX_RIDGE:
        factor, info = torch.linalg.cholesky_ex(covariance + ridge * scale * eye)
        if info.item() == 0:
            return factor
        ridge *= 10
    raise ValueError(f"the covariance is not factorable even with a ridge of {MAX_RIDGE:g}")


def _pack(factor: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.tril_indices(len(factor), len(factor))
    return factor[rows, cols]


def _unpack(packed: torch.Tensor, dim: int) -> torch.Tensor:
    rows, cols = torch.tril_indices(dim, dim)
    factor = packed.new_zeros(dim, dim)
    factor[rows, cols] = packed
    return factor
