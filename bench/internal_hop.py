"""The API's hop to its inference service, in one run: which HTTP client, and what the service's stack costs.

1. Clients: one uvicorn app (uvloop, httptools; a Starlette route that reads the body and answers 2 KB, as the
   service answers a prediction's JSON) in its own process; in this process, on uvloop as the API runs, each
   client posts the same body in turn: httpx's AsyncClient (what the API used before), httpcore's pool (httpx's
   own transport, without httpx's layer), aiohttp's ClientSession (what app/inference/remote.py uses). Sequential
   requests, one connection kept alive, blocks of BLOCK alternating ROUNDS times.
2. The service's stack: `samtune inference`'s app (InferenceApp, real settings, the bundled base loaded) asked
   in this process through ASGI, no sockets: `POST /internal/v1/predict` with a call that fails its token
   check (answered by InternalPredict, ahead of the middleware stack) against `POST /internal/v1/load` with the
   same wrong token (the same check, answered through FastAPI's fifteen middleware layers and its router). Both
   refuse the same way before any model work, so the difference is the stack.

    .venv/bin/python bench/internal_hop.py --body-kb 4
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402

BLOCK = 100
ROUNDS = 8
ANSWER = b"x" * 2000


def echo_app():  # noqa: ANN201 - a Starlette app
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(request):  # noqa: ANN001, ANN202
        await request.body()
        return Response(ANSWER, media_type="application/json")

    return Starlette(routes=[Route("/p", answer, methods=["POST"])])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


async def _alternate(sides: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, list[float]]:
    for ask in sides.values():  # connections made, code paths warm
        for _ in range(20):
            await ask()
    got: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(ROUNDS):
        for name, ask in sides.items():
            for _ in range(BLOCK):
                t = time.perf_counter()
                await ask()
                got[name].append(time.perf_counter() - t)
    return got


async def clients(port: int, body: bytes) -> dict[str, list[float]]:
    import aiohttp
    import httpcore
    import httpx

    url = f"http://127.0.0.1:{port}/p"
    headers = {"Content-Type": "application/octet-stream", "X-Samtune-Internal-Token": "t" * 43}
    async with (
        httpx.AsyncClient(trust_env=False) as hx,
        httpcore.AsyncConnectionPool() as hc,
        aiohttp.ClientSession(trust_env=False, auto_decompress=False) as aio,
    ):

        async def with_httpx() -> None:
            r = await hx.post(url, content=body, headers=headers)
            assert r.content == ANSWER

        async def with_httpcore() -> None:
            r = await hc.request("POST", url, content=body, headers=headers)
            assert r.content == ANSWER

        async def with_aiohttp() -> None:
            async with aio.post(url, data=body, headers=headers) as r:
                assert await r.read() == ANSWER

        return await _alternate(
            {
                "httpx AsyncClient": with_httpx,
                "httpcore pool": with_httpcore,
                "aiohttp ClientSession": with_aiohttp,
            }
        )


async def stack(body: bytes) -> dict[str, list[float]]:
    import httpx

    from app.core import migrate
    from app.inference.remote import INTERNAL_TOKEN_HEADER
    from app.inference.service import create_inference_app
    from app.settings import Settings

    data = Path(tempfile.mkdtemp(prefix="samtune-bench-hop-"))
    settings = Settings(data_dir=data, log_level="warning")
    migrate.upgrade(settings.database_url)
    app = create_inference_app(settings)
    wrong = {INTERNAL_TOKEN_HEADER: "wrong", "Content-Type": "application/octet-stream"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:

        async def fast() -> None:
            assert (await client.post("/internal/v1/predict", content=body, headers=wrong)).status_code == 401

        async def routed() -> None:
            assert (await client.post("/internal/v1/load", content=body, headers=wrong)).status_code == 401

        return await _alternate(
            {"InternalPredict (ahead of the stack)": fast, "FastAPI's stack and router": routed}
        )


def report(title: str, got: dict[str, list[float]], baseline: str) -> None:
    base = _ms(got[baseline])
    print(f"### {title}\n")
    print(f"| side | requests | p50 ms | x {baseline} |")
    print("| --- | --- | --- | --- |")
    for name, values in got.items():
        print(f"| {name} | {len(values)} | {_ms(values):.3f} | {_ms(values) / base:.2f} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body-kb", type=int, default=4, help="request body (the bench's 112 px JPEG is ~4 KB)")
    ap.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the echo app's process
    args = ap.parse_args()
    if args.serve:
        import uvicorn

        uvicorn.run(echo_app(), host="127.0.0.1", port=args.serve, log_level="warning", loop="uvloop",
                    http="httptools")  # fmt: skip
        return

    import uvloop

    body = os.urandom(args.body_kb * 1024)
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the echo app did not start") from None
                time.sleep(0.1)
        by_client = uvloop.run(clients(port, body))
    finally:
        server.terminate()
        server.wait(30)
    by_stack = uvloop.run(stack(body))
    print(f"CPU: {os.cpu_count()} cores; {args.body_kb} KB bodies, 2 KB answers; {BLOCK} requests a block, "
          f"{ROUNDS} rounds\n")  # fmt: skip
    report("1. One round trip on loopback, by client (uvicorn + Starlette answering)", by_client,
           "aiohttp ClientSession")  # fmt: skip
    report("2. The inference service's app, in process (ASGI, no sockets), a call refused by its token", by_stack,
           "InternalPredict (ahead of the stack)")  # fmt: skip


if __name__ == "__main__":
    main()
