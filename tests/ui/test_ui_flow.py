"""The whole product in real Chromium against a running samtune: sign in, create a dataset, upload a zip,
build a version, train on the bundled tiny base and watch the live charts (across a page reload, a stream
refused with 502 and a dropped connection: the API process killed and restarted by its supervisor), queue
a second job and cancel it from its page, stop the first and open its model, get masks back from "try it",
compare the two runs, and look at it all at phone width. Screenshots go to docs/screenshots/.

Training speed on shared CPUs varies by an order of magnitude, so nothing here waits for a job to end on
its own: the first job has far more epochs than the test lets it run, and the test ends it with the page's
Stop button once the reload has been seen; Stop keeps the best checkpoint, evaluates and registers it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from tests.support.waiting import wait_until
from tests.ui.conftest import PHONE, SCREENSHOTS, ConsoleWatch, UiServer, no_horizontal_scroll, shot
from trainer.synth import HELD_OUT_DOMAINS, PRETRAIN_CONCEPTS, write_dataset

# A concept the base knows (so "try it" finds something however briefly the job trained) and two it has
# never seen (so fine-tuning has something to learn). 112 px: the tiny base's own size, fast on a CPU.
CONCEPTS = [PRETRAIN_CONCEPTS[0], *HELD_OUT_DOMAINS["new-colours"]]
SPLITS = {"train": 12, "valid": 4, "test": 4}
SIZE = 112
# Far more than the test waits for: the job is still training whenever the test looks at it.
LONG_EPOCHS = "300"


@pytest.fixture(scope="module")
def shapes_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ui-flow-data")
    folder = write_dataset(work / "shapes", CONCEPTS, SPLITS, size=SIZE, seed=8)
    return Path(shutil.make_archive(str(work / "shapes-ui"), "zip", folder))


def image_showing(split: Path, name: str) -> Path:
    """The first image of a split (by file name) with an object of concept `name`: "try it" asks for that
    concept, and which file a directory listing yields first depends on the file system (ext4 orders names by
    a per-file-system hash), so `next(glob())` could pick one of the two test images with no red shape."""
    coco = json.loads((split / "_annotations.coco.json").read_text())
    category = next(c["id"] for c in coco["categories"] if c["name"] == name)
    shown = {a["image_id"] for a in coco["annotations"] if a["category_id"] == category}
    return split / min(i["file_name"] for i in coco["images"] if i["id"] in shown)


def attr_number(page: Page, selector: str, name: str) -> float:
    value = page.locator(selector).get_attribute(name)
    return float(value) if value not in (None, "") else float("nan")


def api_pid(server: UiServer) -> int:
    """The API child of `samtune up`, as its supervisor logged it (the latest, after any restart)."""
    pids = re.findall(r"started api \(pid (\d+)\)", server.log_path.read_text(errors="replace"))
    assert pids, server.log_tail()
    return int(pids[-1])


def to_top(page: Page) -> None:
    """Scroll back to the top (typing and clicking further down scrolled the page) before a screenshot."""
    page.evaluate("window.scrollTo(0, 0)")


def phone_shot(page: Page, name: str | None = None, *, anchor: str | None = None) -> None:
    """Check that nothing overflows sideways at phone width (390 px); save docs/screenshots/<name>.png
    at that width when named, scrolled to `anchor` if given."""
    before = page.viewport_size
    page.set_viewport_size(PHONE)
    time.sleep(0.4)  # charts redraw on resize
    assert no_horizontal_scroll(page), f"{page.url} is wider than a phone"
    if anchor:
        page.locator(anchor).scroll_into_view_if_needed()
    if name:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    if before:
        page.set_viewport_size(before)


def set_hyperparameter(page: Page, name: str, value: str) -> None:
    field = page.locator(f"#hp-{name}")
    field.fill(value)
    field.press("Tab")  # the change event: the page previews the plan again


def start_job_from_version(page: Page, version_url: str, *, epochs: str, lr_heads: str | None = None) -> str:
    page.goto(version_url)
    page.get_by_role("link", name="Train on this version").click()
    page.wait_for_url(re.compile(r"/train\?version_id="))
    expect(page.locator("#hp-epochs")).to_be_visible()
    set_hyperparameter(page, "epochs", epochs)
    set_hyperparameter(page, "early_stopping_patience", epochs)
    if lr_heads:
        set_hyperparameter(page, "lr_heads", lr_heads)
    expect(page.locator("tr[data-row='epochs']")).to_have_class(re.compile("overridden"))
    expect(page.locator("#hp-epochs")).to_have_value(epochs)
    expect(page.get_by_role("button", name="Start training")).to_be_enabled()
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


def test_train_watch_reload_stop_try_compare(
    signed_in_page: Page, ui_server: UiServer, console: ConsoleWatch, shapes_zip: Path
) -> None:
    page = signed_in_page
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of Stop and Cancel

    # --- dataset, upload, version (the foundation's pages) ------------------------------------------
    page.goto("/datasets")
    page.get_by_label("Name").fill("shapes ui flow")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url(re.compile(r"/datasets/[0-9a-f-]{36}$"))
    page.locator("#file-input").set_input_files(str(shapes_zip))
    expect(page.locator("#uploads")).to_contain_text("Added", timeout=60_000)
    page.get_by_role("link", name="New version").click()
    page.wait_for_url(re.compile(r"/versions/new$"))
    page.locator("#f-preprocessing-resize-width").fill(str(SIZE))
    page.locator("#f-preprocessing-resize-height").fill(str(SIZE))
    page.get_by_role("button", name="Build version").click()
    page.wait_for_url(re.compile(r"/versions/[0-9a-f-]{36}$"))
    version_url = page.url
    expect(page.get_by_role("link", name="Train on this version")).to_be_visible(timeout=60_000)

    # --- train page: the base model named, reasons shown, a bad override refused in place -------------
    page.goto("/train?version_id=00000000-0000-4000-8000-000000000000")  # a stale link: said, not fatal
    expect(page.locator("#hp-epochs")).to_be_visible()  # the plan of the first ready version instead
    expect(page.locator("#version-error")).to_contain_text("is not ready")
    page.goto(version_url)
    page.get_by_role("link", name="Train on this version").click()
    page.wait_for_url(re.compile(r"/train\?version_id="))
    expect(page.locator("#base-description")).to_contain_text("samtune/sam3-tiny-shapes")
    expect(page.locator("tr[data-row='epochs'] .reason")).to_contain_text("epochs")
    console.allow("status of 422")  # the refused preview below: Chromium logs every 4xx fetch
    set_hyperparameter(page, "epochs", "-2")
    expect(page.locator("#hp-epochs-error")).to_contain_text("epochs")
    expect(page.locator("#hp-epochs")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("button", name="Start training")).to_be_disabled()
    set_hyperparameter(page, "epochs", LONG_EPOCHS)
    expect(page.locator("#hp-epochs-error")).to_be_hidden()
    set_hyperparameter(page, "early_stopping_patience", LONG_EPOCHS)
    expect(page.locator("#estimate")).to_contain_text(f"{6 * int(LONG_EPOCHS)} steps")
    # A setting the plan does not list: added from "Other settings", refused in place, then removed.
    page.get_by_label("Setting", exact=True).select_option("max_steps")
    page.get_by_label("Value", exact=True).fill("0")
    page.get_by_role("button", name="Add setting").click()
    expect(page.locator("#hp-max_steps-error")).to_contain_text("max_steps")
    page.get_by_role("button", name="Use the automatic value of max_steps").click()
    expect(page.locator("tr[data-row='max_steps']")).to_have_count(0)
    expect(page.get_by_role("button", name="Start training")).to_be_enabled()
    to_top(page)
    shot(page, "train")
    phone_shot(page, "train-phone")
    # Keyboard: Start is reachable by Tab from the last setting, and Enter on it starts the job.
    page.locator("#extra-value").focus()
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "start":
            break
    else:
        raise AssertionError("Tab never reached the Start training button")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    first_job = page.url.rsplit("/", 1)[1]

    # --- job page: live charts fed by the event stream ------------------------------------------------
    expect(page.locator("#base-model-name")).to_have_text("samtune/sam3-tiny-shapes")
    expect(page.locator("#job-status [data-status='running']")).to_be_visible(timeout=90_000)
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    wait_until(
        lambda: attr_number(page, "#chart-loss", "data-points") > 0,
        timeout=120,
        interval=0.5,
        message="the first loss points",
    )
    wait_until(
        lambda: attr_number(page, "#chart-ap", "data-points") > 0,
        timeout=120,
        interval=0.5,
        message="the first validation AP",
    )

    # --- reload mid-training: what was drawn is drawn again at once, and new points keep coming -------
    before_first = attr_number(page, "#chart-loss", "data-first-x")
    before_last = attr_number(page, "#chart-loss", "data-last-x")
    before_ap = attr_number(page, "#chart-ap", "data-points")
    page.reload()
    wait_until(
        lambda: attr_number(page, "#chart-loss", "data-last-x") >= before_last,
        timeout=30,
        interval=0.5,
        message="the history after reload",
    )
    assert attr_number(page, "#chart-loss", "data-first-x") == before_first
    assert attr_number(page, "#chart-ap", "data-points") >= before_ap
    expect(page.locator("#job-status [data-status='running']")).to_be_visible()
    wait_until(
        lambda: attr_number(page, "#chart-loss", "data-last-x") > before_last,
        timeout=120,
        interval=0.5,
        message="new loss points after reload",
    )
    assert attr_number(page, "#chart-loss", "data-first-x") == before_first, (
        "points from before the reload went"
    )
    # The progress line never tells an older step than the charts already drew (snapshots lag the points).
    drawn = attr_number(page, "#chart-loss", "data-last-x")
    shown = int(re.search(r"step (\d+)", page.locator("#progress-text").inner_text()).group(1))
    assert shown >= drawn, (shown, drawn)

    # --- a stream answered with an HTTP error (a proxy's 502): EventSource gives up on it, so the page
    # asks for the job and opens a new stream itself --------------------------------------------------
    refused: list[str] = []

    def refuse_once(route: Route) -> None:
        if refused:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.fulfill(status=502, content_type="text/plain", body="bad gateway")

    events_url = re.compile(r"/api/v1/jobs/[0-9a-f-]{36}/events$")
    page.route(events_url, refuse_once)
    console.allow("status of 502")
    page.reload()
    expect(page.locator("#live")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=30_000)
    assert refused, "the event stream was never requested"
    page.unroute(events_url)
    after_refusal = attr_number(page, "#chart-loss", "data-last-x")
    wait_until(
        lambda: attr_number(page, "#chart-loss", "data-last-x") > after_refusal,
        timeout=120,
        interval=0.5,
        message="points on the new stream",
    )

    # --- a dropped connection: the API process dies (the supervisor restarts it); the page's EventSource
    # reconnects by itself with Last-Event-ID and the chart carries on from where it was ---------------
    for fragment in (
        "ERR_CONNECTION_REFUSED",
        "ERR_CONNECTION_RESET",
        "ERR_EMPTY_RESPONSE",
        "ERR_INCOMPLETE_CHUNKED",
    ):
        console.allow(fragment)  # the page's polls while the API is down
    before_drop = attr_number(page, "#chart-loss", "data-last-x")
    os.kill(api_pid(ui_server), signal.SIGKILL)
    expect(page.locator("#live")).to_have_attribute("data-state", "reconnecting", timeout=20_000)
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=120_000)
    wait_until(
        lambda: attr_number(page, "#chart-loss", "data-last-x") > before_drop,
        timeout=120,
        interval=0.5,
        message="new points after reconnecting",
    )
    assert attr_number(page, "#chart-loss", "data-first-x") == before_first
    expect(page.locator("#job-error")).to_be_hidden()  # the outage's message went with it

    to_top(page)
    shot(page, "job-live")  # by now the curves have a few points
    phone_shot(page, "job-live-phone")

    # --- a second job queues behind the first (one worker), its page says where it stands -------------
    second_job = start_job_from_version(page, version_url, epochs=LONG_EPOCHS, lr_heads="0.0005")
    expect(page.locator("#job-status [data-status='queued']")).to_be_visible()
    expect(page.locator("#progress-text")).to_contain_text("position 1 in the queue")
    expect(page.get_by_role("button", name="Stop and keep the best")).to_be_disabled()

    # --- stop the first job from its page: it keeps its best checkpoint and registers a model ---------
    page.goto(f"/jobs/{first_job}")
    page.get_by_role("button", name="Stop and keep the best").click()
    expect(page.locator("#job-facts")).to_contain_text("stop requested")
    expect(page.locator("#job-status [data-status='succeeded']")).to_be_visible(timeout=180_000)
    expect(page.locator("#model-link")).to_be_visible()
    expect(page.locator("#test-metrics table")).to_contain_text("fine-tuned")
    expect(page.locator("#job-events")).to_contain_text("stop requested")
    expect(page.locator("#job-logs")).to_contain_text("samtune.trainer")  # the worker's log lines
    expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    shot(page, "job-done")

    # --- the second job starts when the first ends; cancel it from its page once it has trained a bit -
    page.goto(f"/jobs/{second_job}")
    expect(page.locator("#job-status [data-status='running']")).to_be_visible(timeout=120_000)
    wait_until(
        lambda: attr_number(page, "#chart-loss", "data-points") > 0,
        timeout=120,
        interval=0.5,
        message="the second job's first points",
    )
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status [data-status='cancelled']")).to_be_visible(timeout=60_000)
    expect(page.locator("#job-actions")).to_be_hidden()

    # --- jobs list: both, filterable by status ---------------------------------------------------------
    page.goto("/jobs")
    expect(page.locator(f"tr[data-job='{first_job}']")).to_contain_text("succeeded")
    expect(page.locator(f"tr[data-job='{second_job}']")).to_contain_text("cancelled")
    page.get_by_label("Status").select_option("cancelled")
    expect(page.locator(f"tr[data-job='{first_job}']")).to_have_count(0)
    expect(page.locator(f"tr[data-job='{second_job}']")).to_be_visible()
    assert page.url.endswith("?status=cancelled")
    page.get_by_label("Status").select_option("")
    phone_shot(page)

    # --- compare: pick both from the list; one line per job on every chart, differences marked --------
    page.get_by_label(f"Compare job {first_job[:8]}").check()
    page.get_by_label(f"Compare job {second_job[:8]}").check()
    page.get_by_role("button", name="Compare selected (2)").click()
    page.wait_for_url(re.compile(r"/compare\?jobs="))
    expect(page.locator("#compare-result")).to_be_visible()
    wait_until(
        lambda: attr_number(page, "#cmp-loss", "data-points") > 0,
        timeout=30,
        interval=0.5,
        message="compared curves",
    )
    expect(page.locator("tr[data-row='lr_heads']")).to_have_attribute("data-differs", "true")
    expect(page.locator("tr[data-row='Data version']")).to_have_attribute("data-differs", "false")
    expect(page.locator("tr[data-row='Status']")).to_have_attribute("data-differs", "true")
    page.get_by_label("Only the differences").check()
    expect(page.locator("tr[data-row='Data version']")).to_be_hidden()
    expect(page.locator("tr[data-row='lr_heads']")).to_be_visible()
    page.get_by_label("Only the differences").uncheck()
    to_top(page)
    shot(page, "compare")
    phone_shot(page, "compare-phone")

    # --- models list and model page: base vs fine-tuned per class, download, Roboflow-style id -------
    page.goto("/models")
    expect(page.locator("#models-body tr")).to_have_count(1)
    shot(page, "models")
    phone_shot(page)
    page.locator("#models-body a").first.click()
    page.wait_for_url(re.compile(r"/models/[0-9a-f-]{36}$"))
    model_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#base-model-name")).to_have_text("samtune/sam3-tiny-shapes")
    expect(page.locator("#roboflow-id")).to_have_text("shapes-ui-flow/1")
    for concept in CONCEPTS:
        expect(page.locator(f"#model-classes tr[data-class='{concept.name}']")).to_be_visible()
    href = page.get_by_role("link", name="Download model (.zip)").get_attribute("href")
    assert href == f"/api/v1/models/{model_id}/download"
    head = page.request.get(href)
    assert head.status == 200 and head.headers["content-type"] == "application/zip"
    shot(page, "model")

    # --- train from this model: the Train page opens with it as the base, and the preview accepts it -----
    page.get_by_role("link", name="Train from this model").click()
    page.wait_for_url(re.compile(rf"/train\?base_model={model_id}$"))
    expect(page.locator("#base-model")).to_have_value(model_id)
    expect(page.locator("#base-description")).to_contain_text(f"your model {model_id}")
    expect(page.locator("#base-description")).to_contain_text("samtune/sam3-tiny-shapes")
    expect(page.locator("#estimate")).to_contain_text("steps")
    expect(page.locator("#base-error")).to_be_hidden()
    page.go_back()
    page.wait_for_url(re.compile(r"/models/[0-9a-f-]{36}$"))

    # --- try it: an image, prompts, confidence -> masks drawn, and the same request as curl ------------
    image = image_showing(shapes_zip.parent / "shapes" / "test", CONCEPTS[0].name)
    page.locator("#try-image").set_input_files(str(image))
    page.get_by_label("Prompts").fill(CONCEPTS[0].name)
    page.locator("#try-confidence").fill("0.2")
    curl = page.locator("#curl").inner_text()
    assert f"/api/v1/models/{model_id}/predict" in curl
    assert f"-F prompts='{CONCEPTS[0].name}'" in curl and "-F confidence=0.20" in curl
    assert f"-F image=@'{image.name}'" in curl
    page.get_by_role("button", name="Segment").click()
    expect(page.locator("#try-canvas")).to_have_attribute(
        "data-masks", re.compile(r"^[1-9]\d*$"), timeout=60_000
    )
    expect(page.locator("#try-predictions li").first).to_contain_text(CONCEPTS[0].name)
    expect(page.locator("#try-summary")).to_have_attribute("data-embedding", "computed")
    # The same image with another prompt: the server reuses its vision embedding (`samtune up`'s inference
    # service keeps recent ones by the image's hash) and the page says so.
    page.get_by_label("Prompts").fill(f"{CONCEPTS[1].name}, {CONCEPTS[0].name}")
    page.get_by_role("button", name="Segment").click()
    expect(page.locator("#try-summary")).to_have_attribute("data-embedding", "reused", timeout=60_000)
    expect(page.locator("#try-summary")).to_contain_text("its encoding was reused")
    page.locator("#try-title").scroll_into_view_if_needed()
    shot(page, "try-it")
    phone_shot(page, "try-it-phone", anchor="#try-canvas")


def test_runs_pages_say_what_to_do_when_empty(page: Page, ui_server: UiServer, console: ConsoleWatch) -> None:
    # Signed out, a page sends the browser to sign in, and back to the page after.
    page.goto("/jobs")
    page.wait_for_url("**/signin?next=/jobs")
    page.get_by_label("API key").fill(ui_server.new_key("ui-empty-runs"))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/jobs")
    expect(page.locator("#jobs-empty")).to_contain_text("No training jobs yet")
    page.goto("/train")
    expect(page.locator("#train-empty")).to_contain_text("No ready data version yet")
    expect(page.locator("#train-empty a[href='/datasets']")).to_be_visible()
    page.goto("/models")
    expect(page.locator("#models-empty")).to_contain_text("No models yet")
    page.goto("/compare")
    expect(page.locator("#compare-empty")).to_contain_text("at least two training jobs")
    # Another workspace's or a made-up id: the API's answer, in place.
    console.allow("status of 404")
    page.goto("/jobs/00000000-0000-4000-8000-000000000000")
    expect(page.locator("#job-error")).to_contain_text("not found in this workspace")
    page.goto("/models/00000000-0000-4000-8000-000000000000")
    expect(page.locator("#model-error")).to_contain_text("not found in this workspace")
