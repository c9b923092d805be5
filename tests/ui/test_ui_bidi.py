"""User-supplied names are shown bidi-isolated (issue 20), in real Chromium: a dataset named "ok\u202etxt.exe" and a
class named the same way, on every page that shows them, sit each in an element of their own whose computed
`unicode-bidi` isolates it, so the override (U+202E) can reorder only the name, never the text around it."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.factories import simple_coco_zip
from tests.ui.conftest import sign_in

RLO = "\u202e"
DATASET = f"ok{RLO}txt.exe"
CLASS = f"cat{RLO}gnp.exe"

# Every text node holding U+202E in the page, with its element, whether that element isolates it and whether
# the node is the element's whole text (the name alone, nothing of the sentence around it).
FIND = """(rlo) => {
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.data.includes(rlo)) continue;
    const parent = node.parentElement;
    if (!parent || parent.closest("[hidden]") || parent.offsetParent === null && parent.tagName !== "OPTION") continue;
    const bidi = getComputedStyle(parent).unicodeBidi;
    found.push({tag: parent.tagName, text: node.data, bidi, alone: parent.textContent === node.data});
  }
  return found;
}"""


def _isolated(page) -> list[dict]:
    found = page.evaluate(FIND, RLO)
    bad = [
        f for f in found if f["bidi"] not in ("isolate", "isolate-override", "plaintext") or not f["alone"]
    ]
    assert not bad, f"shown without isolation: {bad}"
    return found


def test_a_right_to_left_override_in_a_name_stays_inside_it(page, ui_server, tmp_path: Path) -> None:
    key = ui_server.new_key(f"ui-bidi-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=ui_server.url, headers=headers, timeout=60) as api:
        ds = api.post("/api/v1/datasets", json={"name": DATASET}).json()
        with simple_coco_zip(tmp_path / "bidi.zip", n_images=2, classes=(CLASS, "dog")).open("rb") as f:
            up = api.post(
                f"/api/v1/datasets/{ds['id']}/uploads", files={"file": ("bidi.zip", f, "application/zip")}
            )
        assert up.status_code == 201, up.text
    sign_in(page, ui_server, key)

    page.goto(ui_server.url + "/")
    page.get_by_role("link", name=DATASET).wait_for()
    listed = _isolated(page)
    assert any(f["text"] == DATASET for f in listed), listed

    page.goto(f"{ui_server.url}/datasets/{ds['id']}")
    page.locator("#dataset-name bdi").wait_for()
    shown = _isolated(page)
    texts = [f["text"] for f in shown]
    assert DATASET in texts and CLASS in texts, shown  # the heading, and the class among the classes

    page.goto(f"{ui_server.url}/datasets/{ds['id']}/versions/new")
    page.locator("#dataset-name bdi").wait_for()
    assert any(f["text"] == DATASET for f in _isolated(page))
