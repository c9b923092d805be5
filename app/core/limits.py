"""Refuse request bodies over the upload limit while they stream in, before they fill the disk."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PayloadTooLarge, problem_response


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {limit} bytes (SAMTUNE_MAX_UPLOAD_BYTES)",
        title="Upload too large",
    )


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # Refuse at once: no byte of the body is read.
            await problem_response(_too_large(self.max_bytes))(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # A chunked body that lied or gave no length: stop reading here. The handler
                    # sees the error while parsing and the spooled temp file is discarded.
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)
