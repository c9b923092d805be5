"""Server-Sent Events as the job event stream writes them, parsed the way a browser's EventSource reads them."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class SseEvent:
    id: str | None
    kind: str
    data: dict[str, Any]
    received_at: float = 0.0


def parse_sse(body: str) -> list[SseEvent]:
    """The events of an SSE body (comments and the `retry:` preamble dropped)."""
    out = []
    for block in re.split(r"\n\n+", body):
        event = parse_block(block)
        if event is not None:
            out.append(event)
    return out


def parse_block(block: str) -> SseEvent | None:
    eid, kind, data = None, "message", []
    for line in block.splitlines():
        if line.startswith(":") or not line:
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            eid = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)
    if not data:
        return None
    return SseEvent(eid, kind, json.loads("\n".join(data)), time.monotonic())
