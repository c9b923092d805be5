"""The inference tier (issue 16): requests batched across clients answer what one-by-one requests answer; the
same image asked again reuses its vision embedding and answers what a fresh encoding would; a model over the
device-memory budget is refused before loading; and `samtune inference` services behind the API: internal calls
need the internal token, clients may call a service directly with their key, and when one of two services is
killed mid-load every request is still answered (no 5xx, none lost)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycocotools import mask as mask_utils

from app.inference import local
from app.inference.calls import ModelSpec, PredictCall, encode_call
from app.inference.local import LocalInference
from app.inference.remote import INTERNAL_TOKEN_HEADER
from app.models import service
from app.models.schemas import PredictOptions
from tests.hardening.live import samtune_env
from tests.support.jobs import JobKit
from tests.support.ports import free_port
from tests.support.servers import LiveServer, ServerProcess
from trainer.base_model import EMBEDDED_BASE

pytestmark = pytest.mark.timeout(600)
BASE = f"/api/v1/base-models/{EMBEDDED_BASE}/predict"


def _images(kit: JobKit) -> list[bytes]:
    kit.dataset_zip()
    return [p.read_bytes() for p in sorted((kit.root / "synth").glob("*/*.jpg"))]


def _stable(body: bytes) -> dict[str, Any]:
    """An answer without what differs by design between two askings (ids, timings)."""
    answer = json.loads(body)
    answer.pop("inference_id"), answer.pop("time")
    for p in answer["predictions"]:
        p.pop("detection_id")
    return answer


def _same(got: bytes, expected: bytes) -> None:
    """Equal within float tolerance: a batched forward's kernels sum in another order than one request's."""
    g, e = _stable(got), _stable(expected)
    assert g["image"] == e["image"]
    assert [(p["class"], p["class_id"]) for p in g["predictions"]] == [
        (p["class"], p["class_id"]) for p in e["predictions"]
    ]
    for a, b in zip(g["predictions"], e["predictions"], strict=True):
        for k in ("x", "y", "width", "height"):
            assert a[k] == pytest.approx(b[k], abs=0.05), (k, a, b)
        assert a["confidence"] == pytest.approx(b["confidence"], abs=2e-3)
        ma, mb = (mask_utils.decode({"size": p["rle"]["size"], "counts": p["rle"]["counts"].encode()})
                  for p in (a, b))  # fmt: skip
        assert (ma & mb).sum() >= 0.98 * (ma | mb).sum(), "the same mask, give or take an edge pixel"


def _spec(kit: JobKit) -> ModelSpec:
    return service.base_spec(kit.settings, EMBEDDED_BASE)


def _ask(inference: LocalInference, spec: ModelSpec, image: bytes, prompts: list[str] | None) -> Any:
    options = PredictOptions(prompts=prompts, confidence=0.05, mask_format="rle")
    return inference.predict(PredictCall(model=spec, options=options), image)


def test_batched_answers_equal_one_by_one(jobs_kit: JobKit) -> None:
    images = _images(jobs_kit)
    asks = [(images[i % len(images)], prompts) for i, prompts in
            enumerate([None, ["red shape"], ["green shape", "blue shape"], None, ["shape"], ["red shape"]])]  # fmt: skip
    batched = LocalInference(
        jobs_kit.make_settings(batch_max_size=8, batch_max_wait_ms=300), jobs_kit.storage
    )
    alone = LocalInference(jobs_kit.make_settings(batch_max_size=1, batch_max_wait_ms=0), jobs_kit.storage)
    spec = _spec(jobs_kit)

    async def together() -> list[Any]:
        return await asyncio.gather(*(_ask(batched, spec, image, prompts) for image, prompts in asks))

    async def one_by_one() -> list[Any]:
        return [await _ask(alone, spec, image, prompts) for image, prompts in asks]

    got, expected = asyncio.run(together()), asyncio.run(one_by_one())
    assert max(batched.batcher.batch_sizes) > 1, list(batched.batcher.batch_sizes)
    assert set(alone.batcher.batch_sizes) == {1}
    assert any("batch;desc=" in a.timing and "batch;desc=1," not in a.timing for a in got), [
        a.timing for a in got
    ]
    for g, e in zip(got, expected, strict=True):
        assert g.status == e.status == 200, (g.body, e.body)
        _same(g.body, e.body)
    assert any(_stable(a.body)["predictions"] for a in got), "something was found"


def test_a_repeated_image_reuses_its_embedding_and_answers_the_same(jobs_kit: JobKit) -> None:
    image = _images(jobs_kit)[0]
    spec = _spec(jobs_kit)
    warm = LocalInference(jobs_kit.make_settings(), jobs_kit.storage)

    async def twice() -> tuple[Any, Any]:
        return await _ask(warm, spec, image, ["green shape"]), await _ask(warm, spec, image, ["red shape"])

    first, second = asyncio.run(twice())
    assert "embedding;desc=computed" in first.timing and "embedding;desc=reused" in second.timing
    fresh = asyncio.run(
        _ask(LocalInference(jobs_kit.make_settings(), jobs_kit.storage), spec, image, ["red shape"])
    )
    assert "embedding;desc=computed" in fresh.timing
    assert _stable(second.body) == _stable(fresh.body)


def test_a_request_is_resized_for_a_loaded_model_before_it_reaches_the_inference_thread(
    jobs_kit: JobKit,
) -> None:
    """The model's resize runs where the request is decoded (the thread pool, in parallel across requests),
    once the model is loaded and unless the image's embedding is cached: the inference thread only feeds the
    device (bench/gpu_breakdown.py measured that resize at tens of ms per image at SAM 3's 1008 px)."""
    image = _images(jobs_kit)[0]
    spec = _spec(jobs_kit)
    inference = LocalInference(jobs_kit.make_settings(), jobs_kit.storage)
    call = PredictCall(model=spec, options=PredictOptions(prompts=["red shape"]))
    assert inference._decode(call, image).pixels is None, "no model loaded yet: the inference thread resizes"
    asyncio.run(inference.load(spec))
    item = inference._decode(call, image)
    size = inference.served(spec).predictor.loaded.image_size
    assert item.pixels is not None and tuple(item.pixels.shape) == (3, size, size)
    asyncio.run(inference.predict(call, image))
    assert inference._decode(call, image).pixels is None, "its embedding is cached: nothing to resize"


def test_a_small_request_skips_the_thread_pool_a_large_one_does_not_and_both_answer_the_same(
    jobs_kit: JobKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 112 px image for the bundled 112 px model is decoded and answered on the event loop (cheaper than two
    trips through the thread pool); over INLINE_PIXELS (SAM 3's 1008 px always is) both go to the pool. The
    answer is the same either way."""
    image = _images(jobs_kit)[0]
    inference = LocalInference(jobs_kit.make_settings(), jobs_kit.storage)
    call = PredictCall(model=_spec(jobs_kit), options=PredictOptions(prompts=["red shape"], mask_format="rle",
                                                                      confidence=0.05))  # fmt: skip
    ran: list[tuple[str, bool]] = []
    for step in ("_decode", "_encode"):
        original = getattr(inference, step)

        def record(*args: Any, _original: Any = original, _step: str = step) -> Any:
            ran.append((_step, threading.current_thread() is loop_thread))
            return _original(*args)

        monkeypatch.setattr(inference, step, record)

    async def ask() -> bytes:
        return (await inference.predict(call, image)).body

    loop_thread = threading.current_thread()  # asyncio.run runs the loop on this thread
    small = asyncio.run(ask())
    assert ran == [("_decode", True), ("_encode", True)]
    ran.clear()
    monkeypatch.setattr(local, "INLINE_PIXELS", 0)
    large = asyncio.run(ask())
    assert ran == [("_decode", False), ("_encode", False)]
    _same(large, small)
    assert _stable(small)["predictions"], "an answer with instances, so that encoding them was compared"


def test_a_model_over_the_memory_budget_is_refused_before_it_loads(
    jobs_kit: JobKit, test_image: bytes
) -> None:
    client = jobs_kit.make_client(jobs_kit.make_settings(model_cache_bytes=1000))
    r = client.post(BASE, headers=jobs_kit.auth, files={"image": ("x.jpg", test_image)})
    assert r.status_code == 503, r.text
    assert "SAMTUNE_MODEL_CACHE_BYTES" in r.json()["detail"], r.text


# --- services behind the API ---------------------------------------------------------------------------------


def _service(kit: JobKit, tmp_path: Path, name: str) -> ServerProcess:
    s = kit.settings
    env = samtune_env({"data_dir": s.data_dir, "database_url": s.database_url, "storage_url": s.storage_url,
                       "secret_key": s.secret_key, "batch_max_wait_ms": 5})  # fmt: skip
    port = free_port()
    argv = [sys.executable, "-m", "app.cli", "inference", "--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess(argv, port=port, env=env, log_path=tmp_path / f"{name}.log", name=name)


def test_two_services_behind_the_api_one_killed_mid_load(
    jobs_kit: JobKit, model_id: str, tmp_path: Path
) -> None:
    images = _images(jobs_kit)
    key = jobs_kit.auth["Authorization"].removeprefix("Bearer ")
    reference = jobs_kit.client.get(f"/api/v1/models/{model_id}", headers=jobs_kit.auth).json()[
        "version_name"
    ]
    first, second = _service(jobs_kit, tmp_path, "inference-a"), _service(jobs_kit, tmp_path, "inference-b")
    with first.start(timeout=120), second.start(timeout=120):
        # Internal calls need the internal token; a client's key does not open them.
        spec = _spec(jobs_kit)
        call = encode_call(PredictCall(model=spec, options=PredictOptions()), images[0])
        for headers in ({}, {INTERNAL_TOKEN_HEADER: "wrong"}, jobs_kit.auth):
            r = httpx.post(f"{first.url}/internal/v1/predict", content=call, headers=headers, timeout=60)
            assert r.status_code == 401, r.text
        r = httpx.post(f"{first.url}/internal/v1/predict", content=call, timeout=120,
                       headers={INTERNAL_TOKEN_HEADER: jobs_kit.settings.internal_token})  # fmt: skip
        assert r.status_code == 200, r.text
        # A client may call a service directly with its key, on the native and the Roboflow routes.
        r = httpx.post(f"{second.url}/api/v1/models/{model_id}/predict", headers=jobs_kit.auth,
                       files={"image": ("x.jpg", images[0])}, timeout=120)  # fmt: skip
        assert r.status_code == 200 and "predictions" in r.json(), r.text
        r = httpx.post(f"{second.url}/api/v1/models/{model_id}/predict", files={"image": ("x.jpg", images[0])},
                       timeout=60)  # fmt: skip
        assert r.status_code == 401, r.text

        settings = jobs_kit.make_settings(inference_urls=f"{first.url},{second.url}")
        statuses: list[int] = []
        answered = threading.Event()
        lock = threading.Lock()

        with LiveServer(jobs_kit.make_app(settings)) as api:

            def client(n: int) -> None:
                with httpx.Client(base_url=api.url, timeout=120) as http:
                    for i in range(8):
                        image = images[(n + i) % len(images)]
                        if i % 2:
                            r = http.post(f"/api/v1/models/{model_id}/predict", headers=jobs_kit.auth,
                                          files={"image": ("x.jpg", image)}, data={"prompts": ["red shape"]})  # fmt: skip
                        else:
                            r = http.post(f"/{reference}", params={"api_key": key},
                                          content=base64.b64encode(image))  # fmt: skip
                        with lock:
                            statuses.append(r.status_code)
                            if len(statuses) >= 6:
                                answered.set()

            threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
            for t in threads:
                t.start()
            assert answered.wait(120), statuses
            os.killpg(first.pid, signal.SIGKILL)  # mid-load: requests are in flight on it
            killed_at = len(statuses)
            for t in threads:
                t.join(300)
        assert len(statuses) == 6 * 8, len(statuses)
        assert set(statuses) == {200}, statuses
        assert killed_at < len(statuses), "requests were still coming when the service died"
        assert not first.alive()

        # One URL (a load balancer's, say): a dead one is asked twice, then a 503 that says so; a live one answers.
        # An API whose internal token the service refuses answers 503 naming the settings, never the client's 401.
        cases = [(first.url, {}, 503, "no inference service answered"), (second.url, {}, 200, ""),
                 (second.url, {"inference_token": "not-the-services-token"}, 503, "SAMTUNE_SECRET_KEY")]  # fmt: skip
        for url, extra, status, words in cases:
            with LiveServer(jobs_kit.make_app(jobs_kit.make_settings(inference_urls=url, **extra))) as api:
                r = httpx.post(f"{api.url}/api/v1/models/{model_id}/predict", headers=jobs_kit.auth,
                               files={"image": ("x.jpg", images[0])}, timeout=120)  # fmt: skip
            assert r.status_code == status and words in r.text, (url, extra, r.status_code, r.text)

        # A model deleted through the API leaves the service's memory at once, not when LRU gets to it.
        job = jobs_kit.create()
        assert jobs_kit.run(job["id"]) == "succeeded"
        doomed = jobs_kit.get(job["id"])["model_id"]
        internal = {INTERNAL_TOKEN_HEADER: jobs_kit.settings.internal_token}
        with LiveServer(jobs_kit.make_app(jobs_kit.make_settings(inference_urls=second.url))) as api:
            r = httpx.post(f"{api.url}/api/v1/models/{doomed}/predict", headers=jobs_kit.auth,
                           files={"image": ("x.jpg", images[0])}, timeout=120)  # fmt: skip
            assert r.status_code == 200, r.text
            held = httpx.get(f"{second.url}/internal/v1/status", headers=internal, timeout=30).json()[
                "models"
            ]
            assert doomed in held, held
            assert httpx.delete(f"{api.url}/api/v1/models/{doomed}", headers=jobs_kit.auth).status_code == 204
        held = httpx.get(f"{second.url}/internal/v1/status", headers=internal, timeout=30).json()["models"]
        assert doomed not in held and model_id in held, held
