"""The dashboard's pages as files (no browser): each served with its CSP, outside the OpenAPI
document, and every script and stylesheet they load comes from the API itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routes.dashboard import DASHBOARD, STATIC_URL

PAGES = ["/", "/jobs/job_123", "/teachers", "/teachers/tch_123", "/datasets", "/compare?jobs=a,b"]


@pytest.mark.parametrize("path", PAGES)
def test_each_page_is_html_under_a_same_origin_policy(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        if asset.startswith(("data:", "#")) or asset == "/docs":
            continue
        assert asset.startswith(STATIC_URL), f"{path} loads {asset} from outside the dashboard"
        assert client.get(asset).status_code == 200, asset


def test_the_pages_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [
        p
        for p in paths
        if not p.startswith("/v1/") and p not in {"/healthz", "/readyz", "/metrics"}
    ]
    assert client.post("/").status_code == 405  # an HTML page, not a resource that takes bodies


def test_every_module_a_script_imports_is_served(client: TestClient) -> None:
    scripts = sorted((DASHBOARD / "static").glob("*.js"))
    assert scripts
    for script in scripts:
        for module in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert (DASHBOARD / "static" / module).is_file(), f"{script.name} imports {module}"
        assert client.get(f"{STATIC_URL}/{script.name}").status_code == 200


def test_nothing_is_fetched_from_the_internet() -> None:
    """No CDN, font or script address in any page, script or stylesheet (air-gapped sites)."""
    files = [*DASHBOARD.rglob("*.html"), *DASHBOARD.rglob("*.js"), *DASHBOARD.rglob("*.css")]
    addresses = {
        f"{path.relative_to(DASHBOARD)}: {url}"
        for path in files
        for url in re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"')]*", path.read_text())
        if "www.w3.org/2000/svg" not in url  # the SVG namespace is a name, never fetched
    }
    assert addresses == set()


def test_the_package_ships_the_dashboard() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"dashboard/pages/*.html", "dashboard/static/*"' in pyproject
