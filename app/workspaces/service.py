from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Unprocessable
from app.workspaces.tables import Workspace

# Roboflow's REST API names a workspace by the first path segment (`GET /{workspace}`, `/{workspace}/{project}`),
# where samtune's own pages and APIs also live: a workspace named like one of them could not be reached that way
# (the fixed routes are matched first), so these words are not workspace names. tests/roboflow checks that every
# fixed first segment of the app's routes is listed here. Also reserved: paths browsers and tools ask any server
# for (favicon.ico, robots.txt) and FastAPI's usual ReDoc page, which samtune does not serve: they stay 404s.
RESERVED_NAMES = frozenset({
    "api", "compare", "dataset", "datasets", "docs", "healthz", "infer", "internal", "jobs", "keys", "metrics",
    "model", "models", "openapi.json", "projects", "readyz", "signin", "signout", "static", "train", "versions",
    "favicon.ico", "redoc", "robots.txt",
})  # fmt: skip


def get_or_create(session: Session, name: str) -> Workspace:
    name = name.strip()
    if not name or len(name) > 100:
        raise Unprocessable("a workspace name must be 1 to 100 characters")
    workspace = session.scalars(select(Workspace).where(Workspace.name == name)).one_or_none()
    if workspace is None:
        # Checked only for a new workspace: one made before the word was reserved keeps its keys working.
        if name.lower() in RESERVED_NAMES or "/" in name:
            raise Unprocessable(
                f"{name!r} cannot be a workspace name: it is a path of samtune's own pages or APIs, which the "
                "Roboflow-compatible routes (/{workspace}/...) would not reach; a name without '/' and not one "
                f"of {', '.join(sorted(RESERVED_NAMES))} works"
            )
        workspace = Workspace(name=name)
        session.add(workspace)
        session.flush()
    return workspace
