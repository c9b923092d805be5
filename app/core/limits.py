"""What a request may cost before a handler sees it: its body is bounded per route while it streams in (only a
dataset upload may be gigabytes), and a presented API key is checked before any byte of the body is read."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PayloadTooLarge, Unauthorized, problem_response
from app.keys.service import Principal

# Where KeyBeforeBody leaves the principal it checked, so that the route's dependency need not look it up again.
PRINCIPAL_STATE = "samtune.principal"


@dataclass(frozen=True)
class BodyLimit:
    """Bodies of requests whose path matches `pattern` may be `max_bytes` long; `setting` names the knob."""

    pattern: str
    max_bytes: int
    setting: str

    def matches(self, path: str) -> bool:
        return re.fullmatch(self.pattern, path) is not None


class BodyTooLarge(PayloadTooLarge, HTTPException):
    """Raised from inside `receive`, where FastAPI's body parsing would turn any other error into a 400 ("There
    was an error parsing the body"): it lets HTTPExceptions through, and the AppError handler (first in the MRO)
    renders it as the 413 problem it is."""

    def __init__(self, limit: BodyLimit) -> None:
        PayloadTooLarge.__init__(
            self,
            f"the request body is larger than the limit of {limit.max_bytes} bytes for this route ({limit.setting})",
            title="Request body too large",
        )
        self.status_code = 413
        self.headers = None


class BodySizeLimit:
    """The first of `routes` whose pattern matches the path sets the limit; else `default`. A declared length
    over it is refused before the body is read; a chunked body (or one that lied) is cut off where it passes."""

    def __init__(self, app: ASGIApp, default: BodyLimit, routes: Sequence[BodyLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.routes = tuple(routes)

    def limit_for(self, path: str) -> BodyLimit:
        return next((r for r in self.routes if r.matches(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit.max_bytes:
            # Refuse at once: no byte of the body is read.
            await problem_response(BodyTooLarge(limit))(scope, receive, _closing(send))
            return

        received = 0
        ended = not _has_body(scope)

        async def counting_receive() -> Message:
            nonlocal received, ended
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if received > limit.max_bytes:
                    # Stop reading here. The handler sees the error while parsing; a spooled temp file is dropped.
                    raise BodyTooLarge(limit)
            return message

        async def closing_if_unread(message: Message) -> None:
            # An answer sent before the body was read (a 401 from a route's own check, a 413): without this the
            # server would go on reading the rest of the body, to discard it, to keep the connection alive.
            await (send if ended else _closing(send))(message)

        await self.app(scope, counting_receive, closing_if_unread)


def _closing(send: Send) -> Send:
    """`send`, with the answer saying `Connection: close`: the server then stops reading the request's body."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return closing


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length")
    return b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))


class KeyBeforeBody:
    """A request with a body that presents an API key (Bearer header or ?api_key=) has the key checked first: a
    wrong key is a 401 before any of the body is read, so an upload with a bad key costs its sender, not the
    server. `authenticate(request, key)` is blocking (the database); it runs on the thread pool. Requests
    without a key, or with Roboflow's key inside a JSON body, are left to the route (their body limit bounds
    what is read before it checks)."""

    def __init__(self, app: ASGIApp, presented: Callable[[Request], str | None],
                 authenticate: Callable[[Request, str], Principal]) -> None:  # fmt: skip
        self.app = app
        self.presented = presented
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        key = self.presented(request)
        if key is not None:
            try:
                principal = await run_in_threadpool(self.authenticate, request, key)
            except Unauthorized as exc:
                await problem_response(exc, request)(scope, receive, _closing(send))
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = (key, principal)
        await self.app(scope, receive, send)
