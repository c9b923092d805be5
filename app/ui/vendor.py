"""Third-party browser files from `node_modules` (made by `npm ci`), served from an explicit allow-list so
that nothing else in that folder is reachable."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.core.deps import SettingsDep
from app.core.errors import NotFound

# URL name -> path under Settings.ui_vendor_dir.
VENDOR_FILES: dict[str, str] = {
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
    "chart.umd.min.js.map": "chart.js/dist/chart.umd.min.js.map",
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
}

router = APIRouter(include_in_schema=False)


@router.get("/static/vendor/{name}")
def vendor_file(name: str, settings: SettingsDep) -> FileResponse:
    relative = VENDOR_FILES.get(name)
    if relative is None:
        raise NotFound(f"no vendor file {name!r}")
    path = settings.ui_vendor_dir / relative
    if not path.is_file():
        raise NotFound(
            f"vendor file {name!r} is missing from {settings.ui_vendor_dir}: run `npm ci` at the repository "
            "root (make install does), or point SAMTUNE_UI_VENDOR_DIR at a node_modules folder"
        )
    media = {".map": "application/json", ".css": "text/css"}.get(path.suffix, "text/javascript")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600"})
