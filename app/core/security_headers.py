"""Security headers on every response, and a Content-Security-Policy on the HTML ones (the web UI).

A pure ASGI middleware, not Starlette's BaseHTTPMiddleware: that one buffers nothing but runs the app in a
separate task, which breaks the event streams' disconnect handling; this one only edits the
`http.response.start` message as it passes.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The UI (and the API reference at /docs) is served from this origin only: no inline script or style, no
# framing, forms post back here.
UI_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)

ALWAYS = (("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin"))


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS:
                    headers[name] = value
                if headers.get("content-type", "").lower().startswith("text/html"):
                    headers.setdefault("content-security-policy", UI_CSP)
                    headers.setdefault("x-frame-options", "DENY")
            await send(message)

        await self.app(scope, receive, send_with_headers)
