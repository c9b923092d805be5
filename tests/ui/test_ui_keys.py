"""The keys page in real Chromium: create (the secret shown once, with a copy button), revoke."""

from __future__ import annotations

import httpx

from tests.ui.conftest import PHONE, no_horizontal_scroll, shot


def test_create_copy_and_revoke_a_key(signed_in_page, ui_server) -> None:
    page = signed_in_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_server.url)
    page.goto("/keys")
    page.get_by_label("Label").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-value")
    secret.wait_for()
    key = secret.inner_text()
    assert key.startswith("st_") and len(key) > 30
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key

    # The new key works for the API, as the page says.
    me = httpx.get(f"{ui_server.url}/api/v1/keys", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    row = page.locator("tr", has_text="laptop")
    assert row.locator(".badge").inner_text() == "active"
    shot(page, "keys")

    # Revoking takes two clicks on the same button; the second one does it.
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Confirm revoke").click()
    row.locator(".badge-failed").wait_for()
    assert row.locator(".badge").inner_text().startswith("revoked")
    assert (
        httpx.get(f"{ui_server.url}/api/v1/keys", headers={"Authorization": f"Bearer {key}"}).status_code
        == 401
    )
    # The session's own key is marked, so nobody revokes it by mistake.
    assert page.locator("tr", has_text="this session").count() == 1

    page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(page)
