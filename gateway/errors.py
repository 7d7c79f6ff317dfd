"""Every error the API returns, in one envelope: ``{"error": {"type", "message", "param"?}}``.

The status and type of each exception come from the one table in ``service.errors``; handlers
are installed for each, and for everything else (a 500 that never shows internals).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    ERROR_TABLE,
    STORE_ERRORS,
    GatewayError,
    describe,
    envelope,
    validation_message,
)

logger = logging.getLogger(__name__)

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


def error_response(
    status: int, type_: str, message: str, param: str | None = None, headers: Any = None
) -> JSONResponse:
    return JSONResponse(envelope(type_, message, param), status_code=status, headers=headers)


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
    message, param = validation_message(errors)
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
    for cls in (*ERROR_TABLE, *STORE_ERRORS):
        app.add_exception_handler(cls, _gateway_error)
    app.add_exception_handler(Exception, _unexpected)
