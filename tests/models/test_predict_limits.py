"""No request may hold the service hostage: every prediction is bounded (prompts and their length, boxes, images
per /infer call, pixels, max_detections, the size of a drawn answer, the body), each refusal a 4xx naming its
setting and nothing half-done; non-finite numbers and files sent for text fields are 422; a wrong key is a 401
before the body is read; and /healthz and other clients' predictions answer while the largest allowed requests
run (issue 16)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.limits import BodySizeLimit
from app.main import body_limits, create_app
from app.settings import Settings
from tests.factories import jpeg_bytes
from tests.hardening.live import samtune_env, uvicorn_server
from tests.support.jobs import JobKit
from tests.support.servers import LiveServer

BASE = "/api/v1/base-models/samtune/sam3-tiny-shapes/predict"
# Small limits, so each can be passed with a small request (the 112 px test image is 12544 px).
LIMITS: dict[str, Any] = {
    "max_prompts": 3,
    "max_prompt_chars": 20,
    "max_boxes": 2,
    "max_detections": 50,
    "max_infer_images": 2,
    "max_visualize_pixels": 100 * 100,
    "max_request_bytes": 64 * 1024,
    "max_predict_bytes": 256 * 1024,
}


@pytest.fixture(scope="module")
def limited(jobs_kit: JobKit) -> TestClient:
    return jobs_kit.make_client(jobs_kit.make_settings(**LIMITS))


@pytest.fixture(scope="module")
def reference(jobs_kit: JobKit, model_id: str) -> str:
    """The model's Roboflow id, `slug/version`."""
    return jobs_kit.client.get(f"/api/v1/models/{model_id}", headers=jobs_kit.auth).json()["version_name"]


def _key(kit: JobKit) -> str:
    return kit.auth["Authorization"].removeprefix("Bearer ")


def _refused(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    for word in words:
        assert word in r.json()["detail"], (word, r.text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- each limit: refused past it, answered at it --------------------------------------------------------------


def test_prompts_are_bounded_in_number_and_length(
    jobs_kit: JobKit, limited: TestClient, test_image: bytes
) -> None:
    image = {"image": ("x.jpg", test_image)}
    at_limit = limited.post(BASE, headers=jobs_kit.auth, files=image, data={"prompts": ["a", "b", "c"]})
    assert at_limit.status_code == 200, at_limit.text
    over = limited.post(BASE, headers=jobs_kit.auth, files=image, data={"prompts": ["a", "b", "c", "d"]})
    _refused(over, 422, "4 prompts", "limit of 3", "SAMTUNE_MAX_PROMPTS")
    # Far past it the form parser stops counting early, and says which limit.
    flood = limited.post(BASE, headers=jobs_kit.auth, files=image, data={"prompts": ["a"] * 500})
    _refused(flood, 422, "SAMTUNE_MAX_PROMPTS")
    as_json = limited.post(
        BASE, headers=jobs_kit.auth, json={"image": _b64(test_image), "prompts": ["a"] * 4}
    )
    _refused(as_json, 422, "SAMTUNE_MAX_PROMPTS")
    long = limited.post(BASE, headers=jobs_kit.auth, files=image, data={"prompts": ["x" * 21]})
    _refused(long, 422, "21 characters", "limit of 20", "SAMTUNE_MAX_PROMPT_CHARS")
    assert (
        limited.post(BASE, headers=jobs_kit.auth, files=image, data={"prompts": ["x" * 20]}).status_code
        == 200
    )


def test_boxes_are_bounded(jobs_kit: JobKit, limited: TestClient, test_image: bytes) -> None:
    box = [10, 10, 50, 50]
    ok = limited.post(BASE, headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)},
                      data={"boxes": json.dumps([box] * 2)})  # fmt: skip
    assert ok.status_code == 200, ok.text
    over = limited.post(BASE, headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)},
                        data={"boxes": json.dumps([box] * 3)})  # fmt: skip
    _refused(over, 422, "3 boxes", "limit of 2", "SAMTUNE_MAX_BOXES")
    as_json = limited.post(BASE, headers=jobs_kit.auth, json={"image": _b64(test_image), "boxes": [box] * 3})
    _refused(as_json, 422, "SAMTUNE_MAX_BOXES")


def test_max_detections_is_bounded_on_every_predict_route(
    jobs_kit: JobKit, limited: TestClient, test_image: bytes, reference: str
) -> None:
    image = {"image": ("x.jpg", test_image)}
    assert (
        limited.post(BASE, headers=jobs_kit.auth, files=image, data={"max_detections": "50"}).status_code
        == 200
    )
    _refused(limited.post(BASE, headers=jobs_kit.auth, files=image, data={"max_detections": "51"}),
             422, "max_detections 51", "limit of 50", "SAMTUNE_MAX_DETECTIONS")  # fmt: skip
    _refused(limited.post(BASE, headers=jobs_kit.auth, json={"image": _b64(test_image), "max_detections": 5000}),
             422, "SAMTUNE_MAX_DETECTIONS")  # fmt: skip
    body = {
        "model_id": reference,
        "image": {"type": "base64", "value": _b64(test_image)},
        "api_key": _key(jobs_kit),
    }
    _refused(limited.post("/infer/instance_segmentation", json=body | {"max_detections": 51}),
             422, "SAMTUNE_MAX_DETECTIONS")  # fmt: skip
    _refused(limited.post(f"/{reference}", params={"api_key": _key(jobs_kit), "max_detections": "51"},
                          content=_b64(test_image)), 422, "SAMTUNE_MAX_DETECTIONS")  # fmt: skip


def test_infer_takes_a_bounded_list_of_images_and_class_filter(
    jobs_kit: JobKit, limited: TestClient, test_image: bytes, reference: str
) -> None:
    ref = {"type": "base64", "value": _b64(test_image)}
    body = {"model_id": reference, "api_key": _key(jobs_kit), "confidence": 0.05}
    two = limited.post("/infer/instance_segmentation", json=body | {"image": [ref] * 2})
    assert two.status_code == 200 and len(two.json()) == 2, two.text
    three = limited.post("/infer/instance_segmentation", json=body | {"image": [ref] * 3})
    _refused(three, 422, "3 images", "limit of 2", "SAMTUNE_MAX_INFER_IMAGES")
    # Nothing half-done: one image over a limit refuses the call before the first is predicted.
    big = {"type": "base64", "value": _b64(jpeg_bytes(200, 200))}
    mixed = limited.post("/infer/instance_segmentation",
                         json=body | {"image": [ref, big], "visualize_predictions": True})  # fmt: skip
    _refused(mixed, 422, "SAMTUNE_MAX_VISUALIZE_PIXELS")
    filtered = limited.post(
        "/infer/instance_segmentation", json=body | {"image": ref, "class_filter": ["a"] * 4}
    )
    _refused(filtered, 422, "class_filter", "SAMTUNE_MAX_PROMPTS")


def test_image_pixels_are_bounded_on_every_predict_route(
    jobs_kit: JobKit, test_image: bytes, reference: str
) -> None:
    client = jobs_kit.make_client(jobs_kit.make_settings(max_image_pixels=100 * 100))
    key = _key(jobs_kit)
    native = client.post(BASE, headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)})
    _refused(native, 422, "112x112", "limit of 10000 px", "SAMTUNE_MAX_IMAGE_PIXELS")
    v1 = client.post("/infer/instance_segmentation",
                     json={"model_id": reference, "api_key": key, "image": {"type": "base64", "value": _b64(test_image)}})  # fmt: skip
    _refused(v1, 422, "SAMTUNE_MAX_IMAGE_PIXELS")
    v0 = client.post(f"/{reference}", params={"api_key": key}, content=_b64(test_image))
    _refused(v0, 422, "SAMTUNE_MAX_IMAGE_PIXELS")


def test_a_drawn_answer_is_bounded(
    jobs_kit: JobKit, limited: TestClient, test_image: bytes, reference: str
) -> None:
    """?visualize=true decodes every mask at the image's full size: past SAMTUNE_MAX_VISUALIZE_PIXELS it is
    refused (JSON of the same image is still answered)."""
    image = {"image": ("x.jpg", test_image)}
    _refused(limited.post(f"{BASE}?visualize=true", headers=jobs_kit.auth, files=image),
             422, "112x112", "limit of 10000 px", "SAMTUNE_MAX_VISUALIZE_PIXELS")  # fmt: skip
    assert limited.post(BASE, headers=jobs_kit.auth, files=image).status_code == 200
    small = jpeg_bytes(100, 100)
    drawn = limited.post(f"{BASE}?visualize=true", headers=jobs_kit.auth, files={"image": ("x.jpg", small)})
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png", drawn.text
    v0 = limited.post(f"/{reference}", params={"api_key": _key(jobs_kit), "visualize_predictions": "true"},
                      content=_b64(test_image))  # fmt: skip
    _refused(v0, 422, "SAMTUNE_MAX_VISUALIZE_PIXELS")


def test_predict_bodies_are_bounded_per_route(
    jobs_kit: JobKit, limited: TestClient, test_image: bytes
) -> None:
    big = b"x" * (LIMITS["max_predict_bytes"] + 1)
    _refused(limited.post(BASE, headers=jobs_kit.auth, files={"image": ("x.jpg", big)}),
             413, "SAMTUNE_MAX_PREDICT_BYTES")  # fmt: skip
    _refused(limited.post("/infer/instance_segmentation", json={"model_id": "x/1", "image": {"value": "A" * len(big)}},
                          headers=jobs_kit.auth), 413, "SAMTUNE_MAX_PREDICT_BYTES")  # fmt: skip
    # Any other route takes a little: a JSON body past SAMTUNE_MAX_REQUEST_BYTES is refused, declared or chunked
    # (FastAPI turned an error raised while it read the body into a 400).
    padded = {"name": "x", "description": "y" * LIMITS["max_request_bytes"]}
    _refused(
        limited.post("/api/v1/datasets", headers=jobs_kit.auth, json=padded), 413, "SAMTUNE_MAX_REQUEST_BYTES"
    )
    chunked = limited.post("/api/v1/datasets", headers=jobs_kit.auth | {"content-type": "application/json"},
                           content=iter([json.dumps(padded).encode()]))  # fmt: skip
    _refused(chunked, 413, "SAMTUNE_MAX_REQUEST_BYTES")


def test_every_route_has_its_body_limit(tmp_path: Path) -> None:
    """Multi-gigabyte bodies only for dataset uploads; predictions get SAMTUNE_MAX_PREDICT_BYTES; the rest
    SAMTUNE_MAX_REQUEST_BYTES."""
    settings = Settings(data_dir=tmp_path)
    limits = BodySizeLimit(lambda *_: None, **body_limits(settings))  # type: ignore[arg-type]
    paths = create_app(settings).openapi()["paths"]
    predict = {"/api/v1/models/{model_id}/predict", "/api/v1/base-models/{owner}/{name}/predict",
               "/infer/instance_segmentation", "/{project}/{version}",
               # Roboflow's one-image upload and its annotation (a COCO file may list a whole project)
               "/dataset/{project}/upload", "/dataset/{project}/annotate/{image_id}"}  # fmt: skip
    for path, operations in paths.items():
        if not set(operations) & {"post", "put", "patch"}:
            continue
        limit = limits.limit_for(path)
        if path == "/api/v1/datasets/{dataset_id}/uploads":
            assert (limit.setting, limit.max_bytes) == ("SAMTUNE_MAX_UPLOAD_BYTES", settings.max_upload_bytes)
        elif path in predict:
            assert (limit.setting, limit.max_bytes) == ("SAMTUNE_MAX_PREDICT_BYTES", 32 * 2**20), path
        else:
            assert (limit.setting, limit.max_bytes) == ("SAMTUNE_MAX_REQUEST_BYTES", 2**20), path


# --- bad input --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        {"data": {"boxes": "[[NaN, 0, 10, 10]]"}},
        {"data": {"boxes": "[[0, 0, Infinity, 10]]"}},
        {"data": {"confidence": "nan"}},
        {"json": '{"image": "IMG", "boxes": [[0, 0, NaN, 10]]}'},
        {"json": '{"image": "IMG", "confidence": NaN}'},
        {"json": '{"image": "IMG", "confidence": -Infinity}'},
        {"infer": '"confidence": NaN'},
        {"infer": '"iou_threshold": Infinity'},
        {"hosted": {"confidence": "nan"}},
        {"hosted": {"confidence": "inf"}},
    ],
)
def test_non_finite_numbers_are_422(
    jobs_kit: JobKit, test_image: bytes, reference: str, case: dict[str, Any]
) -> None:
    client, auth = jobs_kit.client, jobs_kit.auth
    if "data" in case:
        r = client.post(BASE, headers=auth, files={"image": ("x.jpg", test_image)}, data=case["data"])
    elif "json" in case:
        content = case["json"].replace("IMG", _b64(test_image))
        r = client.post(BASE, headers=auth | {"content-type": "application/json"}, content=content)
    elif "infer" in case:
        content = (f'{{"model_id": "{reference}", "image": {{"type": "base64", "value": "{_b64(test_image)}"}}, '
                   f'{case["infer"]}}}')  # fmt: skip
        r = client.post("/infer/instance_segmentation", headers=auth | {"content-type": "application/json"},
                        content=content)  # fmt: skip
    else:
        r = client.post(f"/{reference}", headers=auth, params=case["hosted"], content=_b64(test_image))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("field", ["prompts", "confidence", "boxes", "max_detections"])
def test_a_text_field_sent_as_a_file_is_422(jobs_kit: JobKit, test_image: bytes, field: str) -> None:
    """It became the text `UploadFile(filename=...)`, a prompt the model was then asked for."""
    files = [("image", ("x.jpg", test_image, "image/jpeg")), (field, ("p.txt", b"circle", "text/plain"))]
    r = jobs_kit.client.post(BASE, headers=jobs_kit.auth, files=files)
    _refused(r, 422, field, "text field")
    assert "UploadFile" not in r.text


# --- the key before the body ----------------------------------------------------------------------------------


def _streamed(total: int, sent: list[int], chunk: int = 256 * 1024) -> Iterator[bytes]:
    block = b"A" * chunk
    while sent[0] < total:
        sent[0] += chunk
        yield block


@pytest.mark.timeout(120)
def test_a_wrong_key_is_refused_before_the_body_is_read(jobs_kit: JobKit, reference: str) -> None:
    """300 MB sent with a wrong key: 401 while the client is still sending, every kind of route (a multipart
    predict, a dataset upload, a JSON body FastAPI parses, Roboflow's routes with the key in the query)."""
    total = 300 * 2**20
    wrong = {"Authorization": "Bearer st_0000000000wrong"}
    cases = [
        (BASE, wrong | {"content-type": "multipart/form-data; boundary=x"}, {}),
        (f"/api/v1/datasets/{jobs_kit.dataset_id}/uploads", wrong | {"content-type": "multipart/form-data; boundary=x"}, {}),
        ("/api/v1/jobs", wrong | {"content-type": "application/json"}, {}),
        ("/infer/instance_segmentation", {"content-type": "application/json"}, {"api_key": "st_0000000000wrong"}),
        (f"/{reference}", {"content-type": "application/x-www-form-urlencoded"}, {"api_key": "st_0000000000wrong"}),
        # No key at all where the route checks it before reading: the same.
        (BASE, {"content-type": "multipart/form-data; boundary=x"}, {}),
        (f"/{reference}", {"content-type": "application/x-www-form-urlencoded"}, {}),
    ]  # fmt: skip
    with LiveServer(jobs_kit.make_app(jobs_kit.settings)) as server, httpx.Client(timeout=60) as http:
        for path, headers, params in cases:
            sent = [0]
            r = http.post(
                f"{server.url}{path}", headers=headers, params=params, content=_streamed(total, sent)
            )
            assert r.status_code == 401, (path, r.status_code, r.text)
            # What the sockets' buffers took before the answer came, not the body.
            assert sent[0] < 32 * 2**20, (path, sent[0])


# --- the service answers while the largest allowed requests run ----------------------------------------------


@pytest.mark.timeout(300)
def test_healthz_and_other_clients_answer_under_abusive_requests(
    jobs_kit: JobKit, test_image: bytes, tmp_path: Path
) -> None:
    """A real server: the longest prompt list allowed, several at once, and a large image drawn on, all queued on
    the one inference thread; meanwhile /healthz answers, and another client's prediction is answered."""
    settings = jobs_kit.settings
    env = samtune_env({"data_dir": settings.data_dir, "database_url": settings.database_url,
                       "storage_url": settings.storage_url, "secret_key": "jobs-tests-signing-key",
                       "worker_device": "cpu"})  # fmt: skip
    prompts = [f"{i} " + "x" * (settings.max_prompt_chars - 8) for i in range(settings.max_prompts)]
    side = int(settings.max_visualize_pixels**0.5)
    large = jpeg_bytes(side, side, seed=5)
    ended: list[float] = []
    statuses: list[int] = []

    def abuse(kind: str) -> None:
        with httpx.Client(timeout=240) as http:
            if kind == "prompts":
                r = http.post(f"{server.url}{BASE}", headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)},
                              data={"prompts": prompts, "confidence": "0", "max_detections": "1000"})  # fmt: skip
            else:
                r = http.post(f"{server.url}{BASE}?visualize=true", headers=jobs_kit.auth,
                              files={"image": ("x.jpg", large)}, data={"confidence": "0", "max_detections": "1000"})  # fmt: skip
        statuses.append(r.status_code)
        ended.append(time.monotonic())

    other: list[int] = []

    def another_client() -> None:
        r = httpx.post(f"{server.url}{BASE}", headers=jobs_kit.new_auth(), files={"image": ("x.jpg", test_image)},
                       timeout=240)  # fmt: skip
        other.append(r.status_code)

    with uvicorn_server(env, tmp_path / "server.log") as server:
        # Warm: the model loaded, so what runs below is the abuse, not the first load.
        assert httpx.post(f"{server.url}{BASE}", headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)},
                          timeout=120).status_code == 200  # fmt: skip
        threads = [
            threading.Thread(target=abuse, args=(k,)) for k in ("prompts", "prompts", "visualize", "prompts")
        ]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the abusive requests are sent and queued first
        bystander = threading.Thread(target=another_client)
        bystander.start()
        health: list[tuple[float, float]] = []  # (when answered, seconds taken)
        try:
            with httpx.Client(timeout=10) as http:
                t0 = time.monotonic()
                while len(ended) < len(threads) and time.monotonic() - t0 < 240:
                    start = time.monotonic()
                    assert http.get(f"{server.url}/healthz").status_code == 200
                    health.append((time.monotonic(), time.monotonic() - start))
                    time.sleep(0.2)
        finally:
            for t in [*threads, bystander]:
                t.join(timeout=240)
    assert statuses == [200] * len(threads), statuses
    assert other == [200]
    in_flight = [taken for when, taken in health if when < max(ended)]
    assert in_flight, "no /healthz answered while the abusive requests ran"
    assert max(taken for _, taken in health) < 10, health
