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

from core.messages import MAX_DETAIL_CHARS, bounded


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Every error answer passes here: messages and details are cut to a bounded length, so no
    answer repeats more than a few hundred bytes of what the client sent."""
    body = ErrorResponse(
        error=ErrorBody(
            code=code,
            message=bounded(message),
            details=None if details is None else _bounded_details(details),
        )
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


MAX_DETAILS = 20


def _bounded_details(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return bounded(value, MAX_DETAIL_CHARS)
        if isinstance(value, list):
            return [cut(item) for item in value[:MAX_DETAILS]]
        return value

    return [{key: cut(value) for key, value in item.items()} for item in details[:MAX_DETAILS]]


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
        response = error_response(
            error.status, error.code, error.message, error.details, headers=error.headers
        )
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
        if error.status_code == 400 and isinstance(error.__cause__, RecursionError):
            # FastAPI's JSON parse gave up on nesting deeper than Python's recursion limit
            return error_response(
                422,
                "json_too_deep",
                "the JSON body nests lists and objects too deeply to be read",
            )
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
