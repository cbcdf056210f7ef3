"""Name -> method registry. Each module of `core/methods/` registers its method once with
`@register_method`; the API, the worker, the CLI and `GET /v1/methods` are read from here."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.hyperparameters import (
    JOB_FIELDS,
    HyperparameterInfo,
    MethodConfig,
    describe,
    method_hyperparameters,
)

if TYPE_CHECKING:
    from core.loop import MethodRun

TASK_TYPES = ("classification", "segmentation")


@dataclass
class TeacherFacts:
    """What is known of a teacher before a job runs: enough to decide a method's requirements."""

    num_classes: int
    input_shape: tuple[int, int, int]
    has_activation_record: bool = False
    # counts the teacher's BatchNorm layers (None: not known before a worker loads it, a
    # program), asked only when a requirement needs it: it builds the model on the meta device
    count_batchnorm: Callable[[], int | None] = lambda: None
    task_type: str = "classification"

    @functools.cached_property
    def batchnorm_layers(self) -> int | None:
        return self.count_batchnorm()


@dataclass(frozen=True)
class Requirement:
    """Something a method needs from the teacher; `unmet` says why a teacher falls short."""

    code: str  # the error code a refused job carries
    summary: str
    unmet: Callable[[TeacherFacts], str | None]


ACTIVATION_RECORD = Requirement(
    code="teacher_has_no_metadata",
    summary="the owner's activation record of the teacher (dfkd record-metadata)",
    unmet=lambda teacher: (
        None
        if teacher.has_activation_record
        else "reconstructs inputs from the teacher's activation record; upload the teacher with a "
        "`metadata` file (made by `dfkd record-metadata`) or add one with PUT /v1/teachers/{id}/metadata"
    ),
)


BATCHNORM_STATISTICS = Requirement(
    code="teacher_has_no_batchnorm",
    summary="a teacher with BatchNorm layers: their running statistics are what inputs are "
    "synthesised to match",
    unmet=lambda teacher: (
        "synthesises inputs that match the running statistics of the teacher's "
        "BatchNorm layers, and this teacher has none"
        if teacher.batchnorm_layers == 0
        else None
    ),
)


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one spec per registration
class MethodSpec:
    """What the registry knows about one method."""

    name: str
    title: str  # how people write it: "ZSKT", "Lopes"
    summary: str  # one line
    paper: str  # the reference
    config: type[MethodConfig]
    run: type[MethodRun]
    requirements: tuple[Requirement, ...] = ()
    task_types: tuple[str, ...] = ("classification",)
    # a few hyperparameters for the API's example job (a quick CPU run)
    example: dict[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> list[HyperparameterInfo]:
        return method_hyperparameters(self.config)

    def build_config(self, hyperparameters: dict[str, Any], **run: Any) -> MethodConfig:
        """The method's config from a job's `hyperparameters` and its run fields (iterations,
        budget_seconds, batch_size, seed, device): the one place the API, the worker and the CLI
        make one."""
        if set(run) - set(JOB_FIELDS):
            raise TypeError(f"run fields are {JOB_FIELDS}, got {sorted(run)}")
        names = {info.name for info in self.hyperparameters()}
        unknown = sorted(set(hyperparameters) - names)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for {self.name}; known: {sorted(names)}"
            )
        return self.config(**hyperparameters, **run)

    def job_defaults(self) -> dict[str, HyperparameterInfo]:
        return {info.name: info for info in describe(self.config, ("iterations", "batch_size"))}

    def unmet_requirement(self, teacher: TeacherFacts) -> tuple[str, str] | None:
        """(code, message) of the first requirement `teacher` does not meet, or None."""
        if teacher.task_type not in self.task_types:
            usable = [spec.name for spec in list_methods() if spec.serves(teacher)]
            return (
                "unsupported_task_type",
                f"method {self.name} supports {' and '.join(self.task_types)} teachers, and this "
                f"teacher is a {teacher.task_type} network; methods for {teacher.task_type} "
                f"teachers: {', '.join(usable) or 'none'}",
            )
        for requirement in self.requirements:
            message = requirement.unmet(teacher)
            if message is not None:
                usable = [spec.name for spec in list_methods() if spec.serves(teacher)]
                return (
                    requirement.code,
                    f"method {self.name} {message}; methods this teacher can run: "
                    f"{', '.join(usable) or 'none'}",
                )
        return None

    def serves(self, teacher: TeacherFacts) -> bool:
        return teacher.task_type in self.task_types and all(
            requirement.unmet(teacher) is None for requirement in self.requirements
        )


_METHODS: dict[str, MethodSpec] = {}
_DEFAULT: list[str] = []  # the method a job that names none runs


def register_method(
    name: str,
    *,
    title: str,
    summary: str,
    paper: str,
    config: type[MethodConfig],
    requirements: tuple[Requirement, ...] = (),
    task_types: tuple[str, ...] = ("classification",),
    example: dict[str, Any] | None = None,
    default: bool = False,
) -> Callable[[type[MethodRun]], type[MethodRun]]:
    """Class decorator: the decorated MethodRun is the method `name`."""

    def register(run: type[MethodRun]) -> type[MethodRun]:
        if name in _METHODS and _METHODS[name].run is not run:
            raise ValueError(f"a method named {name!r} is already registered")
        _METHODS[name] = MethodSpec(
            name, title, summary, paper, config, run, requirements, task_types, example or {}
        )
        run.method_name = name
        if default:
            _DEFAULT.append(name)
        return run

    return register


def unregister_method(name: str) -> None:
    """For tests that register a method of their own."""
    _METHODS.pop(name, None)


def _discover() -> None:
    """Imports every module of core/methods/ once: importing one registers its method."""
    import core.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"core.methods.{module.name}")


def list_methods() -> list[MethodSpec]:
    _discover()
    return sorted(_METHODS.values(), key=lambda spec: spec.name)


def method_names() -> list[str]:
    return [spec.name for spec in list_methods()]


def get_method(name: str) -> MethodSpec:
    _discover()
    if name not in _METHODS:
        raise UnknownMethodError(
            f"unknown method {name!r}; the methods are {', '.join(method_names())}"
        )
    return _METHODS[name]


def default_method() -> str:
    _discover()
    return _DEFAULT[0]


def method_of_config(config: MethodConfig) -> MethodSpec:
    _discover()
    for spec in _METHODS.values():
        if type(config) is spec.config:
            return spec
    raise UnknownMethodError(f"no registered method takes a {type(config).__name__}")
