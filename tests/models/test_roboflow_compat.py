"""Roboflow's inference-sdk (`InferenceHTTPClient`, v1 and v0 modes) against a real samtune server, and the
compatibility routes' errors. The SDK lives in its own venv (.venv-sdk, made by `make install-dev`)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.jobs import JobKit
from tests.support.servers import LiveServer

SDK_PYTHON = Path(__file__).resolve().parents[2] / ".venv-sdk" / "bin" / "python"

CLIENT = """
import json, sys
from inference_sdk import InferenceConfiguration, InferenceHTTPClient
url, key, model_id, image = sys.argv[1:5]
client = InferenceHTTPClient(api_url=url, api_key=key)
client.configure(InferenceConfiguration(confidence_threshold=0.05))
added = client.load_model(model_id)
listed = client.list_loaded_models()
v1 = client.infer(image, model_id=model_id)
with client.use_api_v0():
    v0 = client.infer(image, model_id=model_id)
print(json.dumps({"added": [m.model_id for m in added.models], "listed": [(m.model_id, str(m.task_type)) for m in listed.models],
                  "v1": v1, "v0": v0}))
"""


@pytest.fixture(scope="module")
def served(jobs_kit: JobKit) -> tuple[str, str, bytes]:
    """(the model's Roboflow id, its uuid, a test image)."""
    job = jobs_kit.create()
    assert jobs_kit.run(job["id"]) == "succeeded"
    model = jobs_kit.client.get(
        f"/api/v1/models/{jobs_kit.get(job['id'])['model_id']}", headers=jobs_kit.auth
    ).json()
    jobs_kit.dataset_zip()
    image = sorted((jobs_kit.root / "synth" / "test").glob("*.jpg"))[0].read_bytes()
    return model["version_name"], model["id"], image


def _key(kit: JobKit) -> str:
    return kit.auth["Authorization"].removeprefix("Bearer ")


@pytest.mark.timeout(300)
def test_inference_sdk_v1_and_v0(jobs_kit: JobKit, served: tuple[str, str, bytes], tmp_path: Path) -> None:
    assert SDK_PYTHON.exists(), "make install-dev creates .venv-sdk with Roboflow's inference-sdk"
    model_id, _, image = served
    (tmp_path / "x.jpg").write_bytes(image)
    (tmp_path / "client.py").write_text(CLIENT)
    with LiveServer(jobs_kit.make_app(jobs_kit.settings)) as server:
        done = subprocess.run([str(SDK_PYTHON), str(tmp_path / "client.py"), server.url, _key(jobs_kit), model_id,
                               str(tmp_path / "x.jpg")], capture_output=True, text=True, timeout=240)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert model_id in out["added"] and (model_id, "instance-segmentation") in [
            tuple(x) for x in out["listed"]
        ]
        native = httpx.post(f"{server.url}/api/v1/models/{served[1]}/predict", headers=jobs_kit.auth,
                            files={"image": ("x.jpg", image)}, data={"confidence": "0.05"}).json()  # fmt: skip
    for mode in ("v1", "v0"):
        r = out[mode]
        assert r["image"] == {"width": 112, "height": 112}, mode
        assert len(r["predictions"]) == len(native["predictions"]) > 0, mode
        for got, want in zip(r["predictions"], native["predictions"], strict=True):
            assert got["class"] == want["class"] and got["confidence"] == pytest.approx(
                want["confidence"], abs=1e-4
            )
            assert (got["x"], got["y"]) == pytest.approx((want["x"], want["y"]), abs=0.5)
            assert [c for q in got["points"] for c in (q["x"], q["y"])] == pytest.approx(
                [c for q in want["points"] for c in (q["x"], q["y"])], abs=0.5
            ), mode
        assert any(p["points"] for p in r["predictions"]), mode


def test_compat_routes_errors(jobs_kit: JobKit, served: tuple[str, str, bytes]) -> None:
    kit, (model_id, uuid_, image) = jobs_kit, served
    b64 = base64.b64encode(image).decode()
    key = _key(kit)
    body = {
        "model_id": model_id,
        "image": {"type": "base64", "value": b64},
        "api_key": key,
        "confidence": 0.05,
    }
    ok = kit.client.post("/infer/instance_segmentation", json=body)
    assert ok.status_code == 200 and ok.json()["predictions"], ok.text
    assert kit.client.post("/infer/instance_segmentation", json=body | {"model_id": uuid_}).status_code == 200
    many = kit.client.post("/infer/instance_segmentation", json=body | {"image": [body["image"]] * 2})
    assert many.status_code == 200 and len(many.json()) == 2
    rle = kit.client.post("/infer/instance_segmentation", json=body | {"response_mask_format": "rle"}).json()
    assert all("rle" in p and "points" not in p for p in rle["predictions"])
    cases = [
        (body | {"image": {"type": "url", "value": "http://169.254.169.254/"}}, 400, "base64"),
        (body | {"image": {"type": "base64", "value": "http://example.com/x.jpg"}}, 400, "URL"),
        (body | {"image": {"type": "base64", "value": base64.b64encode(b"nope").decode()}}, 422, "image"),
        (body | {"model_id": "nothing/9"}, 404, "nothing/9"),
        (body | {"api_key": "st_wrong"}, 401, ""),
        (body | {"response_mask_format": "svg"}, 422, "response_mask_format"),
    ]
    for case, status, words in cases:
        r = kit.client.post("/infer/instance_segmentation", json=case)
        assert r.status_code == status, (case.get("model_id"), r.text)
        assert words in r.text
    slug, version = model_id.split("/")
    v0 = kit.client.post(f"/{slug}/{version}", params={"api_key": key, "confidence": "5"}, content=b64,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert v0.status_code == 200 and v0.json()["predictions"], v0.text
    assert kit.client.post(f"/{slug}/{version}", params={"api_key": key}, content=b"").status_code == 400
    assert kit.client.get("/model/registry", params={"api_key": "st_wrong"}).status_code == 401
    assert kit.client.post("/model/add", json={"model_id": "nothing/1", "api_key": key}).status_code == 404
