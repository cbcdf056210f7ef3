"""A method's config: a dataclass whose fields say their default, bounds and meaning.

Each field is declared with `hyperparameter(...)`; the API's job schema, `GET /v1/methods` and
`dfkd distill --hp` are all read from these declarations, so a method states them once.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

JOB_FIELDS = ("iterations", "batch_size", "seed", "device", "budget_seconds")


def hyperparameter(
    default: Any,
    description: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    cpu: Any = None,
    gpu: Any = None,
) -> Any:
    """A config field. `cpu`/`gpu`: what an unset (None) field becomes on that kind of device;
    the bounds and choices are what a job may ask for."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    metadata = {
        "description": description,
        "bounds": {name: value for name, value in bounds.items() if value is not None},
        "choices": choices,
        "device_defaults": {"cpu": cpu, "gpu": gpu} if cpu is not None or gpu is not None else None,
    }
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class MethodConfig:
    """What every method's config holds besides its science: the run's length, batch, seed and
    device. Subclasses restate `iterations` and `batch_size` with the method's paper defaults."""

    iterations: int | None = hyperparameter(
        1000, "training iterations; unset with a budget: as many as the budget allows", ge=1
    )
    batch_size: int = hyperparameter(128, "inputs per iteration", ge=2, le=8192)
    # seconds of training; the run ends at whichever of `iterations` and the budget comes first,
    # and the learning-rate schedules run on the fraction of the budget spent
    budget_seconds: float | None = hyperparameter(None, "seconds of training time", gt=0)
    seed: int = hyperparameter(0, "seed for every random draw", ge=0)
    device: str = hyperparameter("cpu", "torch device: cpu, cuda, cuda:1, ...")
    log_every: int = hyperparameter(10, "iterations between metric points", ge=1, le=100_000)

    # A method that keeps synthesised inputs in memory names the field that sizes them and says
    # how many bytes they take at most (`data_bytes`): the service refuses a job above its limit.
    DATA_SIZE_FIELD: ClassVar[str | None] = None

    def data_bytes(self, num_classes: int, input_shape: tuple[int, ...]) -> int:
        del num_classes, input_shape
        return 0

    def on_device(self, field_name: str) -> Any:
        """The field's value, or the default for the device when it is unset."""
        value = getattr(self, field_name)
        if value is not None:
            return value
        defaults = field_metadata(type(self), field_name)["device_defaults"]
        if defaults is None:
            return None
        return defaults["gpu" if self.device.startswith("cuda") else "cpu"]

    def effective(
        self, num_classes: int, input_shape: tuple[int, int, int] | None = None
    ) -> MethodConfig:
        """This config with every derived default filled in (the device's, the teacher's)."""
        del num_classes, input_shape
        return self.with_device_defaults()

    def with_device_defaults(self, **values: Any) -> Any:
        filled = {
            f.name: self.on_device(f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("device_defaults")
        }
        return dataclasses.replace(self, **{**filled, **values})


def field_metadata(config_type: type, name: str) -> dict[str, Any]:
    return next(f.metadata for f in dataclasses.fields(config_type) if f.name == name)


@dataclass(frozen=True)
class HyperparameterInfo:
    """One field as the registry describes it to users."""

    name: str
    type: Any  # the Python annotation, resolved
    default: Any
    description: str
    bounds: dict[str, float]
    choices: tuple[str, ...] | None
    device_defaults: dict[str, Any] | None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": type_name(self.type),
            "default": list(self.default) if isinstance(self.default, tuple) else self.default,
            "default_cpu": None if self.device_defaults is None else self.device_defaults["cpu"],
            "default_gpu": None if self.device_defaults is None else self.device_defaults["gpu"],
            "description": self.description,
            "bounds": self.bounds,
            "choices": list(self.choices) if self.choices else None,
        }


def describe(config_type: type, names: tuple[str, ...] | None = None) -> list[HyperparameterInfo]:
    """The fields of a config dataclass (only `names`, when given), in declaration order."""
    hints = typing.get_type_hints(config_type)
    described = []
    for item in dataclasses.fields(config_type):
        if names is not None and item.name not in names:
            continue
        default = (
            item.default if item.default is not dataclasses.MISSING else item.default_factory()  # type: ignore[misc]
        )
        described.append(
            HyperparameterInfo(
                name=item.name,
                type=hints[item.name],
                default=default,
                description=item.metadata.get("description", ""),
                bounds=dict(item.metadata.get("bounds", {})),
                choices=item.metadata.get("choices"),
                device_defaults=item.metadata.get("device_defaults"),
            )
        )
    return described


def method_hyperparameters(config_type: type) -> list[HyperparameterInfo]:
    """The fields a job sets under `hyperparameters` (the job-level ones excluded)."""
    return [info for info in describe(config_type) if info.name not in JOB_FIELDS]


def type_name(annotation: Any) -> str:
    """integer, number, boolean, string or array (with "|null" when unset is allowed)."""
    arguments = typing.get_args(annotation)
    nullable = type(None) in arguments
    base = (
        next((a for a in arguments if a is not type(None)), annotation) if arguments else annotation
    )
    origin = typing.get_origin(base) or base
    names = {int: "integer", float: "number", bool: "boolean", str: "string", tuple: "array"}
    name = names.get(origin, "string")
    return f"{name}|null" if nullable else name
