"""Security headers on every response, and a Content-Security-Policy on the HTML ones (the web UI).

A pure ASGI middleware, not Starlette's BaseHTTPMiddleware: that one buffers nothing but runs the app in a
separate task, which breaks the event streams' disconnect handling; this one only edits the
`http.response.start` message as it passes.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The UI is served from this origin only: no inline script or style, no framing, forms post back here.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)

# FastAPI's /docs (Swagger UI) and /redoc pages start their bundle with an inline script and load it, its
# stylesheet and fonts from public CDNs. With the UI's policy they would render blank even where the CDN is
# reachable, so these three pages (which show only the OpenAPI document, no user data) get a policy that
# allows exactly those sources; everything else about them stays locked (no framing, no plugins).
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)

ALWAYS = (("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin"))


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope.get("path") in DOCS_PATHS else UI_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS:
                    headers[name] = value
                if headers.get("content-type", "").lower().startswith("text/html"):
                    headers.setdefault("content-security-policy", csp)
                    headers.setdefault("x-frame-options", "DENY")
            await send(message)

        await self.app(scope, receive, send_with_headers)
