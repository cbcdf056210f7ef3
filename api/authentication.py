"""Who is calling: an API key's tenant, or the default tenant on an open deployment.

Also checked before a request body is read: FastAPI parses a route's body before it solves the
route's dependencies, so without `KeyBeforeBody` a caller without a key could make the API read
and parse a whole body (on the event loop) only to be told 401 afterwards.
"""

from __future__ import annotations

import anyio
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, error_response
from service.auth import tenant_for_key
from service.models import DEFAULT_TENANT

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def missing_key() -> ApiError:
    return ApiError(
        401,
        "missing_api_key",
        "send `Authorization: Bearer <key>`; keys come from `dfkd keys create`",
    )


def invalid_key() -> ApiError:
    return ApiError(401, "invalid_api_key", "the API key is unknown or revoked")


def tenant_of(session: Session, secret: str | None, require_keys: bool) -> str:
    """The caller's tenant. Without a key: the default tenant on an open deployment, else 401."""
    if secret is None:
        if require_keys:
            raise missing_key()
        return DEFAULT_TENANT
    tenant = tenant_for_key(session, secret)
    if tenant is None:
        raise invalid_key()
    return tenant


def bearer_secret(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, as FastAPI's HTTPBearer reads it."""
    scheme, secret = get_authorization_scheme_param(authorization)
    return secret if authorization and scheme.lower() == "bearer" and secret else None


class KeyBeforeBody:
    """Where keys are required, a request with a body and without a valid key gets its 401 before
    a byte of the body is read."""

    def __init__(self, app: ASGIApp, sessions: sessionmaker[Session], require_keys: bool) -> None:
        self.app = app
        self.sessions = sessions
        self.require_keys = require_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.require_keys or scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        secret = bearer_secret(header.decode("latin-1") if header is not None else None)

        def check() -> None:
            with self.sessions() as session:
                tenant_of(session, secret, require_keys=True)

        try:
            await anyio.to_thread.run_sync(check)
        except ApiError as refusal:
            response = error_response(refusal.status, refusal.code, refusal.message)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
