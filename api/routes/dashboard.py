"""The dashboard: HTML pages served by the API itself, outside the OpenAPI contract.

Each page is a static shell (api/dashboard/pages) whose scripts (api/dashboard/static) call the
public API with the browser's key, so the pages hold no data and need no key to be served; what a
tenant sees is what its key sees. Nothing is loaded from outside the API (the CSP says so).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
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


def page(name: str) -> FileResponse:
    return FileResponse(
        DASHBOARD / "pages" / f"{name}.html",
        media_type="text/html",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/")
def jobs_page() -> FileResponse:
    return page("jobs")


@router.get("/jobs/{job_id}")
def job_page(job_id: str) -> FileResponse:  # the script reads the id from the address
    return page("job")


@router.get("/teachers")
def teachers_page() -> FileResponse:
    return page("teachers")


@router.get("/teachers/{teacher_id}")
def teacher_page(teacher_id: str) -> FileResponse:
    return page("teacher")


@router.get("/datasets")
def datasets_page() -> FileResponse:
    return page("datasets")


@router.get("/compare")
def compare_page() -> FileResponse:
    return page("compare")


def static_files() -> StaticFiles:
    """The pages' scripts, styles and licence, mounted at STATIC_URL (mounts are not in the
    OpenAPI document)."""
    return StaticFiles(directory=DASHBOARD / "static")
