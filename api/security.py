"""HTTP hardening: a limit on request bodies (413), no NUL characters in URLs (422), security headers on
every answer, sign-in forms from this site only (403), and CORS closed unless origins are configured."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ired_dcd.services.errors import Forbidden
from ired_dcd.settings import Settings

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""The dashboard and sign-in pages load their own script and stylesheet and nothing else; the plots are
inline SVG (presentation attributes, no `style`), the favicon a data: URL. No page may be framed."""
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "connect-src 'self'; worker-src blob:; frame-ancestors 'none'; base-uri 'none'"
)
"""FastAPI's /docs (Swagger UI) and /redoc load their bundles from a CDN and start with an inline script."""
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",  # an export is never run as a script or a page
    "x-frame-options": "DENY",  # frame-ancestors for browsers without CSP level 2
    "referrer-policy": "same-origin",
}


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


class SecurityHeaders:
    """ASGI middleware: nosniff, no framing, a same-origin referrer and a Content-Security-Policy on every
    answer (pages, exports, JSON, errors), unless the route set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in DOCS_PATHS else PAGE_CSP

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in {**SECURITY_HEADERS, "content-security-policy": csp}.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def check_same_origin(request: Request) -> None:
    """Forbidden for a form that a page of another site posted (login CSRF: signing a browser in with the
    attacker's token), judged by `Origin`, else `Referer`, against this request's `Host`.

    Browsers send `Origin` with every POST; a request with neither header is not from a web page (curl,
    scripts) and no other site can have made it.
    """
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return
    host = urlsplit(source).netloc if source != "null" else "null"
    if host.lower() != request.headers.get("host", "").lower():
        raise Forbidden(f"origin: a form from {source[:100]!r} cannot post here; use this server's own page")


def install(app: FastAPI, settings: Settings, *, per_path: Mapping[str, int]) -> None:
    """Add the body limit (`max_request_bytes`, or `per_path`'s), the NUL check, the security headers and,
    for `cors_origins`, CORS."""
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes, per_path=per_path)
    app.add_middleware(RefuseNul)
    app.add_middleware(SecurityHeaders)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
