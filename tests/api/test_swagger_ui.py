"""Swagger UI at /docs, rendered by a real headless Chromium: every operation shows up.

Swagger UI's JavaScript and CSS must come from the API itself (files shipped in a wheel), not from
a CDN: the docs have to work on a machine without internet access, as these tests do. Chromium is
Debian's package (`make browser`, a prerequisite of `make test`, installs it when absent).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.processes import embedded_env, start_api, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 2400
METHODS = ("get", "put", "post", "delete", "patch")
# Swagger UI's colours for GET and POST operation blocks: present only when its CSS was applied
GET_BLUE, POST_GREEN = (97, 175, 254), (73, 204, 144)


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    env = embedded_env(tmp_path / "data")
    process, base_url = start_api(env, tmp_path / "serve.log")
    try:
        yield base_url
    finally:
        stop(process)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed: `make browser` installs Debian's package")
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def has_colour(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    colours = image.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT) or []
    return any(
        max(abs(channel - wanted) for channel, wanted in zip(rgb, colour, strict=True)) <= tolerance
        for _, rgb in colours
    )


def test_swagger_ui_renders_every_operation(tmp_path: Path, base_url: str) -> None:
    schema = httpx.get(f"{base_url}/openapi.json", timeout=10).json()
    operations = {
        (method, path, operation["operationId"], operation["summary"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }
    assert {path for _, path, _, _ in operations} >= {"/v1/teachers", "/v1/jobs"}

    # the page's scripts and stylesheets are served by the API, not fetched from a CDN
    page = httpx.get(f"{base_url}/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page.text)
    assert any(asset.endswith(".js") for asset in assets), page.text
    assert any(asset.endswith(".css") for asset in assets), page.text
    for asset in assets:
        assert asset.startswith("/"), f"/docs loads {asset} from outside the API"
        assert httpx.get(f"{base_url}{asset}", timeout=10).status_code == 200, asset

    # 1. a screenshot of the rendered page: a real image, styled by Swagger UI's CSS
    png = tmp_path / "docs.png"
    chromium(
        tmp_path,
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        "--virtual-time-budget=10000",
        f"{base_url}/docs",
    )
    assert png.is_file()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
        assert has_colour(image, GET_BLUE) and has_colour(image, POST_GREEN), (
            "no GET/POST operation colours: Swagger UI did not render (or its CSS did not load)"
        )

    # 2. the DOM after Swagger UI ran: one operation block per operation in the schema
    dom = html.unescape(
        chromium(tmp_path, "--dump-dom", "--virtual-time-budget=10000", f"{base_url}/docs").stdout
    )
    assert 'id="swagger-ui"' in dom and "opblock" in dom, dom[-3000:]
    blocks = re.findall(r'class="opblock opblock-(\w+)', dom)
    assert sorted(blocks) == sorted(method for method, _, _, _ in operations), blocks
    rendered_paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert rendered_paths == {path for _, path, _, _ in operations}
    assert {"/v1/teachers", "/v1/jobs", "/v1/jobs/{job_id}/student"} <= rendered_paths
    # deep links are #/<tag>/<operationId>
    rendered_ids = set(re.findall(r'href="#/[^/"]+/([^"]+)"', dom))
    assert {operation_id for _, _, operation_id, _ in operations} <= rendered_ids
    summaries = re.findall(r'class="opblock-summary-description">([^<]*)<', dom)
    assert sorted(summaries) == sorted(summary for _, _, _, summary in operations)
    assert "Upload a teacher (safetensors weights of a named architecture, or an ONNX graph)" in (
        summaries
    )
    assert "Start a distillation job" in summaries
