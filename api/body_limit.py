"""A request-body size cap enforced while the body arrives, not after it has been parsed.

Starlette's multipart parser spools a whole upload to disk before a route runs, FastAPI reads a
JSON body whole before the route's dependencies run, and a chunked request (no Content-Length)
declares no size to check up front: without this middleware a client could fill the disk or the
API's memory with one request. This counts the body's bytes as they arrive and answers 413 as
soon as they pass the cap of the route: the upload cap (`upload_too_large`) on the routes that take
files, the small body cap (`body_too_large`, DFKD_MAX_BODY_BYTES) everywhere else. The route never
sees the rest.
"""

from __future__ import annotations

from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def takes_files(route: object) -> bool:
    """A route whose body is a multipart form (FastAPI's File is a kind of Form)."""
    return (
        isinstance(route, APIRoute)
        and route.body_field is not None
        and isinstance(route.body_field.field_info, params.Form)
    )


class BodySizeLimit:
    """Caps every request body: `upload_limit` bytes (the upload cap plus multipart framing) on
    routes that take files, `body_limit` on the others."""

    def __init__(self, app: ASGIApp, upload_limit: int, body_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit
        self.body_limit = body_limit

    def _too_large(self, upload: bool) -> JSONResponse:
        if upload:
            return error_response(
                413,
                "upload_too_large",
                f"the request body is larger than the {self.upload_limit} byte limit "
                "(the upload size limit plus room for the multipart form around the file)",
            )
        return error_response(
            413,
            "body_too_large",
            f"the request body is larger than the {self.body_limit} byte limit for bodies "
            "other than uploads (DFKD_MAX_BODY_BYTES)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        received = 0
        refused = False
        started = False
        limit: int | None = None

        async def refuse(upload: bool) -> Message:
            nonlocal refused
            refused = True
            if not started:
                await self._too_large(upload)(scope, receive, send)
            # the app sees a client that went away: it stops reading and cleans up
            return {"type": "http.disconnect"}

        async def counted_receive() -> Message:
            nonlocal received, limit
            if refused:
                return {"type": "http.disconnect"}
            # the body is first read once the request is routed: the route says which cap holds
            upload = takes_files(scope.get("route"))
            if limit is None:
                limit = self.upload_limit if upload else self.body_limit
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    return await refuse(upload)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    return await refuse(upload)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 already answered the request
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except ClientDisconnect:
            if not refused:
                raise
