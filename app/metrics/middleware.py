"""Request counts and latencies, labelled by the route's template (`/api/v1/jobs/{job_id}`), never by the path
a client sent: ids in paths would make a new series per object, and an attacker one per request."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics.series import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "<unmatched>"  # no route took it (a 404 for an unknown path): one series for all of them
# A client may send any token as its method; the others are one series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route that answered, read after the router has written it into the scope."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    mounted = scope.get("root_path", root_path)
    if isinstance(mounted, str) and mounted != root_path:  # a Mount (the static files) moved the root path
        return mounted[len(root_path) :] + "/{path}"
    return UNMATCHED


class RequestMetrics:
    """Outermost middleware: it times everything inside, the 401s and 413s of the other middlewares included.
    An exception that escapes is counted as the 500 the server then sends."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_template(scope, root_path)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_DURATION.labels(self.service, method, route).observe(time.perf_counter() - start)
