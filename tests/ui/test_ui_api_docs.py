"""The API reference at /docs works offline in real Chromium: Swagger UI from node_modules, under the UI's
strict Content-Security-Policy (the page fixture fails the test on any console error, CSP reports included)."""

from __future__ import annotations

from tests.ui.conftest import shot


def test_api_reference_renders_every_operation_offline(page, ui_server) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto("/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    assert "samtune" in page.locator(".swagger-ui .info .title").inner_text()
    page.locator(".opblock").first.wait_for()
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/v1/models/{model_id}/predict" in p for p in paths), paths[:10]
    assert len(paths) >= 40
    # Everything the page needed came from this server.
    assert requested and all(u.startswith(ui_server.url) for u in requested), [
        u for u in requested if not u.startswith(ui_server.url)
    ]
    shot(page, "api-docs")
