"""HTTP hardening: a limit on request bodies (413), no NUL characters in URLs (422), and CORS closed
unless origins are configured."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote

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


class RefuseNul:
    """ASGI middleware: 422 for a NUL character in the path or a query parameter, naming where.

    No value of this API may hold one, and Postgres cannot store one in text: refused here, a NUL
    never reaches a query as a database error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = self._nul_in(scope["path"], scope["query_string"].decode("latin-1"))
            if where is not None:
                detail = f"{where}: NUL characters are not accepted"
                await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _nul_in(path: str, query: str) -> str | None:
        if "\x00" in path:
            return "path"
        if "\x00" not in unquote(query):
            return None
        pairs = parse_qsl(query, keep_blank_values=True)
        return next((name for name, value in pairs if "\x00" in name + value), "query")


def install(app: FastAPI, settings: Settings, *, per_path: Mapping[str, int]) -> None:
    """Add the body limit (`max_request_bytes`, or `per_path`'s), the NUL check and, for `cors_origins`, CORS."""
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes, per_path=per_path)
    app.add_middleware(RefuseNul)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
