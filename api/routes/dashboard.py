"""The dashboard: HTML pages served by the API itself, outside the OpenAPI contract.

Each page is the one shell (api/dashboard/pages/shell.html) with its title and script, whose scripts (api/dashboard/static) call the
public API with the browser's key, so the pages hold no data and need no key to be served; what a
tenant sees is what its key sees. Nothing is loaded from outside the API (the CSP says so).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard"
STATIC_URL = "/ui-static"
# Only the API's own origin: no CDN, font or script from elsewhere can load, even by mistake.
# Images also come from blob: URLs (sample grids are fetched with the key, then shown).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@cache
def shell() -> str:
    return (DASHBOARD / "pages" / "shell.html").read_text()


def page(script: str, title: str) -> HTMLResponse:
    """The shell with its title and the script (api/dashboard/static/<script>.js) that fills it."""
    return HTMLResponse(
        shell().format(title=title, script=script),
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/")
def jobs_page() -> HTMLResponse:
    return page("jobs", "Jobs")


@router.get("/jobs/{job_id}")
def job_page(job_id: str) -> HTMLResponse:  # the script reads the id from the address
    return page("job", "Job")


@router.get("/teachers")
def teachers_page() -> HTMLResponse:
    return page("teachers", "Teachers")


@router.get("/teachers/{teacher_id}")
def teacher_page(teacher_id: str) -> HTMLResponse:
    return page("teacher", "Teacher")


@router.get("/datasets")
def datasets_page() -> HTMLResponse:
    return page("datasets", "Datasets")


@router.get("/compare")
def compare_page() -> HTMLResponse:
    return page("compare", "Compare")


def static_files() -> StaticFiles:
    """The pages' scripts, styles and licence, mounted at STATIC_URL (mounts are not in the
    OpenAPI document)."""
    return StaticFiles(directory=DASHBOARD / "static")
