"""Bearer-key authentication and per-key rate limits, applied to every route by default.

The app installs ``authenticate`` as a global dependency, so a new route is protected without
doing anything; only the paths in ``PUBLIC_PATHS`` are open. Keys are looked up by the id they
carry and compared by SHA-256 hash in constant time (``gateway.store.api_keys``); a verified key
is kept for ``auth_cache_ttl_s`` (default 2 s), so revoking it from another process (the CLI, a
second gateway) takes effect within that time, and at once on the gateway that revoked it.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import Forbidden, RateLimited, Unauthorized
from gateway.settings import Settings
from gateway.store import ApiKey, Store

PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
MAX_TOKEN_CHARS = 512

bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")


def _is_public(request: Request) -> bool:
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    return path in PUBLIC_PATHS or path.startswith("/dashboard")


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKey | None:
    """The caller's key (None on public routes). 401 without a valid key, 429 over its rate."""
    if _is_public(request):
        return None
    if credentials is None or not credentials.credentials:
        raise Unauthorized()
    token = credentials.credentials
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("the API key is not valid")
    store: Store = request.app.state.store
    settings: Settings = request.app.state.settings
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
    request.state.api_key = key
    return key


async def current_key(key: Annotated[ApiKey | None, Depends(authenticate)]) -> ApiKey:
    if key is None:  # only a public route could get here, and public routes do not ask
        raise Unauthorized()
    return key


async def admin_key(key: Annotated[ApiKey, Depends(current_key)]) -> ApiKey:
    if not key.admin:
        raise Forbidden("this route needs an admin key")
    return key


CurrentKey = Annotated[ApiKey, Depends(current_key)]
AdminKey = Annotated[ApiKey, Depends(admin_key)]
