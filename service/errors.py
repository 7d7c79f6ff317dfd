"""The errors a service raises, each with a message safe to show a client, and the one table
that maps every exception class to its status code and type (``describe``).

The HTTP layer (``gateway.errors``) turns them into responses; the task service uses the same
table to record why a task failed.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engines.errors import (
    EngineCapabilityError,
    EngineConfigError,
    EngineError,
    EngineTimeoutError,
)
from protocols.base import ContextOverflowError
from protocols.documents import DocumentError, DocumentTooCostly
from service.metering import CostCapReached


class GatewayError(Exception):
    """An error with a message safe to show to the client."""

    status_code = 400
    type = "invalid_request"

    def __init__(
        self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    status_code, type = 422, "invalid_request"


class Unauthorized(GatewayError):
    status_code, type = 401, "unauthorized"

    def __init__(self, message: str = "a valid API key is required: Authorization: Bearer <key>"):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(GatewayError):
    status_code, type = 403, "forbidden"


class NotFound(GatewayError):
    status_code, type = 404, "not_found"


class ModelNotFound(GatewayError):
    status_code, type = 404, "model_not_found"


class Conflict(GatewayError):
    status_code, type = 409, "conflict"


class BudgetExceeded(GatewayError):
    status_code, type = 402, "budget_exceeded"


class PayloadTooLarge(GatewayError):
    status_code, type = 413, "payload_too_large"


class RateLimited(GatewayError):
    status_code, type = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class QueueFull(RateLimited):
    """Too many tasks wait in the queue (``MGW_MAX_QUEUED_TASKS``): back off and retry."""

    type = "queue_full"


class ServiceUnavailable(GatewayError):
    status_code, type = 503, "unavailable"


# exception class -> (status, type). GatewayError subclasses carry their own.
ERROR_TABLE: dict[type[Exception], tuple[int, str]] = {
    CostCapReached: (402, "cost_cap_reached"),
    DocumentTooCostly: (413, "payload_too_large"),
    DocumentError: (422, "invalid_document"),
    ContextOverflowError: (422, "context_overflow"),
    EngineConfigError: (500, "engine_config_error"),
    EngineCapabilityError: (422, "engine_capability_error"),
    EngineTimeoutError: (504, "engine_timeout"),
    EngineError: (502, "engine_error"),
    ValidationError: (422, "invalid_request"),
}
# Redis failures reaching a route: answered in the envelope by ``describe`` (503, or 507 when the
# store is full), each with a handler of its own so the keep-alive connection is kept (the
# catch-all handler of the framework re-raises after answering, which drops the connection).
STORE_ERRORS: tuple[type[Exception], ...] = (RedisError,)


STORE_FULL = (
    "the gateway's store is full (its Redis reached maxmemory): nothing was written; finished "
    "tasks and unused documents expire, or delete some (DELETE /v1/documents/{id}, DELETE "
    "/v1/tasks/{id}?purge=true), or ask the operator for more memory"
)


def store_is_full(exc: BaseException) -> bool:
    """Redis refused a write at maxmemory (noeviction): directly, or inside a script."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)
    )


def envelope(type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The body of every error: ``{"error": {"type", "message", "param"?}}``."""
    error: dict[str, Any] = {"type": type_, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def describe(exc: Exception) -> tuple[int, str, str, str | None]:
    """(status, type, message, param) for any exception, from the table."""
    if isinstance(exc, GatewayError):
        return exc.status_code, exc.type, exc.message, exc.param
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return 503, "unavailable", "the task store is unreachable; retry shortly", None
    if store_is_full(exc):
        return 507, "insufficient_storage", STORE_FULL, None
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            status, type_ = ERROR_TABLE[cls]
            param = getattr(exc, "field", None)
            if isinstance(exc, ValidationError):
                return status, type_, *validation_message(exc.errors())
            return status, type_, str(exc), param
    return 500, "internal_error", "internal error; the details are in the gateway log", None


def short_message(exc: Exception) -> str:
    """A validation error in one line, without echoing the input."""
    if isinstance(exc, ValidationError):
        return validation_message(exc.errors(include_input=False))[0]
    return str(exc)


def _location(loc: Any) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts)


def validation_message(errors: Any) -> tuple[str, str | None]:
    errors = list(errors)
    lines = []
    for error in errors[:5]:
        where = _location(error.get("loc", ()))
        lines.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    first = _location(errors[0].get("loc", ())) if errors else ""
    return "; ".join(lines) or "invalid request", first or None
