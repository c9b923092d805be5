"""The API reference at /docs works offline in real Chromium: Swagger UI from node_modules, under the UI's
strict Content-Security-Policy (the page fixture fails the test on any console error, CSP reports included)."""

from __future__ import annotations

from playwright.sync_api import expect

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


def test_authorize_then_try_it_out_answers_with_the_key(page, console, ui_server) -> None:
    """The document's security schemes give /docs its Authorize button; a key given there is sent by "Try it
    out" (200), where the same request without it is a 401."""
    console.allow("401")  # Chromium logs the refused request of the first try
    page.goto("/docs")
    operation = page.locator("#operations-datasets-list_datasets")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    expect(status).to_contain_text("401")

    page.locator(".auth-wrapper .btn.authorize").click()
    bearer = page.locator(".modal-ux .auth-container").filter(has_text="(http, Bearer)")
    bearer.locator("input").fill(ui_server.key)
    bearer.locator("button.authorize").click()
    expect(bearer.get_by_role("button", name="Remove authorization")).to_be_visible()
    bearer.locator("button.btn-done").click()
    # Every operation that needs the key shows it locked now; the public ones have no lock at all.
    expect(operation.get_by_role("button", name="authorization button locked")).to_be_visible()
    expect(page.locator("#operations-health-healthz .authorization__btn")).to_have_count(0)

    operation.get_by_role("button", name="Execute").click()
    expect(status).to_contain_text("200")
