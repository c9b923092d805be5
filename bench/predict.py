"""Predict latency: the model's forward alone vs the full HTTP round trip, in one run.

A fine-tuned tiny model is made the way users make one (dataset, version, job run by the worker code), then
served by a real `samtune serve` process (uvicorn). The same image is predicted --requests times:
  - in this process with `trainer.predict.Predictor` (forward + post-processing: the baseline);
  - over HTTP, multipart, from 1 and from --concurrency clients at once.
The server's overhead is (HTTP p50 - forward p50) / forward p50 at one client.

    .venv/bin/python bench/predict.py --requests 50 --concurrency 8
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import zipfile  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from app.core import migrate  # noqa: E402
from app.core.db import make_engine, make_sessionmaker, transaction  # noqa: E402
from app.core.storage import make_storage  # noqa: E402
from app.keys.service import create_key_for_workspace  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.versions.builder import build_version  # noqa: E402
from trainer.model import EMBEDDED_BASE, load_base_model  # noqa: E402
from trainer.predict import Predictor  # noqa: E402
from trainer.synth import HELD_OUT_DOMAINS, write_dataset  # noqa: E402
from worker.training import run_job  # noqa: E402


class _NoQueue:
    def send(self, task: str, args: list[str], queue: str) -> None:
        pass


def _pcts(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(root: Path) -> tuple[Settings, str, str, bytes]:
    settings = Settings(data_dir=root / "data")
    migrate.upgrade(settings.database_url)
    factory = make_sessionmaker(make_engine(settings.database_url))
    with transaction(factory) as session:
        _, key = create_key_for_workspace(session, "bench")
    auth = {"Authorization": f"Bearer {key}"}
    data = write_dataset(root / "synth", list(HELD_OUT_DOMAINS["new-colours"]), {"train": 8, "valid": 2, "test": 2},
                         size=112, seed=3)  # fmt: skip
    archive = shutil.make_archive(str(root / "synth"), "zip", data)
    app = create_app(settings)
    app.state.tasks = _NoQueue()
    client = TestClient(app)
    dataset = client.post("/api/v1/datasets", json={"name": "bench"}, headers=auth).json()
    with open(archive, "rb") as f:
        client.post(f"/api/v1/datasets/{dataset['id']}/uploads", files={"file": ("s.zip", f)}, headers=auth)
    spec = {"preprocessing": {"resize": {"width": 112, "height": 112}}}
    version = client.post(f"/api/v1/datasets/{dataset['id']}/versions", json=spec, headers=auth).json()
    build_version(factory, make_storage(settings), settings, uuid.UUID(version["id"]))
    job = client.post("/api/v1/jobs", headers=auth, json={"version_id": version["id"], "base_model": EMBEDDED_BASE,
                      "mode": "decoder", "hyperparameters": {"epochs": 1, "batch_size": 2}}).json()  # fmt: skip
    assert run_job(settings, uuid.UUID(job["id"]), _NoQueue()) == "succeeded"
    model_id = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).json()["model_id"]
    zipped = client.get(f"/api/v1/models/{model_id}/download", headers=auth).content
    zipfile.ZipFile(io.BytesIO(zipped)).extractall(root / "model")
    image = sorted((root / "synth" / "test").glob("*.jpg"))[0].read_bytes()
    client.close()
    return settings, key, model_id, image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--confidence", type=float, default=0.5)
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    root = Path(tempfile.mkdtemp(prefix="samtune-bench-predict-"))
    settings, key, model_id, image = make_model(root)

    predictor = Predictor(load_base_model(str(root / "model")))
    classes = ["orange shape", "purple shape"]
    picture = Image.open(io.BytesIO(image)).convert("RGB")
    for _ in range(5):
        predictor.predict(picture, classes, confidence=args.confidence)
    forward = []
    for _ in range(args.requests):
        t = time.perf_counter()
        predictor.predict(picture, classes, confidence=args.confidence)
        forward.append(time.perf_counter() - t)

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")} | {
        "SAMTUNE_DATA_DIR": str(settings.data_dir), "SAMTUNE_LOG_LEVEL": "warning"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1/models/{model_id}/predict"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

        def call(client: httpx.Client) -> float:
            t = time.perf_counter()
            r = client.post(url, headers=headers, files={"image": ("x.jpg", image)},
                            data={"confidence": str(args.confidence)})  # fmt: skip
            r.raise_for_status()
            return time.perf_counter() - t

        with httpx.Client(timeout=60) as client:
            for _ in range(5):  # loads the model, warms up
                call(client)
            single = [call(client) for _ in range(args.requests)]
        clients = [httpx.Client(timeout=120) for _ in range(args.concurrency)]
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            many = list(pool.map(lambda i: call(clients[i % args.concurrency]), range(args.requests)))
        wall = time.perf_counter() - started
        for c in clients:
            c.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    f50, f95 = _pcts(forward)
    s50, s95 = _pcts(single)
    m50, m95 = _pcts(many)
    print(
        f"tiny model (112 px, 2 prompts), {args.requests} requests of a {picture.width}x{picture.height} JPEG, CPU"
    )
    print()
    print("| measurement | p50 ms | p95 ms |")
    print("| --- | --- | --- |")
    print(
        f"| forward + post-processing, in process (`Predictor.predict`) | {f50 * 1e3:.1f} | {f95 * 1e3:.1f} |"
    )
    print(f"| HTTP predict, 1 client | {s50 * 1e3:.1f} | {s95 * 1e3:.1f} |")
    print(f"| HTTP predict, {args.concurrency} clients at once | {m50 * 1e3:.1f} | {m95 * 1e3:.1f} |")
    print()
    print(f"server overhead at p50, 1 client: {(s50 - f50) / f50:.0%} of the forward time (goal <= 15%)")
    print(f"throughput with {args.concurrency} clients: {args.requests / wall:.1f} requests/s "
          f"(1 client: {1 / s50:.1f}/s); requests to one model take turns")  # fmt: skip


if __name__ == "__main__":
    main()
