"""Sign in and out in real Chromium."""

from __future__ import annotations

from tests.ui.conftest import PHONE, no_horizontal_scroll, shot, sign_in


def test_wrong_key_shows_the_error_in_place(page, ui_server) -> None:
    page.goto("/datasets")
    page.wait_for_url("**/signin?next=/datasets")
    page.get_by_label("API key").fill("st_0000000000000000000000")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    assert "the API key is not valid" in alert.inner_text()
    assert page.get_by_label("API key").get_attribute("aria-invalid") == "true"
    shot(page, "signin")


def test_right_key_lands_on_the_page_asked_for_then_signs_out(page, ui_server) -> None:
    page.goto("/keys")
    page.wait_for_url("**/signin?next=/keys")
    page.get_by_label("API key").fill(ui_server.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/keys")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["samtune_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert ui_server.key not in session["value"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    assert "samtune_session" not in {c["name"] for c in page.context.cookies()}
    page.goto("/datasets")
    page.wait_for_url("**/signin?next=/datasets")


def test_signed_in_root_is_the_datasets_list_and_fits_a_phone(page, ui_server) -> None:
    sign_in(page, ui_server)
    assert page.url == ui_server.url + "/"
    assert page.get_by_role("heading", level=1).inner_text() == "Datasets"
    assert page.get_by_role("link", name="Datasets").get_attribute("aria-current") == "page"
    page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(page)
    # Keyboard: the skip link is the first stop, then the brand, then the navigation.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
