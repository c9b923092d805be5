"""Job throughput and scheduling overhead with real workers, in one run.

Production layout on one machine: PostgreSQL (a fresh database), Redis as the Celery broker and the live
feed, the API in-process, and --workers separate `python -m app.cli worker -Q gpu -c 1` processes. A small
synthetic dataset (112 px) becomes a version; then --jobs short jobs (the bundled tiny model, decoder mode,
--steps steps each) are submitted through the API at once, and the script waits for all of them to end.

From the database rows (one clock: every process is on this machine) it prints, per job:
  - creation -> claim: the time a job waited; with a burst of jobs and few workers, mostly the queue;
  - job end -> next claim: how long a freed worker takes to start its next job (broker, a fresh child
    process per task, the claim), measured on the claims that waited for a worker to finish;
  - claim -> first training step: the worker's setup (snapshot download, base model load, encoder cache),
    up to `progress.training_started_at`, which the worker writes when the training loop begins;
  - claim -> finished: one attempt end to end;
and the throughput in jobs per minute (first creation to last finish).

    .venv/bin/python bench/job_queue.py --jobs 20 --workers 2
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO))
import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import datetime  # noqa: E402

import redis  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from app.core import migrate  # noqa: E402
from app.core.db import make_engine, make_sessionmaker, transaction  # noqa: E402
from app.core.storage import make_storage  # noqa: E402
from app.jobs.schemas import TERMINAL  # noqa: E402
from app.jobs.tables import JobEvent, TrainingJob  # noqa: E402
from app.keys.service import create_key_for_workspace  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.versions.builder import build_version  # noqa: E402
from tests.support.databases import drop_postgres_database, fresh_postgres_database  # noqa: E402
from trainer.synth import HELD_OUT_DOMAINS, write_dataset  # noqa: E402


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"| {label} | 0 | - | - | - |"
    return f"| {label} | {len(values)} | {pct(values, 50):.2f} | {pct(values, 95):.2f} | {max(values):.2f} |"


def start_workers(settings: Settings, n: int, logs: Path) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    env.update(
        SAMTUNE_DATA_DIR=str(settings.data_dir), SAMTUNE_DATABASE_URL=settings.database_url,
        SAMTUNE_BROKER_URL=settings.broker_url, SAMTUNE_STORAGE_URL=settings.storage_url,
        SAMTUNE_REDIS_URL=settings.redis_url or "", SAMTUNE_SECRET_KEY=settings.secret_key,
        SAMTUNE_WORKER_DEVICE="cpu", SAMTUNE_LOG_LEVEL="info", HF_HUB_OFFLINE="1",
    )  # fmt: skip
    procs = []
    for i in range(n):
        with open(logs / f"worker-{i}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker", "-Q", "gpu", "-c", "1"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=_REPO,
                )  # fmt: skip
            )
    return procs


def wait_ready(logs: Path, n: int, procs: list[subprocess.Popen], timeout: float = 180) -> float:
    """Seconds until every worker logged that it is ready to consume."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        ready = sum(" ready." in (logs / f"worker-{i}.log").read_text(errors="replace") for i in range(n))
        if ready == n:
            return time.monotonic() - t0
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    for i in range(n):
        print((logs / f"worker-{i}.log").read_text(errors="replace")[-3000:])
    raise SystemExit("the workers did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="training steps per job (decoder mode)")
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--broker-db", type=int, default=7, help="Redis database for the Celery broker")
    ap.add_argument("--feed-db", type=int, default=8, help="Redis database for the live feed")
    ap.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="samtune-bench-queue-"))
    database = fresh_postgres_database(args.postgres, "samtune_bench_queue")
    broker, feed = f"redis://127.0.0.1:6379/{args.broker_db}", f"redis://127.0.0.1:6379/{args.feed_db}"
    for url in (broker, feed):
        redis.Redis.from_url(url).flushdb()
    settings = Settings(
        data_dir=work / "data", database_url=database, broker_url=broker, redis_url=feed,
        secret_key="bench", worker_device="cpu",
    )  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        migrate.upgrade(database)
        engine = make_engine(database)
        factory = make_sessionmaker(engine)
        with transaction(factory) as session:
            _, key = create_key_for_workspace(session, "bench")
        auth = {"Authorization": f"Bearer {key}"}
        # Batch 2 over 4 train images: 2 steps per epoch; --steps caps the total.
        epochs = max(1, (args.steps + 1) // 2)
        data = write_dataset(work / "synth", list(HELD_OUT_DOMAINS["new-colours"]),
                             {"train": 4, "valid": 2, "test": 2}, size=112, seed=0, max_objects=2)  # fmt: skip
        archive = shutil.make_archive(str(work / "synth"), "zip", data)

        procs = start_workers(settings, args.workers, work)
        with TestClient(create_app(settings)) as client:
            ds = client.post("/api/v1/datasets", json={"name": "bench"}, headers=auth).json()
            with open(archive, "rb") as f:
                client.post(f"/api/v1/datasets/{ds['id']}/uploads", files={"file": ("synth.zip", f)},
                            headers=auth).raise_for_status()  # fmt: skip
            spec = {"preprocessing": {"resize": {"width": 112, "height": 112}}}
            version = client.post(f"/api/v1/datasets/{ds['id']}/versions", json=spec, headers=auth).json()
            # Built here: the workers listen on `gpu` only.
            assert (
                build_version(factory, make_storage(settings), settings, uuid.UUID(version["id"])) == "ready"
            )
            startup = wait_ready(work, args.workers, procs)
            print(f"{args.workers} workers ready in {startup:.1f}s; submitting {args.jobs} jobs of "
                  f"{args.steps} steps (tiny base, decoder mode)", flush=True)  # fmt: skip
            body = {
                "version_id": version["id"],
                "mode": "decoder",
                "hyperparameters": {"epochs": epochs, "max_steps": args.steps, "eval_base_model": False},
            }
            ids = []
            for _ in range(args.jobs):
                r = client.post("/api/v1/jobs", json=body, headers=auth)
                r.raise_for_status()
                ids.append(uuid.UUID(r.json()["id"]))

        t0 = time.monotonic()
        while True:
            with transaction(factory) as session:
                statuses = list(session.scalars(select(TrainingJob.status).where(TrainingJob.id.in_(ids))))
            done = sum(s in TERMINAL for s in statuses)
            if done == len(ids):
                break
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit(f"only {done} of {len(ids)} jobs ended within {args.timeout:.0f}s")
            time.sleep(1.0)

        with transaction(factory) as session:
            jobs = list(session.scalars(select(TrainingJob).where(TrainingJob.id.in_(ids))))
            running: dict[uuid.UUID, datetime] = {}  # the claim: a job's first "running" status event
            for e in session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id.in_(ids), JobEvent.kind == "status")
                .order_by(JobEvent.id)
            ):
                if e.data.get("status") == "running":
                    running.setdefault(e.job_id, e.created_at)
        engine.dispose()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()

    failed = [j for j in jobs if j.status != "succeeded"]
    if failed:
        print(f"{len(failed)} jobs did not succeed: {[(str(j.id), j.status, j.error) for j in failed][:5]}")
    ok = [j for j in jobs if j.status == "succeeded"]
    claims = {j.id: running[j.id] for j in jobs if j.id in running}
    wait = [(claims[j.id] - j.created_at).total_seconds() for j in ok]
    setup = [
        (datetime.fromisoformat(j.progress["training_started_at"]) - claims[j.id]).total_seconds()
        for j in ok
        if "training_started_at" in (j.progress or {})
    ]
    attempt = [(j.finished_at - claims[j.id]).total_seconds() for j in ok if j.finished_at]
    # A freed worker's turnaround: each claim after the first `workers` ones follows the end of an earlier job
    # (FIFO, workers busy); pair the claims, in order, with the ends, in order.
    ends = sorted(j.finished_at for j in jobs if j.finished_at)
    later_claims = sorted(claims.values())[args.workers :]
    turnaround = [(c - e).total_seconds() for c, e in zip(later_claims, ends, strict=False) if c >= e]
    first, last = min(j.created_at for j in jobs), max(ends)
    minutes = (last - first).total_seconds() / 60
    print()
    print(
        f"| {args.jobs} jobs, {args.workers} workers, {args.steps} steps each | jobs | p50 s | p95 s | max s |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(row("creation -> claim (waiting in the queue)", wait))
    print(row("job end -> next claim (a freed worker picks up)", turnaround))
    print(row("claim -> first training step (worker setup)", setup))
    print(row("claim -> finished (one attempt)", attempt))
    print()
    print(f"throughput: {len(ok) / minutes:.1f} jobs/minute ({len(ok)} succeeded in {minutes * 60:.0f}s, "
          f"first creation to last finish)")  # fmt: skip
    if attempt:
        print(f"ideal with {args.workers} workers and no overhead between jobs: "
              f"{60 * args.workers / statistics.mean(attempt):.1f} jobs/minute")  # fmt: skip
    drop_postgres_database(database)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
