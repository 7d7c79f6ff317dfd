"""Every error the API returns, in one envelope: ``{"error": {"type", "message", "param"?}}``.

``ERROR_TABLE`` is the one place that maps an exception class to its status code and type;
handlers are installed for each, and for everything else (a 500 that never shows internals).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.metering import CostCapReached
from protocols.base import ContextOverflowError
from protocols.documents import DocumentError
from workers.engines.errors import (
    EngineCapabilityError,
    EngineConfigError,
    EngineError,
    EngineTimeoutError,
)

logger = logging.getLogger(__name__)


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
    DocumentError: (422, "invalid_document"),
    ContextOverflowError: (422, "context_overflow"),
    EngineConfigError: (500, "engine_config_error"),
    EngineCapabilityError: (422, "engine_capability_error"),
    EngineTimeoutError: (504, "engine_timeout"),
    EngineError: (502, "engine_error"),
    ValidationError: (422, "invalid_request"),
}

_STATUS_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def envelope(type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if param is not None:
        error["param"] = param
    return {"error": error}


def error_response(
    status: int, type_: str, message: str, param: str | None = None, headers: Any = None
) -> JSONResponse:
    return JSONResponse(envelope(type_, message, param), status_code=status, headers=headers)


def describe(exc: Exception) -> tuple[int, str, str, str | None]:
    """(status, type, message, param) for any exception, from the table."""
    if isinstance(exc, GatewayError):
        return exc.status_code, exc.type, exc.message, exc.param
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return 503, "unavailable", "the task store is unreachable; retry shortly", None
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            status, type_ = ERROR_TABLE[cls]
            param = getattr(exc, "field", None)
            if isinstance(exc, ValidationError):
                return status, type_, *_validation_message(exc.errors())
            return status, type_, str(exc), param
    return 500, "internal_error", "internal error; the details are in the gateway log", None


def short_message(exc: Exception) -> str:
    """A validation error in one line, without echoing the input."""
    if isinstance(exc, ValidationError):
        return _validation_message(exc.errors(include_input=False))[0]
    return str(exc)


def _location(loc: Any) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts)


def _validation_message(errors: Any) -> tuple[str, str | None]:
    errors = list(errors)
    lines = []
    for error in errors[:5]:
        where = _location(error.get("loc", ()))
        lines.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    first = _location(errors[0].get("loc", ())) if errors else ""
    return "; ".join(lines) or "invalid request", first or None


def exception_response(exc: Exception, method: str, path: str) -> JSONResponse:
    """The envelope for ``exc``; a 5xx is logged (by type and route, never with the input)."""
    status, type_, message, param = describe(exc)
    headers = exc.headers if isinstance(exc, GatewayError) else None
    if status >= 500:
        if status == 500:
            logger.error("%s %s failed", method, path, exc_info=exc)
        else:
            logger.error("%s %s failed: %s", method, path, type(exc).__name__)
    return error_response(status, type_, message, param, headers)


async def _gateway_error(request: Request, exc: Exception) -> JSONResponse:
    return exception_response(exc, request.method, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "invalid_json", "the body is not valid JSON")
    message, param = _validation_message(errors)
    return error_response(422, "invalid_request", message, param)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = _STATUS_TYPES.get(exc.status_code, "error")
    return error_response(exc.status_code, type_, str(exc.detail), None, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return exception_response(exc, request.method, request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for cls in ERROR_TABLE:
        app.add_exception_handler(cls, _gateway_error)
    app.add_exception_handler(Exception, _unexpected)
