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
