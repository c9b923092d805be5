"""Dynamic batching: LitServe (a maintained serving library) against samtune's own small batcher
(`app/models/batching.DynamicBatcher`), the same model and the same batched forward behind each.

Both servers load the bundled tiny SAM 3 and answer `POST /predict` with a JSON body (`image` base64, `prompts`)
by one `Predictor.predict_many` call per batch (at most 8 requests, gathered for at most 5 ms), answering the
same JSON. Each runs as its own process (LitServe: its HTTP server plus one inference worker process, its
process model; ours: one uvicorn process whose inference thread runs the batches). The clients send the same
image, from 1 client and then from 8 at once; figures are requests/s and p50 latency.

LitServe is not a dependency of samtune: install it beside the venv for this run only,

    .venv/bin/pip install --target /tmp/litserve-lib --no-deps litserve==0.2.19 pyzmq
    .venv/bin/python bench/serving_libraries.py --litserve-path /tmp/litserve-lib --requests 200
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import base64  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402 - at module level: the route's string annotation resolves here
from PIL import Image  # noqa: E402

MAX_BATCH, MAX_WAIT_S = 8, 0.005
PROMPTS = ["red shape", "green shape"]


def _predictor() -> Any:
    from trainer.base_model import EMBEDDED_BASE, load_base_model
    from trainer.predict import Predictor

    return Predictor(load_base_model(EMBEDDED_BASE), "cpu", embedding_cache_size=0)


def _ask(body: dict[str, Any]) -> Any:
    from trainer.predict import Ask

    image = Image.open(io.BytesIO(base64.b64decode(body["image"]))).convert("RGB")
    return Ask(image, list(body["prompts"]), confidence=0.3)


def _answer(found: Any) -> dict[str, Any]:
    if isinstance(found, Exception):
        return {"error": str(found)}
    return {"predictions": [{"prompt": p.prompt, "score": round(p.score, 4), "bbox": list(p.bbox),
                             "counts": p.rle["counts"]} for p in found]}  # fmt: skip


try:  # only where it was installed for this benchmark (see the docstring)
    import litserve as ls
except ImportError:
    ls = None

if ls is not None:
    # At module level: LitServe pickles the API object into its worker process.
    class SamApi(ls.LitAPI):  # type: ignore[misc]
        def setup(self, device: str) -> None:
            self.predictor = _predictor()

        # Unannotated: LitServe builds its route from these signatures, where this module's string annotations
        # (`from __future__ import annotations`) would not resolve.
        def decode_request(self, request):  # type: ignore[no-untyped-def]  # noqa: ANN001
            return _ask(request)

        def batch(self, inputs: list[Any]) -> list[Any]:
            return inputs

        def predict(self, asks: list[Any]) -> list[Any]:
            return self.predictor.predict_many(asks)

        def unbatch(self, output: list[Any]) -> list[Any]:
            return output

        def encode_response(self, output):  # type: ignore[no-untyped-def]  # noqa: ANN001
            return _answer(output)


def serve_litserve(port: int) -> None:
    if ls is None:
        raise SystemExit("litserve is not importable: see this script's docstring")
    server = ls.LitServer(SamApi(max_batch_size=MAX_BATCH, batch_timeout=MAX_WAIT_S), accelerator="cpu",
                          workers_per_device=1)  # fmt: skip
    server.run(port=port, generate_client_file=False, log_level="warning")


def serve_own(port: int) -> None:
    from concurrent.futures import ThreadPoolExecutor as Pool

    import uvicorn
    from starlette.concurrency import run_in_threadpool

    from app.models.batching import DynamicBatcher

    predictor = _predictor()
    batcher: DynamicBatcher[Any, Any] = DynamicBatcher(
        lambda _key, asks: predictor.predict_many(asks), Pool(max_workers=1), max_batch=MAX_BATCH,
        max_wait_s=MAX_WAIT_S,
    )  # fmt: skip
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        ask = await run_in_threadpool(_ask, await request.json())
        try:
            return _answer(await batcher.submit("model", ask))
        except Exception as exc:  # noqa: BLE001 - the same shape LitServe's encode_response gives
            return _answer(exc)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def _load(url: str, body: bytes, requests: int, clients: int) -> tuple[float, float]:
    """(requests/s, p50 seconds) of `requests` sent by `clients` at once."""
    latencies: list[float] = []

    def one(http: httpx.Client) -> None:
        t = time.perf_counter()
        r = http.post(url, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and "predictions" in r.json(), r.text[:300]
        latencies.append(time.perf_counter() - t)

    per_client = requests // clients
    with ThreadPoolExecutor(clients) as pool:
        https = [httpx.Client(timeout=120) for _ in range(clients)]
        for http in https:
            one(http)  # warm: connections and the first forward
        latencies.clear()
        start = time.perf_counter()
        list(pool.map(lambda h: [one(h) for _ in range(per_client)], https))
        wall = time.perf_counter() - start
        for http in https:
            http.close()
    return len(latencies) / wall, statistics.median(latencies)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", choices=["litserve", "own"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--litserve-path", type=Path, help="Where litserve was installed with pip --target.")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument(
        "--rounds", type=int, default=2, help="Each server measured this many times, alternating."
    )
    args = ap.parse_args()
    if args.serve == "litserve":
        serve_litserve(args.port)
        return
    if args.serve == "own":
        serve_own(args.port)
        return

    from trainer.synth import PRETRAIN_CONCEPTS, write_dataset

    data = write_dataset(Path(tempfile.mkdtemp(prefix="samtune-bench-serving-")), list(PRETRAIN_CONCEPTS[:2]),
                         {"test": 1}, size=112, seed=11)  # fmt: skip
    image = sorted((data / "test").glob("*.jpg"))[0].read_bytes()
    body = (
        '{"image": "' + base64.b64encode(image).decode() + '", "prompts": ["red shape", "green shape"]}'
    ).encode()
    env = dict(os.environ)
    if args.litserve_path:
        env["PYTHONPATH"] = os.pathsep.join([str(args.litserve_path), str(_BENCH.parent)])
    results: dict[str, list[tuple[float, float, float, float]]] = {"litserve": [], "own": []}
    for _ in range(args.rounds):
        for name in ("own", "litserve"):
            port = _free_port()
            # A session of its own: LitServe's worker processes are stopped with it (a SIGTERM to its server
            # alone left them running).
            proc = subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(port)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
            try:
                _wait(f"http://127.0.0.1:{port}/health", proc)
                url = f"http://127.0.0.1:{port}/predict"
                one_rps, one_p50 = _load(url, body, args.requests // 2, 1)
                many_rps, many_p50 = _load(url, body, args.requests, 8)
                results[name].append((one_rps, one_p50, many_rps, many_p50))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    print(f"### Dynamic batching, tiny model on CPU, {args.requests} requests at 8 clients "
          f"({args.requests // 2} at 1), best of {args.rounds} rounds")  # fmt: skip
    print()
    print("| server | 1 client req/s | 1 client p50 ms | 8 clients req/s | 8 clients p50 ms | 8 vs 1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, title in (("own", "samtune's DynamicBatcher (uvicorn, one inference thread)"),
                        ("litserve", "LitServe 0.2.19 (server + 1 worker process)")):  # fmt: skip
        one_rps, one_p50, many_rps, many_p50 = max(results[name], key=lambda r: r[2])
        print(f"| {title} | {one_rps:.1f} | {one_p50 * 1e3:.1f} | {many_rps:.1f} | {many_p50 * 1e3:.1f} | "
              f"{many_rps / one_rps:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
