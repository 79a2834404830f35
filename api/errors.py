"""One error body everywhere: `{"detail": "field: message"}`, and no stack trace for users."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from ired_dcd.services.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    ServiceError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

STATUS: dict[type[ServiceError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    InvalidInput: 422,
    Conflict: 409,
    QuotaExceeded: 429,
    Unavailable: 503,
}
CHALLENGE = {"WWW-Authenticate": "Bearer"}
LOCATIONS = {"body", "query", "path", "header", "cookie"}


def validation_message(errors: Sequence[Any]) -> str:
    """Pydantic errors as `field: message; …`, one entry per field (the first error of a union)."""
    parts: dict[str, str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if str(part) not in LOCATIONS]
        field = loc[0] if loc else "body"
        message = error.get("msg", "invalid")
        if error.get("type") == "value_error":  # our own validators: their message, without "Value error, "
            message = str(error["ctx"]["error"])
        parts.setdefault(field, f"{'.'.join(loc) or 'body'}: {message}")
    return "; ".join(parts.values())


def wants_page(request: Request) -> bool:
    """A browser navigating (GET, asking for HTML) rather than an API client."""
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
        if status == 401 and wants_page(request):
            return RedirectResponse("/login", status_code=303)
        headers = CHALLENGE if status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error (details are in the server log)"}, 500)
