"""HTTP hardening: a limit on request bodies (413), and CORS closed unless origins are configured."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ired_dcd.settings import Settings


def too_large(limit: int) -> str:
    return f"body: larger than {limit} bytes, this server's limit"


class BodySizeLimit:
    """ASGI middleware: 413 for a body over its path's limit, by its Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, *, limit: int, per_path: Mapping[str, int]) -> None:
        self.app, self.limit, self.per_path = app, limit, dict(per_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.limit)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": too_large(limit)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:  # a chunked body is counted as it arrives
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, limited, send)


def install(app: FastAPI, settings: Settings, *, per_path: Mapping[str, int]) -> None:
    """Add the body limit (`max_request_bytes`, or `per_path`'s) and, for `cors_origins`, CORS."""
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes, per_path=per_path)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
