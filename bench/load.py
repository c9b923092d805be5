"""Load: --clients concurrent clients mixing list, get, predict and event-stream requests for --duration
seconds against the production topology, with per-route p50/p95 and every error counted.

The topology is the deploy suite's (`tests/deploy/topology.py`): docker-compose.yml's own commands run as
processes on this machine, on a fresh PostgreSQL database, Redis (databases 8 and 9) and a fresh bucket on an
S3 endpoint (moto's server, started here): `alembic upgrade head`, the API (uvicorn, 2 processes), the inference
service (which the API forwards predictions to), the GPU and CPU Celery workers and beat. The user's flow is driven once through it (dataset upload, version built by the
CPU worker, a job on the bundled tiny base trained by the GPU worker, its model), then the load runs against
those objects. Each client loops: pick a route at random (weights below), send, wait for the whole answer
(for the event stream: until the server ends it, the job being finished), record, repeat. Nothing else runs.

Traffic goes only to 127.0.0.1. The run stops by itself: no new request after --duration, and every request
has a timeout; the processes are stopped at the end, also on error.

    .venv/bin/python -m bench.load --clients 50 --duration 60 --record
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO = Path(__file__).resolve().parents[1]
REQUEST_TIMEOUT = 60.0


@dataclass
class Targets:
    """What the clients ask for: a finished job's dataset, job and model, and an image to predict on."""

    dataset_id: str
    job_id: str
    model_id: str
    image: bytes


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def record(self, route: str, seconds: float, error: str | None) -> None:
        self.latencies[route].append(seconds)
        if error:
            self.errors[route].append(error)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    @property
    def error_count(self) -> int:
        return sum(len(v) for v in self.errors.values())


Request = Callable[[httpx.AsyncClient, Targets], Awaitable[str | None]]


def _expect(r: httpx.Response, status: int = 200) -> str | None:
    return None if r.status_code == status else f"{r.status_code} {r.text[:200]}"


async def _get(http: httpx.AsyncClient, path: str) -> str | None:
    return _expect(await http.get(path))


async def _predict(http: httpx.AsyncClient, t: Targets) -> str | None:
    r = await http.post(
        f"/api/v1/models/{t.model_id}/predict",
        files={"image": ("load.jpg", t.image, "image/jpeg")},
        data={"confidence": "0.3"},
    )
    if r.status_code != 200:
        return f"{r.status_code} {r.text[:200]}"
    return None if isinstance(r.json().get("predictions"), list) else "no predictions list"


async def _events(http: httpx.AsyncClient, t: Targets) -> str | None:
    """The finished job's whole event stream, read until the server closes it; it must end on its status."""
    async with http.stream("GET", f"/api/v1/jobs/{t.job_id}/events") as r:
        if r.status_code != 200:
            return f"{r.status_code} {(await r.aread())[:200]!r}"
        last_kind = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                last_kind = line.partition(":")[2].strip()
    return None if last_kind == "status" else f"the stream ended on {last_kind!r}, not the final status"


# (route label, weight, request). The labels are the routes as the API declares them.
ROUTES: list[tuple[str, int, Request]] = [
    ("GET /api/v1/datasets", 10, lambda h, t: _get(h, "/api/v1/datasets")),
    ("GET /api/v1/jobs", 10, lambda h, t: _get(h, "/api/v1/jobs")),
    ("GET /api/v1/models", 10, lambda h, t: _get(h, "/api/v1/models")),
    ("GET /api/v1/datasets/{id}", 10, lambda h, t: _get(h, f"/api/v1/datasets/{t.dataset_id}")),
    ("GET /api/v1/jobs/{id}", 10, lambda h, t: _get(h, f"/api/v1/jobs/{t.job_id}")),
    ("GET /api/v1/models/{id}", 10, lambda h, t: _get(h, f"/api/v1/models/{t.model_id}")),
    ("POST /api/v1/models/{id}/predict", 20, _predict),
    ("GET /api/v1/jobs/{id}/events (SSE)", 10, _events),
]


async def _client(n: int, http: httpx.AsyncClient, targets: Targets, deadline: float, stats: Stats) -> None:
    rng = random.Random(n)
    labels, weights = [r[0] for r in ROUTES], [r[1] for r in ROUTES]
    calls = {r[0]: r[2] for r in ROUTES}
    while time.monotonic() < deadline:
        label = rng.choices(labels, weights)[0]
        started = time.perf_counter()
        try:
            error = await calls[label](http, targets)
        except httpx.HTTPError as exc:
            # When and what exactly: a bare ReadError says nothing of which side closed, or why.
            cause = exc.__cause__ or exc.__context__
            error = f"{type(exc).__name__} at {deadline - time.monotonic():.1f} s before the end: {exc!r} ({cause!r})"
        stats.record(label, time.perf_counter() - started, error)


async def run_load(
    url: str, key: str, targets: Targets, clients: int, duration: float
) -> tuple[Stats, float]:
    """`clients` closed-loop clients for `duration` seconds; returns the statistics and the elapsed time."""
    assert urlsplit(url).hostname == "127.0.0.1", f"load goes to 127.0.0.1 only, not {url}"
    stats = Stats()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT, limits=limits
    ) as http:
        started = time.monotonic()
        deadline = started + duration
        tasks = [_client(n, http, targets, deadline, stats) for n in range(clients)]
        # In-flight requests finish within their timeout; past that the run is cut, never left hanging.
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + REQUEST_TIMEOUT + 30)
        elapsed = time.monotonic() - started
    return stats, elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def table(stats: Stats, elapsed: float) -> str:
    lines = [
        "| route | requests | errors | p50 ms | p95 ms | max ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, _, _ in ROUTES:
        values = stats.latencies.get(label, [])
        if not values:
            lines.append(f"| `{label}` | 0 | 0 | - | - | - |")
            continue
        lines.append(
            f"| `{label}` | {len(values)} | {len(stats.errors.get(label, []))} | "
            f"{statistics.median(values) * 1000:.0f} | {percentile(values, 0.95) * 1000:.0f} | "
            f"{max(values) * 1000:.0f} |"
        )
    every = [v for values in stats.latencies.values() for v in values]
    lines.append(
        f"| all | {stats.total} | {stats.error_count} | {statistics.median(every) * 1000:.0f} | "
        f"{percentile(every, 0.95) * 1000:.0f} | {max(every) * 1000:.0f} |"
    )
    return "\n".join(lines) + f"\n\n{stats.total / elapsed:.1f} requests/s over {elapsed:.1f} s."


# --- the production topology -------------------------------------------------------------------------------


def _start_moto(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--record", action="store_true", help="append the results to bench/RESULTS.md")
    args = parser.parse_args()

    import redis

    from tests.deploy.topology import BROKER_DB, FEED_DB, LocalServices, ProductionTopology, drive_flow
    from tests.support.databases import drop_postgres_database, fresh_postgres_database
    from tests.support.ports import free_port
    from tests.support.s3 import fresh_bucket

    root = Path(tempfile.mkdtemp(prefix="samtune-load-"))
    database_url = fresh_postgres_database(args.postgres, "samtune_bench_load")
    for db in (BROKER_DB, FEED_DB):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    s3_port = free_port()
    moto = _start_moto(s3_port, root / "moto.log")
    endpoint = f"http://127.0.0.1:{s3_port}"
    bucket = fresh_bucket(endpoint, "samtune-load")
    topo = ProductionTopology(root, LocalServices(database_url, "127.0.0.1", 6379, endpoint, bucket))
    try:
        with topo.logs_on_failure():
            topo.run_once("migrate")
            for service in ("api", "inference", "worker", "worker-cpu", "beat"):
                topo.start(service)
            key = topo.samtune("keys", "create", "--workspace", "load").strip().splitlines()[-1]
            topo.wait_healthy()
            for worker in ("worker", "worker-cpu"):
                topo.procs[worker].wait_log(r"celery@\S+ ready", timeout=150)
            print(f"[load] topology up at {topo.url}; driving the flow once (upload, version, job, model)")
            flow = drive_flow(topo.url, key, root)
            image = sorted((root / "synth" / "test").glob("*.jpg"))[0].read_bytes()
            targets = Targets(flow.dataset_id, flow.job["id"], flow.model["id"], image)
            print(f"[load] {args.clients} clients for {args.duration:.0f} s")
            stats, elapsed = asyncio.run(run_load(topo.url, key, targets, args.clients, args.duration))
            api_log = topo.procs["api"].log()
    finally:
        topo.stop()
        moto.terminate()
        moto.wait(timeout=10)
        drop_postgres_database(database_url)

    result = table(stats, elapsed)
    print(result)
    tracebacks = api_log.count("Traceback (most recent call last)")
    for label, errors in stats.errors.items():
        print(f"[load] {label}: {len(errors)} errors, first: {errors[0]}")
    print(f"[load] {stats.error_count} errors; {tracebacks} tracebacks in the API's log")
    if args.record:
        _record(args, result, stats, tracebacks)
    return 1 if stats.error_count or tracebacks else 0


def _record(args: argparse.Namespace, result: str, stats: Stats, tracebacks: int) -> None:
    command = (
        f"`.venv/bin/python -m bench.load --clients {args.clients} --duration {args.duration:.0f} --record`"
    )
    section = (
        f"\n### Run of {date.today().isoformat()}\n\nCommand: {command}\n\n{result}\n\n"
        f"Errors: {stats.error_count} (non-2xx answers, timeouts, broken streams); tracebacks in the API's "
        f"log: {tracebacks}.\n"
    )
    path = REPO / "bench" / "RESULTS.md"
    text = path.read_text()
    heading = "## Load: the production topology under 50 clients (`bench/load.py`)"
    if heading not in text:
        text = text.rstrip("\n") + "\n\n" + heading + "\n\n" + textwrap.fill(_METHOD, 110) + "\n"
    path.write_text(text.rstrip("\n") + "\n" + section)


_METHOD = (
    "docker-compose.yml's services as processes on this machine (the deploy suite's topology): PostgreSQL, "
    "Redis, an S3 endpoint (moto's server), the API under uvicorn with 2 processes, the GPU and CPU Celery "
    "workers (idle during the load) and beat, all on 2 CPU cores with the load generator. The user's flow is "
    "driven once (a 112 px synthetic dataset, a version, a job on the bundled tiny base), then closed-loop "
    "clients (no think time) mix lists, gets, predictions (a 112x112 JPEG, the model's classes) and the "
    "finished job's whole event stream. Latency is the whole answer, read to its end."
)


if __name__ == "__main__":
    sys.exit(main())
