"""Datasets and versions in real Chromium, against a running samtune: create a dataset, upload by drop
and by file input (progress, the API's error beside a rejected file), health figures, the image grid
with masks and its filters, then the version form, its preview, the build and the version page."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from app.ui.version_form import form_paths, version_form
from tests.ui.conftest import DESKTOP, PHONE, ROOT, SCREENSHOTS, no_horizontal_scroll, shot, sign_in

SHAPES = ROOT / "examples" / "shapes-coco.zip"


def _drop(page, selector: str, path: Path) -> None:
    """Drop a file on an element the way a browser does: a drop event whose DataTransfer holds it."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "application/zip" }));
            return dt;
        }""",
        [path.name, data],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def at_phone_width(page, name: str) -> None:
    """The page at 390 px: nothing sideways past the screen; docs/screenshots/<name>.png; back to desktop."""
    page.set_viewport_size(PHONE)
    assert no_horizontal_scroll(page), f"{page.url} is wider than a phone"
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size(DESKTOP)


@pytest.fixture
def fresh_key(ui_server) -> str:
    """A workspace of its own, so the empty states are really empty."""
    return ui_server.new_key(f"ui-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def fresh_page(page, ui_server, fresh_key: str):
    sign_in(page, ui_server, fresh_key)
    return page


@pytest.fixture
def api(ui_server, fresh_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ui_server.url, headers={"Authorization": f"Bearer {fresh_key}"}) as client:
        yield client


def test_datasets_upload_grid_filters_and_a_version(fresh_page, api, console, tmp_path) -> None:
    page = fresh_page
    page.goto("/datasets")
    expect(page.locator("#datasets-empty")).to_contain_text("No datasets yet")

    # A blank name is refused in place; a good one opens the dataset's page.
    page.get_by_role("button", name="Create dataset").click()
    expect(page.locator("#create-error")).to_contain_text("Give the dataset a name")
    page.get_by_label("Name").fill("shapes")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url("**/datasets/*")
    dataset_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#dataset-name")).to_have_text("shapes")
    expect(page.locator("#health-empty")).to_be_visible()
    expect(page.locator("#images-empty")).to_contain_text("No images yet")
    expect(page.locator("#versions-empty")).to_contain_text("No versions yet")

    # Keyboard: the file input is reachable with Tab from the top of the page.
    page.locator("body").focus()
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "file-input":
            break
    else:
        raise AssertionError("the file input is not reachable with the keyboard")

    # Drop the zip on the drop zone: the bar reaches the end and the grid fills with masks drawn.
    _drop(page, "#dropzone", SHAPES)
    done = page.locator('#uploads li[data-state="done"]')
    done.wait_for(timeout=60_000)
    assert done.locator("progress").evaluate("p => p.value") == 1
    assert "Added (roboflow_coco) train: 12 images, 22 annotations" in done.inner_text()
    tiles = page.locator("#image-grid canvas[data-painted]")
    expect(page.locator("#image-grid canvas[data-painted]")).to_have_count(18)
    painted = sum(int(n) for n in tiles.evaluate_all("cs => cs.map(c => c.dataset.painted)"))
    assert painted == 22 + 5 + 5  # every annotation of the 18 images drawn
    # The masks are drawn in class colours: some pixels carry the blended palette colour of a class.
    coloured = page.evaluate(
        """() => {
            const c = document.querySelector('#image-grid canvas[data-painted]:not([data-painted="0"])');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) n += 1;
            return n;
        }"""
    )
    assert coloured > 50

    # Health: figures, the class chart (Chart.js) and the per-class table.
    assert "18" in page.locator("#health-figures").inner_text()
    labels = page.evaluate("Chart.getChart(document.getElementById('class-chart')).data.labels")
    assert sorted(labels) == ["circle", "square", "triangle"]
    assert page.locator("#class-table tr").count() == 3

    # A file that is not a zip: the API's error beside it, the rest of the page untouched.
    console.allow("status of 4")  # Chromium logs every 4xx answer; this one is the point of the test
    bad = tmp_path / "notes.zip"
    bad.write_text("this is not a zip archive")
    page.locator("#file-input").set_input_files(str(bad))
    rejected = page.locator('#uploads li[data-state="error"]')
    rejected.wait_for()
    assert "notes.zip" in rejected.inner_text()
    problem = api.post(f"/api/v1/datasets/{dataset_id}/uploads", files={"file": ("notes.zip", b"x")})
    assert problem.status_code >= 400
    assert problem.json()["detail"].split(":")[0] in rejected.get_by_role("alert").inner_text()
    assert page.locator("#image-grid canvas").count() == 18

    # Filters: by split, then by class, each matching what the API says.
    page.get_by_label("Split").select_option("valid")
    expect(page.locator("#image-grid li")).to_have_count(4)
    assert set(page.locator("#image-grid li").evaluate_all("ls => ls.map(l => l.dataset.split)")) == {"valid"}
    page.get_by_label("Split").select_option("")
    page.get_by_label("Class", exact=True).select_option("triangle")
    expected = api.get(f"/api/v1/datasets/{dataset_id}/images", params={"class": "triangle"}).json()
    expect(page.locator("#image-grid li")).to_have_count(expected["total"])
    for label in page.locator("#image-grid canvas").evaluate_all(
        "cs => cs.map(c => c.getAttribute('aria-label'))"
    ):
        assert "triangle" in label
    assert f"of {expected['total']} images" in page.locator("#images-count").inner_text()
    page.get_by_label("Class", exact=True).select_option("")
    expect(page.locator("#image-grid canvas[data-painted]")).to_have_count(18)
    page.evaluate("() => document.getElementById('health-title').scrollIntoView()")
    shot(page, "dataset")
    page.evaluate("() => document.getElementById('images-title').scrollIntoView()")
    shot(page, "dataset-images")
    at_phone_width(page, "dataset-phone")

    # The version form: every option, with its default.
    page.get_by_role("link", name="New version").click()
    page.wait_for_url("**/versions/new")
    for path in form_paths(version_form()):
        assert page.locator(f'[data-path="{path}"]').count() == 1, path
    assert page.get_by_label("Width", exact=True).input_value() == "1008"
    assert page.locator('[data-path="split.mode"]').input_value() == "keep"
    assert page.locator('[data-path="augmentation.crop.min_scale"]').is_disabled()
    page.locator("#class-map-body tr[data-class]").first.wait_for()
    assert page.locator("#class-map-body tr[data-class]").count() == 3

    # An out-of-range value: the API's error appears beside that field.
    page.locator('[data-path="augmentation.outputs_per_image"]').fill("3")
    page.locator('[data-path="augmentation.flip_horizontal"]').check()
    page.locator('[data-path="augmentation.brightness"]').fill("5")
    page.get_by_role("button", name="Preview").click()
    field_error = page.locator("#f-augmentation-brightness-err")
    field_error.wait_for()
    assert "less than or equal to 1" in field_error.inner_text()
    assert page.locator('[data-path="augmentation.brightness"]').get_attribute("aria-invalid") == "true"

    # Fixed: the preview shows originals and augmented copies, masks drawn (RLE after augmentation).
    page.locator('[data-path="augmentation.brightness"]').fill("0.2")
    page.get_by_label("Use random crop").check()
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#preview-grid canvas[data-painted]")).to_have_count(9)
    flags = page.locator("#preview-grid li").evaluate_all("ls => ls.map(l => l.dataset.augmented)")
    assert flags == ["false", "true", "true"] * 3
    assert "augmented copies" in page.locator("#preview-status").inner_text()
    assert not field_error.is_visible()
    page.evaluate("() => document.getElementById('preview-title').scrollIntoView()")
    shot(page, "version-form")
    at_phone_width(page, "version-form-phone")

    # Build: the version page follows the build to the end, then shows counts, drops and the export.
    page.get_by_role("button", name="Build version").click()
    page.wait_for_url(re.compile(r"/versions/[0-9a-f-]{36}$"))
    version_id = page.url.rsplit("/", 1)[1]
    page.locator("#ready").wait_for(timeout=120_000)
    version = api.get(f"/api/v1/versions/{version_id}").json()
    assert version["status"] == "ready"
    assert version["spec"]["augmentation"]["crop"] == {"min_scale": 0.6}
    assert version["spec"]["augmentation"]["brightness"] == 0.2
    rows = page.locator("#split-counts tr").evaluate_all(
        "rs => rs.map(r => Array.from(r.children).map(c => c.textContent))"
    )
    for split, images, anns in rows[:-1]:
        assert [int(images), int(anns)] == [
            version["splits"][split]["images"],
            version["splits"][split]["annotations"],
        ]
    assert int(rows[0][1]) == 36  # 12 training images, each with 2 augmented copies
    for key, value in version["dropped"].items():
        assert page.locator(f'#dropped [data-key="{key}"] dd').inner_text() == str(value)
    export = page.get_by_role("link", name="Download (COCO zip)")
    assert export.get_attribute("href") == f"/api/v1/versions/{version_id}/export"
    with page.expect_download() as download:
        export.click()
    assert download.value.suggested_filename == f"shapes-v{version['number']}-coco.zip"
    shot(page, "version")
    at_phone_width(page, "version-phone")

    # Back on the dataset page the version is listed.
    page.goto(f"/datasets/{dataset_id}")
    page.locator("#versions-body tr").first.wait_for()
    assert "ready" in page.locator("#versions-body").inner_text()
    page.goto("/datasets")
    page.locator("#datasets-body tr").first.wait_for()
    shot(page, "datasets")


def _runs(mask) -> list[int]:
    """Run lengths of a binary mask in COCO's order (down the columns), starting with zeros."""
    flat = mask.flatten(order="F")
    runs, current, count = [], 0, 0
    for value in flat:
        if value == current:
            count += 1
        else:
            runs.append(count)
            current, count = value, 1
    runs.append(count)
    return runs


def test_the_browser_decodes_coco_rle_as_pycocotools_encodes_it(signed_in_page) -> None:
    import numpy as np
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    mask = np.zeros((61, 97), dtype=np.uint8)
    mask[5:40, 10:50] = 1
    mask[30:60, 70:96] = 1
    mask[rng.random(mask.shape) < 0.05] ^= 1  # scattered pixels: many short runs, large deltas
    rle = mask_utils.encode(np.asfortranarray(mask))
    counts = rle["counts"].decode()
    page = signed_in_page
    decoded = page.evaluate(
        "async (counts) => (await import('/static/js/masks.js')).rleCounts(counts)", counts
    )
    assert decoded == _runs(mask)
    assert sum(decoded) == mask.size
