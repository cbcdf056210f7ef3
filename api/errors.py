"""One error shape for every failure: {"error": {"code", "message"}} with the right status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _location(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "request"


def _plain(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "loc": [str(p) for p in error.get("loc", ())],
        "msg": str(error.get("msg")),
        "type": str(error.get("type")),
    }


RESOURCE_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HTTP_ERROR_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        response = error_response(error.status, error.code, error.message, error.details)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = list(error.errors())
        message = "; ".join(f"{_location(p)}: {p.get('msg')}" for p in problems[:10])
        return error_response(422, "validation_error", message, [_plain(p) for p in problems])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_ERROR_CODES.get(error.status_code, "http_error")
        message = str(error.detail)
        headers = dict(error.headers or {})
        if error.status_code == 400:  # the body could not be parsed at all (e.g. broken multipart)
            message = f"the request body could not be parsed: {message}"
        if error.status_code == 405:  # RFC 9110: `Allow` names every method of the resource
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(error.status_code, code, message, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods some route serves at this path (the router's own 405 names only the methods
    of the first route that matched the path: one of several)."""
    routes = request.app.router.routes
    return [
        method
        for method in RESOURCE_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]
