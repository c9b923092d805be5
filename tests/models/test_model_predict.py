"""Predict, in the shape of Roboflow's inference server, answering what the trainer's own predictor answers:
multipart or JSON, polygons or RLE, prompts or box exemplars, a drawn PNG, a base model zero-shot; bad input
named; other routes answering while predictions run."""

from __future__ import annotations

import base64
import io
import json
import uuid
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.support.jobs import JobKit
from trainer.base_model import EMBEDDED_BASE_DIR, load_base_model
from trainer.predict import Predictor


def test_predict_roboflow_shape_and_same_as_trainer(jobs_kit: JobKit, model_id: str, test_image: bytes,
                                                    tmp_path: Path) -> None:  # fmt: skip
    kit = jobs_kit
    r = kit.client.post(f"/api/v1/models/{model_id}/predict", headers=kit.auth,
                        files={"image": ("x.jpg", test_image, "image/jpeg")},
                        data={"confidence": "0.05", "mask_format": "rle"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    # Where the server's time went, for clients and bench/predict.py.
    parts = dict(part.strip().split(";", 1) for part in r.headers["server-timing"].split(","))
    assert set(parts) == {"decode", "predict", "encode", "forward", "batch", "embedding"}, parts
    durations = {k: float(parts[k].removeprefix("dur=")) for k in ("decode", "predict", "encode", "forward")}
    assert all(d >= 0 for d in durations.values()), parts
    assert durations["forward"] <= durations["predict"], parts  # the batch's forward is inside its wait
    assert parts["batch"] == "desc=1" and parts["embedding"] in ("desc=computed", "desc=reused"), parts
    body = r.json()
    assert set(body) == {"inference_id", "time", "image", "predictions"}
    assert body["image"] == {"width": 112, "height": 112}
    # The trainer's predictor on the downloaded model gives the same answer.
    zipfile.ZipFile(
        io.BytesIO(kit.client.get(f"/api/v1/models/{model_id}/download", headers=kit.auth).content)
    ).extractall(tmp_path)
    loaded = load_base_model(str(tmp_path))
    classes = kit.client.get(f"/api/v1/models/{model_id}", headers=kit.auth).json()["classes"]
    expected = Predictor(loaded).predict(Image.open(io.BytesIO(test_image)), classes, confidence=0.05)
    assert len(body["predictions"]) == len(expected)
    for got, want in zip(body["predictions"], expected, strict=True):
        assert set(got) >= {
            "x",
            "y",
            "width",
            "height",
            "confidence",
            "class",
            "class_id",
            "detection_id",
            "rle",
        }
        assert got["class"] == want.prompt and got["class_id"] == classes.index(want.prompt)
        assert got["confidence"] == pytest.approx(want.score, abs=1e-4)
        x, y, w, h = want.bbox
        assert (got["x"], got["y"], got["width"], got["height"]) == pytest.approx(
            (x + w / 2, y + h / 2, w, h), abs=1e-3
        )
        assert got["rle"]["counts"] == want.rle["counts"] and got["rle"]["size"] == [112, 112]


def test_predict_polygons_and_prompts(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    kit = jobs_kit
    r = kit.client.post(f"/api/v1/models/{model_id}/predict", headers=kit.auth,
                        files={"image": ("x.jpg", test_image)},
                        data={"confidence": "0.0", "prompts": ["purple shape"], "max_detections": "5"})  # fmt: skip
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert 0 < len(preds) <= 5 and {p["class"] for p in preds} == {"purple shape"}
    with_points = [p for p in preds if p["points"]]
    assert with_points, preds
    for p in with_points:
        assert all(0 <= pt["x"] <= 112 and 0 <= pt["y"] <= 112 for pt in p["points"])


@pytest.mark.parametrize(
    ("files", "data", "status", "words"),
    [
        ({"image": ("x.jpg", b"not an image", "image/jpeg")}, {}, 422, "image"),
        ({"image": ("x.jpg", b"")}, {}, 422, "image"),
        (None, {"prompts": ["x"]}, 415, "multipart"),
        ("IMAGE", {"prompts": ["", "  "]}, 422, "prompts"),
        ("IMAGE", {"mask_format": "svg"}, 422, "mask_format"),
        ("IMAGE", {"confidence": "2"}, 422, "confidence"),
    ],
)
def test_predict_bad_input(
    jobs_kit: JobKit, model_id: str, test_image: bytes, files, data, status, words
) -> None:
    if files == "IMAGE":
        files = {"image": ("x.jpg", test_image)}
    r = jobs_kit.client.post(
        f"/api/v1/models/{model_id}/predict", headers=jobs_kit.auth, files=files, data=data
    )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert words in r.text


def test_predict_json_base64_and_visualize(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    kit = jobs_kit
    url = f"/api/v1/models/{model_id}/predict"
    multipart = kit.client.post(url, headers=kit.auth, files={"image": ("x.jpg", test_image)},
                                data={"confidence": "0.05", "mask_format": "rle"}).json()  # fmt: skip
    b64 = base64.b64encode(test_image).decode()
    for image in (b64, "data:image/jpeg;base64," + b64):
        r = kit.client.post(
            url, headers=kit.auth, json={"image": image, "confidence": 0.05, "mask_format": "rle"}
        )
        assert r.status_code == 200, r.text
        assert [(p["class"], p["confidence"], p["rle"]) for p in r.json()["predictions"]] == [
            (p["class"], p["confidence"], p["rle"]) for p in multipart["predictions"]
        ]
    bad = kit.client.post(url, headers=kit.auth, json={"image": "%%%", "confidence": 0.05})
    assert bad.status_code == 422 and "base64" in bad.text
    bad = kit.client.post(url, headers=kit.auth, json={"image": b64, "colour": "red"})
    assert bad.status_code == 422 and "colour" in bad.text
    png = kit.client.post(url + "?visualize=true", headers=kit.auth, files={"image": ("x.jpg", test_image)},
                          data={"confidence": "0.05"})  # fmt: skip
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(png.content))
    assert drawn.size == (112, 112)
    plain = Image.open(io.BytesIO(test_image)).convert("RGB")
    assert list(drawn.convert("RGB").getdata()) != list(plain.getdata()), "masks drawn on the image"


def test_predict_with_box_exemplars(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    kit = jobs_kit
    url = f"/api/v1/models/{model_id}/predict"
    box = [20.0, 20.0, 60.0, 60.0]
    multipart = kit.client.post(url, headers=kit.auth, files={"image": ("x.jpg", test_image)},
                                data={"confidence": "0.0", "boxes": json.dumps([box]), "prompts": ["purple shape"]})  # fmt: skip
    assert multipart.status_code == 200, multipart.text
    body = kit.client.post(url, headers=kit.auth, json={"image": base64.b64encode(test_image).decode(),
                                                        "confidence": 0.0, "boxes": [box], "prompts": ["purple shape"]})  # fmt: skip
    assert [p["confidence"] for p in body.json()["predictions"]] == [
        p["confidence"] for p in multipart.json()["predictions"]
    ]
    plain = kit.client.post(url, headers=kit.auth, files={"image": ("x.jpg", test_image)},
                            data={"confidence": "0.0", "prompts": ["purple shape"]}).json()  # fmt: skip
    assert [p["confidence"] for p in plain["predictions"]] != [
        p["confidence"] for p in multipart.json()["predictions"]
    ]
    alone = kit.client.post(url, headers=kit.auth, files={"image": ("x.jpg", test_image)},
                            data={"confidence": "0.0", "boxes": json.dumps([box])})  # fmt: skip
    assert alone.status_code == 200 and {p["class"] for p in alone.json()["predictions"]} == {"visual"}
    for bad in ("[[1, 2, 3]]", "[[50, 50, 10, 10]]", "[[0, 0, 500, 500]]", "not json"):
        r = kit.client.post(
            url, headers=kit.auth, files={"image": ("x.jpg", test_image)}, data={"boxes": bad}
        )
        assert r.status_code == 422 and "box" in r.text, (bad, r.text)


def test_predict_too_large_and_unknown_model(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    small = jobs_kit.make_client(jobs_kit.make_settings(max_predict_bytes=100))
    r = small.post(
        f"/api/v1/models/{model_id}/predict", headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)}
    )
    assert r.status_code == 413, r.text
    bombs = jobs_kit.make_client(jobs_kit.make_settings(max_image_pixels=1000))
    r = bombs.post(
        f"/api/v1/models/{model_id}/predict", headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)}
    )
    assert r.status_code == 422 and "decompression bomb" in r.text, r.text
    r = jobs_kit.client.post(f"/api/v1/models/{uuid.uuid4()}/predict", headers=jobs_kit.auth,
                             files={"image": ("x.jpg", test_image)})  # fmt: skip
    assert r.status_code == 404


def test_base_model_predicts_zero_shot(jobs_kit: JobKit, tmp_path: Path) -> None:
    """Try a base model before training: the bundled one finds its own concepts, by default all four."""
    from trainer.synth import PRETRAIN_CONCEPTS, write_dataset

    data = write_dataset(tmp_path / "d", list(PRETRAIN_CONCEPTS), {"test": 1}, size=112, seed=11)
    image = sorted((data / "test").glob("*.jpg"))[0].read_bytes()
    url = "/api/v1/base-models/samtune/sam3-tiny-shapes/predict"
    r = jobs_kit.client.post(
        url, headers=jobs_kit.auth, files={"image": ("x.jpg", image)}, data={"confidence": "0.3"}
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert preds and {p["class"] for p in preds} <= {c.name for c in PRETRAIN_CONCEPTS}
    expected = Predictor(load_base_model(str(EMBEDDED_BASE_DIR))).predict(
        Image.open(io.BytesIO(image)), [c.name for c in PRETRAIN_CONCEPTS], confidence=0.3
    )
    assert [(p["class"], p["confidence"]) for p in preds] == [(e.prompt, round(e.score, 4)) for e in expected]
    unknown = jobs_kit.client.post("/api/v1/base-models/nobody/nothing/predict", headers=jobs_kit.auth,
                                   files={"image": ("x.jpg", image)})  # fmt: skip
    assert unknown.status_code == 422 and "unknown base model" in unknown.text


def test_healthz_stays_fast_while_predicting(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    """Loading and inference run off the event loop: other routes answer while predictions run."""
    import threading
    import time

    import httpx

    from tests.support.servers import LiveServer

    with LiveServer(jobs_kit.make_app(jobs_kit.settings)) as server:
        stop = threading.Event()
        done: list[int] = []

        def hammer() -> None:
            with httpx.Client(timeout=60) as c:
                while not stop.is_set():
                    r = c.post(f"{server.url}/api/v1/models/{model_id}/predict", headers=jobs_kit.auth,
                               files={"image": ("x.jpg", test_image)})  # fmt: skip
                    done.append(r.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            latencies = []
            with httpx.Client(timeout=10) as c:
                for _ in range(20):
                    t0 = time.perf_counter()
                    assert c.get(f"{server.url}/healthz").status_code == 200
                    latencies.append(time.perf_counter() - t0)
                    time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    assert done and set(done) == {200}
    assert sorted(latencies)[len(latencies) // 2] < 0.1, latencies
