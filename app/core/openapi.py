"""Stable operation ids for the OpenAPI document: a route's name (its function's, `list_datasets`), not FastAPI's
default, which appends the path and the method and so changes whenever a path does. Clients generated from the
document name their methods after these ids; tests/core/test_openapi.py pins some and refuses duplicates."""

from __future__ import annotations

from fastapi.routing import APIRoute


def operation_id(route: APIRoute) -> str:
    return route.name


def roboflow_operation_id(route: APIRoute) -> str:
    """Roboflow's routes reuse samtune's words (`get_version`, `export_version`): prefixed, the ids stay unique."""
    return f"roboflow_{route.name}"
