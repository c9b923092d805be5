"""Predict latency: the model's forward alone vs the full HTTP round trip, in one run.

Two tiny models, served by a real `samtune serve` process (uvicorn): one fine-tuned the way users make one
(dataset, version, job run by the worker code; 1 epoch, so it finds little), and the bundled base on a scene of
concepts it knows (so the answer carries real instances and polygons). For each, the same image --requests times:
  - in this process with `trainer.predict.Predictor` (forward + post-processing: the baseline), in blocks
    alternating with
  - HTTP, multipart, from 1 client; then from --concurrency clients at once.
The server's overhead is (HTTP p50 - forward p50) / forward p50 at one client; the server's own phases come
from its Server-Timing header.

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
from app.jobs.runner import run_job  # noqa: E402
from app.keys.service import create_key_for_workspace  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.versions.builder import build_version  # noqa: E402
from trainer.base_model import EMBEDDED_BASE, load_base_model  # noqa: E402
from trainer.predict import Predictor  # noqa: E402
from trainer.synth import HELD_OUT_DOMAINS, PRETRAIN_CONCEPTS, write_dataset  # noqa: E402


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


BLOCK, SETTLE = 10, 3


def _measure(predictor: Predictor, picture: Image.Image, url: str, headers: dict[str, str], image: bytes,
             prompts: list[str], confidence: float, n: int, concurrency: int) -> dict:  # fmt: skip
    """The in-process forward and the HTTP round trip from 1 client, in alternating blocks; then `concurrency`
    clients at once. Also the server's own phases
    (its Server-Timing header) and the number of instances in the answer."""
    phases: dict[str, list[float]] = {}
    found = [0]

    def forward() -> float:
        t = time.perf_counter()
        predictor.predict(picture, prompts, confidence=confidence)
        return time.perf_counter() - t

    def call(client: httpx.Client, counted: bool = True) -> float:
        t = time.perf_counter()
        r = client.post(url, headers=headers, files={"image": ("x.jpg", image)},
                        data={"confidence": str(confidence), "prompts": prompts})  # fmt: skip
        r.raise_for_status()
        elapsed = time.perf_counter() - t
        for part in r.headers.get("server-timing", "").split(",") if counted else ():
            name, _, dur = part.strip().partition(";dur=")
            if dur:
                phases.setdefault(name, []).append(float(dur))
        found[0] = len(r.json()["predictions"])
        return elapsed

    with httpx.Client(timeout=60) as client:
        for _ in range(5):  # loads the model, warms both up
            call(client)
            forward()
        phases.clear()
        fwd: list[float] = []
        single: list[float] = []
        # Blocks of BLOCK calls, alternating between the two: a change in the machine's load hits both alike.
        # The first SETTLE calls of a block are not counted: after a burst of work each process's OpenMP
        # threads keep spinning on the cores for a while (about 200 ms), which would slow whichever runs next.
        while len(fwd) < n:
            for i in range(SETTLE + BLOCK):
                took = forward()
                if i >= SETTLE:
                    fwd.append(took)
            for i in range(SETTLE + BLOCK):
                took = call(client, counted=i >= SETTLE)
                if i >= SETTLE:
                    single.append(took)
    medians = {k: statistics.median(v) for k, v in phases.items()}
    clients = [httpx.Client(timeout=120) for _ in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        many = list(pool.map(lambda i: call(clients[i % concurrency]), range(n)))
    wall = time.perf_counter() - started
    for c in clients:
        c.close()
    return {
        "forward": fwd,
        "single": single,
        "many": many,
        "wall": wall,
        "phases": medians,
        "found": found[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--confidence", type=float, default=0.5)
    args = ap.parse_args()
    hf_logging.disable_progress_bar()
    root = Path(tempfile.mkdtemp(prefix="samtune-bench-predict-"))
    settings, key, model_id, image = make_model(root)
    # The bundled base on a scene of the concepts it was pretrained on: answers with real instances, so the
    # server's mask-to-polygon work and a non-empty JSON answer are part of what is measured.
    known = write_dataset(root / "known", list(PRETRAIN_CONCEPTS[:2]), {"test": 1}, size=112, seed=11)
    known_image = sorted((known / "test").glob("*.jpg"))[0].read_bytes()
    scenarios = [
        ("fine-tuned model, 2 prompts", load_base_model(str(root / "model")), image,
         ["orange shape", "purple shape"], f"/api/v1/models/{model_id}/predict"),
        ("bundled base, 2 prompts it knows", load_base_model(EMBEDDED_BASE), known_image,
         [c.name for c in PRETRAIN_CONCEPTS[:2]], f"/api/v1/base-models/{EMBEDDED_BASE}/predict"),
    ]  # fmt: skip

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")} | {
        "SAMTUNE_DATA_DIR": str(settings.data_dir), "SAMTUNE_LOG_LEVEL": "warning"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}
    rows = []
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
        for title, loaded, img, prompts, path in scenarios:
            picture = Image.open(io.BytesIO(img)).convert("RGB")
            got = _measure(Predictor(loaded), picture, f"http://127.0.0.1:{port}{path}", headers, img, prompts,
                           args.confidence, args.requests, args.concurrency)  # fmt: skip
            rows.append((title, picture, got))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)

    for title, picture, got in rows:
        f50, f95 = _pcts(got["forward"])
        s50, s95 = _pcts(got["single"])
        m50, m95 = _pcts(got["many"])
        wall, phases, found = got["wall"], got["phases"], got["found"]
        print(f"### {title}: {args.requests} requests of a {picture.width}x{picture.height} JPEG, "
              f"{found} instances in the answer, CPU")  # fmt: skip
        print()
        print("| measurement | p50 ms | p95 ms |")
        print("| --- | --- | --- |")
        print(
            f"| forward + post-processing, in process (`Predictor.predict`) | {f50 * 1e3:.1f} | {f95 * 1e3:.1f} |"
        )
        print(f"| HTTP predict, 1 client | {s50 * 1e3:.1f} | {s95 * 1e3:.1f} |")
        print(f"| HTTP predict, {args.concurrency} clients at once | {m50 * 1e3:.1f} | {m95 * 1e3:.1f} |")
        print()
        print("server phases (Server-Timing, p50 ms, 1 client): "
              + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))  # fmt: skip
        print(f"server overhead at p50, 1 client: {(s50 - f50) * 1e3:.1f} ms = {(s50 - f50) / f50:.0%} "
              f"of the forward time (goal <= 15%)")  # fmt: skip
        print(f"throughput with {args.concurrency} clients: {args.requests / wall:.1f} requests/s "
              f"(1 client: {1 / s50:.1f}/s); requests to one model take turns")  # fmt: skip
        print()


if __name__ == "__main__":
    main()
