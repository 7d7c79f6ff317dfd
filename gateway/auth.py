"""Bearer-key authentication and per-key rate limits: a pure ASGI middleware in front of every
route, so a new route is protected without doing anything; only the paths in ``PUBLIC_PATHS``
(and the dashboard's) are open.

Keys are looked up by the id they carry and compared by SHA-256 hash in constant time
(``service.store.api_keys``); a verified key is kept for ``auth_cache_ttl_s`` (default 2 s), so
revoking it from another process (the CLI, a second gateway) takes effect within that time, and at
once on the gateway that revoked it. A middleware rather than a global dependency: it runs before
routing and costs no dependency resolution on every request.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import exception_response
from service.errors import Forbidden, RateLimited, Unauthorized
from service.settings import Settings
from service.store import ApiKey, Store

PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
PUBLIC_PREFIXES = ("/dashboard",)
MAX_TOKEN_CHARS = 512
STATE_KEY = "api_key"  # where the verified key waits in the request's state
SECURITY_SCHEME = "BearerKey"
WS_POLICY_VIOLATION = 1008  # the close code for a websocket refused for its credentials


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def verify(store: Store, settings: Settings, token: str | None) -> ApiKey:
    """The caller's key. ``Unauthorized`` (401) without a valid one, ``RateLimited`` (429) over
    its rate."""
    if token is None:
        raise Unauthorized()
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("the API key is not valid")
    key = await store.api_keys.authenticate(token, settings.auth_cache_ttl_s)
    if key is None:
        raise Unauthorized("the API key is not valid")
    if not await store.api_keys.rate_limits.allow(key.id, key.rate_limit_per_minute):
        retry_after = max(1, 60 - int(time.time()) % 60)
        raise RateLimited(
            f"rate limit exceeded: {key.rate_limit_per_minute} requests a minute for this key; "
            f"retry in {retry_after} s",
            retry_after_s=retry_after,
        )
    return key


class AuthMiddleware:
    """Every HTTP request (and websocket) to a non-public path needs a valid key under its rate
    limit; the key is left in the request's state for ``CurrentKey``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        try:
            key = await verify(services.store, services.settings, bearer_token(scope))
        except Exception as exc:  # every failure answers in the envelope, as a route would
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION})
                return
            await exception_response(exc, scope["method"], scope["path"])(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = key
        await self.app(scope, receive, send)


def key_of(request: Request) -> ApiKey:
    """The key ``AuthMiddleware`` verified for this request."""
    key: ApiKey | None = request.scope.get("state", {}).get(STATE_KEY)
    if key is None:  # only a public route could get here, and public routes do not ask
        raise Unauthorized()
    return key


async def current_key(request: Request) -> ApiKey:
    return key_of(request)


async def admin_key(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    if not key.admin:
        raise Forbidden("this route needs an admin key")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]


def document_security(app: FastAPI) -> None:
    """Declare the bearer key in the OpenAPI schema on every non-public operation, as the
    middleware enforces it (a dependency would declare it, at a cost on every request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # FastAPI's own schema, which it also keeps on app.openapi_schema
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key: Authorization: Bearer <key>",
        }
        for path, operations in schema.get("paths", {}).items():
            if is_public(path):
                continue
            for operation in operations.values():
                operation["security"] = [{SECURITY_SCHEME: []}]
                if "ErrorEnvelope" in components.get("schemas", {}):
                    operation.setdefault("responses", {}).setdefault("401", _UNAUTHORIZED)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_UNAUTHORIZED = {
    "description": "no valid API key",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
}
