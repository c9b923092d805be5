"""What a request may cost before a handler sees it: its body is bounded per route while it streams in (only a
dataset upload may be gigabytes), a presented API key is checked before any byte of the body is read, and so is
the key's rate limit on uploads, jobs and predictions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PayloadTooLarge, Unauthorized, problem_response
from app.core.rate_limits import Bucket, RateLimited, RateLimiter, Verdict, bucket_for
from app.keys.service import Principal
from app.ui import session as ui_session

# Where KeyBeforeBody leaves the principal it checked, so that the route's dependency need not look it up again.
PRINCIPAL_STATE = "samtune.principal"


def checked_principal(scope: Scope, key: str | None) -> Principal | None:
    """The principal a middleware already checked for this very `key` in this request, if one did."""
    checked = scope.get("state", {}).get(PRINCIPAL_STATE)
    if key is not None and checked is not None and checked[0] == key:
        principal: Principal = checked[1]
        return principal
    return None


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
    server. `authenticate(request, key)` answers the key's principal (app/core/deps.authenticate_key). Requests
    without a key, or with Roboflow's key inside a JSON body, are left to the route (their body limit bounds
    what is read before it checks)."""

    def __init__(self, app: ASGIApp, presented: Callable[[Request], str | None],
                 authenticate: Callable[[Request, str], Awaitable[Principal]]) -> None:  # fmt: skip
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
                principal = await self.authenticate(request, key)
            except Unauthorized as exc:
                await problem_response(exc, request)(scope, receive, _closing(send))
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = (key, principal)
        await self.app(scope, receive, send)


# Where RateLimitBeforeBody leaves a rate-limited request's bucket and what it counted, for the routes that find
# their caller's key in the body (`charge_after_body`) and for the answer's headers.
RATE_LIMIT_STATE = "samtune.rate_limit"


@dataclass
class _Charge:
    limiter: RateLimiter
    bucket: Bucket
    counted: bool = False
    verdict: Verdict | None = None


class RateLimitBeforeBody:
    """Counts a request to a rate-limited route (app/core/rate_limits.bucket_for) against its caller's key
    before any of its body is read; over the rate it is a 429 with Retry-After, and the connection is closed so
    that the server does not read the rest of an upload either. The caller is the key KeyBeforeBody checked (it
    runs first), a key presented on a request without a body (checked here), or the key a web UI session was
    signed in with. A request whose key is inside its JSON body (Roboflow's /infer and /model/add) is counted by
    its route once the body is read: `charge_after_body`. Without a caller, nothing is counted: the route
    answers 401."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, presented: Callable[[Request], str | None],
                 authenticate: Callable[[Request, str], Awaitable[Principal]]) -> None:  # fmt: skip
        self.app = app
        self.limiter = limiter
        self.presented = presented
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        bucket = None
        if scope["type"] == "http" and self.limiter.enabled:
            bucket = bucket_for(scope["method"], scope["path"])
        if bucket is None or bucket not in self.limiter.rates:
            await self.app(scope, receive, send)
            return
        charge = _Charge(self.limiter, bucket)
        scope.setdefault("state", {})[RATE_LIMIT_STATE] = charge
        send = _with_rate_limit_headers(send, charge)
        key_id = await self._caller(scope)
        if key_id is not None:
            charge.counted = True
            charge.verdict = await self.limiter.hit(bucket, key_id.hex)
            if charge.verdict is not None and not charge.verdict.allowed:
                answer = problem_response(RateLimited(charge.verdict), Request(scope))
                await answer(scope, receive, _closing(send) if _has_body(scope) else send)
                return
        await self.app(scope, receive, send)

    async def _caller(self, scope: Scope) -> uuid.UUID | None:
        request = Request(scope)
        key = self.presented(request)
        checked = checked_principal(scope, key)
        if checked is not None:
            return checked.key_id
        if key is not None:
            try:
                principal = await self.authenticate(request, key)
            except Unauthorized:
                return None  # the route says so
            scope["state"][PRINCIPAL_STATE] = (key, principal)
            return principal.key_id
        cookie = request.cookies.get(ui_session.SESSION_COOKIE)
        if cookie:
            # The signature is enough to know whose session it is; the route checks it was not signed out.
            return ui_session.session_key_id(request.app.state.settings.signing_key, cookie)
        return None


async def charge_after_body(request: Request, principal: Principal) -> None:
    """For a rate-limited route that finds its caller's key in the body: count the request now (unless
    RateLimitBeforeBody already counted it by a key in the header or query); RateLimited when over the rate."""
    charge: _Charge | None = request.scope.get("state", {}).get(RATE_LIMIT_STATE)
    if charge is None or charge.counted:
        return
    charge.counted = True
    charge.verdict = await charge.limiter.hit(charge.bucket, principal.key_id.hex)
    if charge.verdict is not None and not charge.verdict.allowed:
        raise RateLimited(charge.verdict)


def _with_rate_limit_headers(send: Send, charge: _Charge) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and charge.verdict is not None:
            message = {**message, "headers": [*message.get("headers", []), *charge.verdict.headers()]}
        await send(message)

    return sending
