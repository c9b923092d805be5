"""Predict speed, tiny models on the CPU, in one run: samtune against the practical limit, batching, embedding reuse.

Servers, all started by this script as real processes (uvicorn) on one data directory (SQLite, local storage):
  - minimal: the practical limit, `minimal_app` below: a few lines of Starlette that read the multipart image,
    decode it, run `Predictor.predict` on the same model and answer the predictions as JSON (RLE masks). No auth,
    no database, no checks; the forward runs on the event loop's thread.
  - serve: `samtune serve` with no SAMTUNE_INFERENCE_URLS: the API predicts in its own process (LocalInference).
  - serve -> inference: `samtune inference` and `samtune serve` with SAMTUNE_INFERENCE_URLS pointing at it, the
    embedded default of `samtune up`: the API checks the key and the request and forwards it.
Models: one fine-tuned the way users make one (dataset, version, job run by the worker code; 1 epoch, so it finds
little; its route looks the model up in the database), and the bundled base on a scene of concepts it knows (its
answer carries real instances).

1. Against the practical limit: p50 and p95 at 1 client, the same client (httpx, multipart, 2 prompts), a fresh
   JPEG of the same 112x112 scene each request (the same pixels, a numbered JPEG comment: the same bytes again
   would skip the vision encoder in samtune, not in the minimal app), masks as RLE on both sides; samtune's default polygons and the
   forward alone in this process (`Predictor.predict`, no HTTP) are shown for reference. Goal: samtune's p50 at
   most 1.15x the minimal app's.
2. Throughput of samtune with --concurrency clients at once vs 1 client, fresh images, and the batch sizes the
   server made (its Server-Timing `batch;desc=N`), in at least ROUNDS alternations. Goal: at least 2x. Beside
   it, the ceiling: the forward alone in this process, a batch of --concurrency fresh images against one at a
   time (`forward_gain`). No server can get more from batching than the forward itself does.
3. One image asked again with new prompts vs a fresh image with new prompts, alternating request by request
   (Server-Timing `embedding;desc=reused|computed` says which the server did). New prompts each time, so only
   the vision embedding is reused. Reported (the 5x goal is the full-size architecture's:
   bench/predict_full_size.py).

Measurements alternate in blocks of BLOCK requests (the first SETTLE of each not counted: after a burst of work a
process's OpenMP threads spin on the cores for a while and would slow whichever runs next), so that a change in
the machine's load hits every side alike. About 1-2 minutes on 2 cores, most of it making the fine-tuned model.

    .venv/bin/python bench/predict.py --requests 40 --concurrency 8
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import collections  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from trainer.base_model import EMBEDDED_BASE, load_base_model  # noqa: E402
from trainer.predict import Ask, Predictor  # noqa: E402

BLOCK, SETTLE = 10, 3
ROUNDS = 5  # the throughput measurement's alternations, at least


def minimal_app(models: dict[str, str]):  # noqa: ANN201 - a Starlette app
    """The practical limit: the same forward behind the fewest lines of HTTP that answer it."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    predictors = {name: Predictor(load_base_model(where)) for name, where in models.items()}

    async def predict(request):  # noqa: ANN001, ANN202
        form = await request.form()
        image = Image.open(io.BytesIO(await form["image"].read())).convert("RGB")
        found = predictors[request.path_params["name"]].predict(
            image, form.getlist("prompts"), confidence=float(form["confidence"])
        )
        return JSONResponse({"predictions": [asdict(p) for p in found]})

    async def healthz(_request):  # noqa: ANN001, ANN202
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/predict/{name}", predict, methods=["POST"]), Route("/healthz", healthz)])


# --- the fine-tuned model, made the way users make one -------------------------------------------------------


class _NoQueue:
    def send(self, task: str, args: list[str], queue: str) -> None:
        pass


def make_model(root: Path) -> tuple[Path, str, str]:
    """The data directory, an API key, the id of a model fine-tuned by the worker code (its files in root/model)."""
    from fastapi.testclient import TestClient

    from app.core import migrate
    from app.core.db import make_engine, make_sessionmaker, transaction
    from app.core.storage import make_storage
    from app.jobs.runner import run_job
    from app.keys.service import create_key_for_workspace
    from app.main import create_app
    from app.settings import Settings
    from app.versions.builder import build_version
    from trainer.synth import HELD_OUT_DOMAINS, write_dataset

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
    client.close()
    return settings.data_dir, key, model_id


# --- images, prompts, calls ----------------------------------------------------------------------------------


class Images:
    """Fresh JPEGs of one scene: the same pixels, each with its own number in a JPEG comment, so every request
    sends bytes never sent before (a new sha256: no embedding to reuse) and exactly the same work otherwise."""

    def __init__(self, scene: bytes) -> None:
        self.picture = Image.open(io.BytesIO(scene)).convert("RGB")
        self.count = 0
        self.seen: set[bytes] = set()

    def fresh(self) -> bytes:
        buf = io.BytesIO()
        self.picture.save(buf, "JPEG", quality=90, comment=f"bench image {self.count}")
        self.count += 1
        data = buf.getvalue()
        assert data not in self.seen, "two fresh images came out the same"
        self.seen.add(data)
        return data


def server_timing(header: str) -> dict[str, str]:
    """`decode;dur=0.31, batch;desc=4` -> {"decode": "0.31", "batch": "4"}."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if name:
            out[name] = rest.partition("=")[2]
    return out


@dataclass
class Call:
    seconds: float
    timing: dict[str, str]
    found: int


@dataclass
class Side:
    """Something to ask: an HTTP route (with its fields), or a function in this process."""

    label: str
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    local: Callable[[bytes, list[str]], int] | None = None

    def call(self, client: httpx.Client, image: bytes, prompts: list[str], confidence: float) -> Call:
        t = time.perf_counter()
        if self.local is not None:
            found = self.local(image, prompts)
            return Call(time.perf_counter() - t, {}, found)
        r = client.post(self.url, headers=self.headers, files={"image": ("x.jpg", image)},
                        data={"confidence": str(confidence), "prompts": prompts} | self.fields)  # fmt: skip
        r.raise_for_status()
        elapsed = time.perf_counter() - t
        return Call(elapsed, server_timing(r.headers.get("server-timing", "")), len(r.json()["predictions"]))


def _pcts(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


# --- the three measurements ----------------------------------------------------------------------------------


def against_limit(sides: list[Side], images: Images, prompts: list[str], confidence: float, n: int,
                  client: httpx.Client) -> dict[str, list[Call]]:  # fmt: skip
    """1 client, every side in turn, blocks of BLOCK, a fresh image each request."""
    for side in sides:
        for _ in range(5):
            side.call(client, images.fresh(), prompts, confidence)
    got: dict[str, list[Call]] = {s.label: [] for s in sides}
    while min(len(v) for v in got.values()) < n:
        for side in sides:
            for i in range(SETTLE + BLOCK):
                c = side.call(client, images.fresh(), prompts, confidence)
                if i >= SETTLE:
                    got[side.label].append(c)
    return got


@dataclass
class Throughput:
    single: list[Call] = field(default_factory=list)
    many: list[Call] = field(default_factory=list)
    single_wall: float = 0.0
    many_wall: float = 0.0
    ratios: list[float] = field(default_factory=list)  # each alternation's many/single requests/s

    def spread(self) -> str:
        """The alternations' ratios, lowest to highest: how far this machine drifted within the run."""
        return ", ".join(f"{r:.2f}" for r in sorted(self.ratios))


def throughput(side: Side, images: Images, prompts: list[str], confidence: float, n: int, concurrency: int,
               client: httpx.Client) -> Throughput:  # fmt: skip
    """Blocks of BLOCK requests from 1 client alternating with blocks of 5*concurrency requests from
    `concurrency` clients at once (each its own connection), fresh images, until each side has at least n and
    at least ROUNDS blocks: this machine's speed drifts by tens of percent within a minute, and more, shorter
    alternations spread the drift over both sides."""
    out = Throughput()
    clients = [httpx.Client(timeout=120) for _ in range(concurrency)]
    per_client = 5
    try:
        with ThreadPoolExecutor(concurrency) as pool:
            for c in clients:  # opens every connection
                side.call(c, images.fresh(), prompts, confidence)
            rounds = 0
            while len(out.single) < n or len(out.many) < n or rounds < ROUNDS:
                rounds += 1
                for _ in range(SETTLE):
                    side.call(client, images.fresh(), prompts, confidence)
                work = [images.fresh() for _ in range(BLOCK)]
                t = time.perf_counter()
                out.single += [side.call(client, image, prompts, confidence) for image in work]
                single_wall = time.perf_counter() - t
                out.single_wall += single_wall
                for _ in range(SETTLE):
                    side.call(client, images.fresh(), prompts, confidence)
                work = [[images.fresh() for _ in range(per_client)] for _ in clients]

                def run(i: int, work: list[list[bytes]] = work) -> list[Call]:
                    return [side.call(clients[i], image, prompts, confidence) for image in work[i]]

                t = time.perf_counter()
                for calls in pool.map(run, range(concurrency)):
                    out.many += calls
                many_wall = time.perf_counter() - t
                out.many_wall += many_wall
                out.ratios.append((per_client * concurrency / many_wall) / (BLOCK / single_wall))
    finally:
        for c in clients:
            c.close()
    return out


@dataclass
class ForwardGain:
    """The model's own batching gain in this process, no HTTP: seconds per image one at a time and in batches."""

    single: list[float] = field(default_factory=list)
    batched: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # each alternation's one-at-a-time / batched per image

    @property
    def single_s(self) -> float:
        return statistics.median(self.single)

    @property
    def batched_s(self) -> float:
        return statistics.median(self.batched)

    @property
    def gain(self) -> float:
        return self.single_s / self.batched_s


def forward_gain(predictor: Predictor, images: Images, prompts: list[str], confidence: float, batch: int
                 ) -> ForwardGain:  # fmt: skip
    """`Predictor.predict_many` over `batch` fresh images at once vs one image at a time, alternating: the most
    any server can get from batching on this machine with this model (per-request work outside the forward
    would have to cost nothing). On a 2-core CPU a batched convolution is barely cheaper per image than a
    single one, so this sits near 2x; on a GPU it is the batch's whole point."""
    out = ForwardGain()

    def asks(n: int) -> list[Ask]:
        pictures = [Image.open(io.BytesIO(images.fresh())).convert("RGB") for _ in range(n)]
        return [
            Ask(p, prompts, confidence, image_key=f"gain-{images.count}-{i}") for i, p in enumerate(pictures)
        ]

    def per_image(group: list[Ask]) -> float:
        t = time.perf_counter()
        predictor.predict_many(group)
        return (time.perf_counter() - t) / len(group)

    for _ in range(ROUNDS):
        for _ in range(SETTLE):
            per_image(asks(1))
        single = [per_image(asks(1)) for _ in range(2 * batch)]
        for _ in range(SETTLE):
            per_image(asks(batch))
        batched = [per_image(asks(batch)) for _ in range(2)]
        out.single += single
        out.batched += batched
        out.ratios.append(statistics.median(single) / statistics.median(batched))
    return out


def reuse(side: Side, images: Images, concepts: list[str], confidence: float, n: int,
          client: httpx.Client, counter: collections.Counter) -> tuple[list[Call], list[Call]]:  # fmt: skip
    """A fresh image, then the one repeated image, alternating request by request; new prompts every request (a
    known concept and a numbered one), so that the text side is computed in both and only the vision embedding
    can be reused."""

    def prompts() -> list[str]:
        counter["n"] += 1
        return [concepts[counter["n"] % len(concepts)], f"shape number {counter['n']}"]

    repeated = images.fresh()
    side.call(client, repeated, prompts(), confidence)  # its embedding is computed once, here
    fresh: list[Call] = []
    again: list[Call] = []
    for i in range(SETTLE + n):
        a = side.call(client, images.fresh(), prompts(), confidence)
        b = side.call(client, repeated, prompts(), confidence)
        if i >= SETTLE:
            fresh.append(a)
            again.append(b)
    return fresh, again


# --- processes -----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(name: str, argv: list[str], env: dict[str, str], port: int, logs: Path) -> subprocess.Popen:
    log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{name} did not start:\n" + (logs / f"{name}.log").read_text()[-3000:])
        time.sleep(0.2)


def _stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
        p.log.close()  # type: ignore[attr-defined]


# --- the report ----------------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return f"{x * 1e3:.1f}"


def _phase(calls: list[Call], name: str) -> str:
    values = [float(c.timing[name]) for c in calls if c.timing.get(name)]
    return f"{statistics.median(values):.2f}" if values else "-"


def _descs(calls: list[Call], name: str) -> str:
    seen = collections.Counter(c.timing.get(name, "?") for c in calls)
    return ", ".join(f"{k}: {v}" for k, v in sorted(seen.items(), key=lambda kv: str(kv[0])))


def report_limit(title: str, got: dict[str, list[Call]], minimal: str, compared: list[str]) -> None:
    found = next(iter(got.values()))[-1].found
    print(f"### 1. Against the practical limit: {title} ({found} instances in the answer)")
    print()
    print("| 1 client, fresh image each request | p50 ms | p95 ms | x minimal p50 | server predict p50 ms |")
    print("| --- | --- | --- | --- | --- |")
    base = _pcts([c.seconds for c in got[minimal]])[0]
    for label, calls in got.items():
        p50, p95 = _pcts([c.seconds for c in calls])
        print(f"| {label} | {_ms(p50)} | {_ms(p95)} | {p50 / base:.2f} | {_phase(calls, 'predict')} |")
    print()
    for label in compared:
        p50 = _pcts([c.seconds for c in got[label]])[0]
        verdict = "met" if p50 <= 1.15 * base else "NOT met"
        print(f"- {label}: p50 {_ms(p50)} ms = {p50 / base:.2f}x the minimal app's {_ms(base)} ms "
              f"(goal <= 1.15x: {verdict})")  # fmt: skip
    print()


def report_throughput(rows: list[tuple[str, Throughput]], concurrency: int, gain: ForwardGain) -> None:
    print(f"### 2. Throughput: {concurrency} clients at once vs 1 client (bundled base, fresh images)")
    print()
    print(
        "| topology | clients | requests | requests/s | p50 ms | p95 ms | batch sizes seen (size: requests) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, t in rows:
        for clients, calls, wall in ((1, t.single, t.single_wall), (concurrency, t.many, t.many_wall)):
            p50, p95 = _pcts([c.seconds for c in calls])
            print(f"| {label} | {clients} | {len(calls)} | {len(calls) / wall:.1f} | {_ms(p50)} | {_ms(p95)} | "
                  f"{_descs(calls, 'batch')} |")  # fmt: skip
    print()
    for label, t in rows:
        ratio = (len(t.many) / t.many_wall) / (len(t.single) / t.single_wall)
        sizes = [int(c.timing["batch"]) for c in t.many if c.timing.get("batch", "").isdigit()]
        mean = statistics.mean(sizes) if sizes else float("nan")
        print(f"- {label}: {concurrency} clients give {ratio:.2f}x the requests/s of 1 client (goal >= 2x: "
              f"{'met' if ratio >= 2 else 'NOT met'}); a request's batch held {mean:.1f} requests on average; "
              f"alternation by alternation: {t.spread()}; {len(t.many) / t.many_wall * gain.batched_s:.0%} of the "
              f"batched forward's images/s")  # fmt: skip
    print(f"- The ceiling, the forward alone in this process (`Predictor.predict_many`, no HTTP): a batch of "
          f"{concurrency} fresh images {gain.batched_s * 1e3:.1f} ms per image, one at a time "
          f"{gain.single_s * 1e3:.1f} ms: batching itself gives {gain.gain:.2f}x (alternation "
          f"by alternation: {', '.join(f'{r:.2f}' for r in sorted(gain.ratios))}). No server's {concurrency} "
          f"clients can get more than this over its 1 client from batching on this machine; the 2x goal needs "
          f"it well above 2x.")  # fmt: skip
    print()


def report_reuse(rows: list[tuple[str, list[Call], list[Call]]]) -> None:
    print("### 3. The same image again with new prompts vs a fresh image (bundled base, 1 client)")
    print()
    print(
        "| topology | image | requests | p50 ms | p95 ms | server predict p50 ms | embedding (Server-Timing) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, fresh, again in rows:
        for kind, calls in (("fresh", fresh), ("asked again", again)):
            p50, p95 = _pcts([c.seconds for c in calls])
            print(f"| {label} | {kind} | {len(calls)} | {_ms(p50)} | {_ms(p95)} | {_phase(calls, 'predict')} | "
                  f"{_descs(calls, 'embedding')} |")  # fmt: skip
    print()
    for label, fresh, again in rows:
        f50, a50 = _pcts([c.seconds for c in fresh])[0], _pcts([c.seconds for c in again])[0]
        fp = [float(c.timing["predict"]) for c in fresh if c.timing.get("predict")]
        ap = [float(c.timing["predict"]) for c in again if c.timing.get("predict")]
        inside = (
            f"; the server's predict phase {statistics.median(fp) / statistics.median(ap):.2f}x"
            if fp and ap
            else ""
        )
        print(f"- {label}: asked again is {f50 / a50:.2f}x faster at p50 end to end{inside} (tiny model: "
              f"reported, no goal)")  # fmt: skip
    print()


# --- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=40, help="counted requests per side of each measurement")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--confidence", type=float, default=0.5)
    ap.add_argument("--serve-minimal", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the minimal app
    ap.add_argument("--models", help=argparse.SUPPRESS)  # its models, JSON {name: directory or repo}
    args = ap.parse_args()
    if args.serve_minimal:
        import uvicorn

        uvicorn.run(minimal_app(json.loads(args.models)), host="127.0.0.1", port=args.serve_minimal,
                    log_level="warning")  # fmt: skip
        return

    from transformers.utils import logging as hf_logging

    from trainer.synth import PRETRAIN_CONCEPTS, write_dataset

    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="samtune-bench-predict-"))
    logs = root / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen] = []
    try:
        data_dir, key, model_id = make_model(root)
        made = time.perf_counter() - started
        tuned_scene = sorted((root / "synth" / "test").glob("*.jpg"))[0].read_bytes()
        known = write_dataset(root / "known", list(PRETRAIN_CONCEPTS[:2]), {"test": 1}, size=112, seed=11)
        known_scene = sorted((known / "test").glob("*.jpg"))[0].read_bytes()

        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")} | {
            "SAMTUNE_DATA_DIR": str(data_dir), "SAMTUNE_LOG_LEVEL": "warning"}  # fmt: skip
        ports = {name: _free_port() for name in ("minimal", "serve", "inference", "api")}
        models = {"tuned": str(root / "model"), "base": EMBEDDED_BASE}
        cli = [sys.executable, "-m", "app.cli"]
        processes.append(_start("minimal", [sys.executable, str(Path(__file__).resolve()), "--serve-minimal",
                                            str(ports["minimal"]), "--models", json.dumps(models)], env,
                                ports["minimal"], logs))  # fmt: skip
        processes.append(
            _start("serve", cli + ["serve", "--port", str(ports["serve"])], env, ports["serve"], logs)
        )
        processes.append(_start("inference", cli + ["inference", "--port", str(ports["inference"])], env,
                                ports["inference"], logs))  # fmt: skip
        remote_env = env | {"SAMTUNE_INFERENCE_URLS": f"http://127.0.0.1:{ports['inference']}"}
        processes.append(
            _start("api", cli + ["serve", "--port", str(ports["api"])], remote_env, ports["api"], logs)
        )

        auth = {"Authorization": f"Bearer {key}"}
        routes = {
            "tuned": f"/api/v1/models/{model_id}/predict",
            "base": f"/api/v1/base-models/{EMBEDDED_BASE}/predict",
        }
        local = {name: Predictor(load_base_model(where)) for name, where in models.items()}

        def sides(name: str) -> list[Side]:
            def forward(image: bytes, prompts: list[str], predictor: Predictor = local[name]) -> int:
                picture = Image.open(io.BytesIO(image)).convert("RGB")
                return len(predictor.predict(picture, prompts, confidence=args.confidence))

            rle = {"mask_format": "rle"}
            return [
                Side(
                    "minimal app (Starlette + uvicorn)", f"http://127.0.0.1:{ports['minimal']}/predict/{name}"
                ),
                Side(
                    "samtune serve, in process", f"http://127.0.0.1:{ports['serve']}{routes[name]}", auth, rle
                ),
                Side(
                    "samtune serve -> samtune inference",
                    f"http://127.0.0.1:{ports['api']}{routes[name]}",
                    auth,
                    rle,
                ),  # fmt: skip
                Side(
                    "samtune serve, in process, polygons (the default)",
                    f"http://127.0.0.1:{ports['serve']}{routes[name]}",
                    auth,
                ),  # fmt: skip
                Side("forward alone, this process (`Predictor.predict`, no HTTP)", local=forward),
            ]

        scenes = {"tuned": Images(tuned_scene), "base": Images(known_scene)}
        prompts = {"tuned": ["orange shape", "purple shape"], "base": [c.name for c in PRETRAIN_CONCEPTS[:2]]}
        titles = {"tuned": "fine-tuned model (`/api/v1/models/{id}/predict`), 2 prompts",
                  "base": f"bundled base (`/api/v1/base-models/{EMBEDDED_BASE}/predict`), 2 prompts it knows"}  # fmt: skip
        counter: collections.Counter = collections.Counter()
        with httpx.Client(timeout=120) as client:
            limits = {}
            for name in ("tuned", "base"):
                limits[name] = against_limit(sides(name), scenes[name], prompts[name], args.confidence,
                                             args.requests, client)  # fmt: skip
            in_process, remote = sides("base")[1:3]
            flows = [(s.label, throughput(s, scenes["base"], prompts["base"], args.confidence, args.requests,
                                          args.concurrency, client)) for s in (in_process, remote)]  # fmt: skip
            gain = forward_gain(
                local["base"], scenes["base"], prompts["base"], args.confidence, args.concurrency
            )
            concepts = [c.name for c in PRETRAIN_CONCEPTS]
            reuses = [(s.label, *reuse(s, scenes["base"], concepts, args.confidence, args.requests, client, counter))
                      for s in (in_process, remote)]  # fmt: skip
    finally:
        _stop(processes)
        shutil.rmtree(root, ignore_errors=True)

    import torch

    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"112x112 JPEG scenes; {args.requests} counted requests per side; model made in {made:.0f} s, "
          f"whole run {time.perf_counter() - started:.0f} s")  # fmt: skip
    print()
    compared = ["samtune serve, in process", "samtune serve -> samtune inference"]
    for name in ("tuned", "base"):
        report_limit(titles[name], limits[name], "minimal app (Starlette + uvicorn)", compared)
    report_throughput(flows, args.concurrency, gain)
    report_reuse(reuses)


if __name__ == "__main__":
    main()
