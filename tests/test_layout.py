"""The layout is the architecture: core/ knows no service, api/ never imports worker/, and a
route is short enough to read as its contract (the work lives in the modules it calls)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "core": {"api", "worker", "service", "cli", "fastapi", "sqlalchemy", "celery", "minio"},
    "api": {"worker", "cli", "celery"},
    "worker": {"api", "cli"},
    "service": {"api", "worker", "cli"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_in_their_room(package: str) -> None:
    offences = {
        str(path.relative_to(REPO)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
    }
    assert {path: names for path, names in offences.items() if names} == {}


def test_no_upload_is_ever_unpickled() -> None:
    for path in REPO.glob("[acsw]*/**/*.py"):
        text = path.read_text()
        assert "weights_only=False" not in text.replace(" ", ""), path
        assert "pickle.load" not in text, path


def test_no_method_is_named_outside_core() -> None:
    """api/, worker/, service/ and cli/ read methods from the registry: a new method is one file
    of core/methods/, never an edit here (no string literal spells a method's name)."""
    from core.method_registry import method_names

    names = set(method_names())
    offences = []
    for package in ("api", "worker", "service", "cli"):
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert offences == []


def test_a_method_module_holds_one_registered_method() -> None:
    from core.method_registry import list_methods

    modules = {
        path.stem for path in (REPO / "core" / "methods").glob("*.py") if path.stem != "__init__"
    }
    registered = {spec.run.__module__.rsplit(".", 1)[1] for spec in list_methods()}
    assert modules == registered


ROUTE_MAX_LINES = 60


def test_every_route_module_function_is_short() -> None:
    long = {}
    for path in sorted((REPO / "api" / "routes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # from `def`, decorators excluded
                if lines > ROUTE_MAX_LINES:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = lines
    assert long == {}
