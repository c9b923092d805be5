"""Fault tolerance of training jobs, end to end: real `python -m app.cli worker` (and beat, and API) processes,
real Redis, real PostgreSQL, the bundled tiny model on the CPU. Each test breaks something (SIGKILL a worker
while it trains or while it predicts a batch, deliver a message twice, restart Redis, restart the API, stop or cancel a job, cancel a job whose worker just
died, a base model that will not load) and checks what the user sees through the API afterwards.

Timings are shortened through the environment: lease 3 s, heartbeat and metric flush 0.5 s, reaper every 1 s.
Redis: DB 10 (the shared worker's broker), 11 (the SIGKILL test's workers and beat), 12 (a broker no worker
listens to), 13 (live feed); the Redis restart test runs a private redis-server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction
from app.core.queue import CeleryQueue
from app.core.storage import make_storage
from app.core.tasks import GPU_QUEUE, TRAIN_JOB, make_celery
from app.jobs.feed import stream_key
from app.jobs.reaper import reap_stale_jobs
from app.jobs.tables import TrainingJob
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.models.batches import reap_stale_batches
from app.models.tables import BatchPrediction
from app.settings import Settings
from app.versions.builder import build_version
from tests.support.databases import fresh_postgres_database
from tests.support.ports import free_port
from tests.support.processes import Proc, stop_together
from tests.support.servers import answers
from tests.support.waiting import wait_until
from trainer.base_model import EMBEDDED_BASE, META_BASE
from trainer.synth import HELD_OUT_DOMAINS, write_dataset

pytestmark = pytest.mark.timeout(420)

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
DB_SHARED, DB_KILL, DB_PARKED, DB_FEED = 10, 11, 12, 13
DATABASE = "samtune_job_faults"  # PostgreSQL, created fresh for the module and dropped after it
TIMINGS = {
    "job_lease_seconds": 3.0,
    "job_heartbeat_seconds": 0.5,
    "metrics_flush_seconds": 0.5,
    "reaper_interval_seconds": 1.0,
    "job_requeue_after_seconds": 60.0,
}
TRAIN_IMAGES = 12
BATCH = 2
STEPS_PER_EPOCH = TRAIN_IMAGES // BATCH
LOG_EVERY = 10  # the trainer's log_every_steps: loss points at multiples of 10 (and the last step)
# Fast and deterministic: no early stopping, no zero-shot evaluation of the base model at the end.
HP = {"batch_size": BATCH, "early_stopping_patience": 0, "eval_base_model": False}


def redis_url(db: int, port: int = REDIS_PORT) -> str:
    return f"redis://{REDIS_HOST}:{port}/{db}"


class Deployment:
    """One samtune installation: a fresh PostgreSQL database, local object storage, Redis, a workspace with a
    ready dataset version, and the processes the tests start (all stopped at the end)."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        # A directory that claims to be facebook/sam3 but is not: configured for every process of the
        # installation (the API lists facebook/sam3 as available; the jobs of the other tests name the tiny model).
        self.bad_sam3 = root / "not-sam3"
        self.bad_sam3.mkdir()
        (self.bad_sam3 / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
        (self.bad_sam3 / "model.safetensors").write_bytes(b"\0" * 16)
        self.settings = self.make_settings(
            data_dir=root / "data",
            database_url=database_url,
            storage_url=(root / "objects").as_uri(),
            broker_url=redis_url(DB_SHARED),
            redis_url=redis_url(DB_FEED),
            sam3_path=self.bad_sam3,
        )
        self.storage = make_storage(self.settings)
        self.procs: list[Proc] = []
        self.shared: Proc | None = None
        self.auth: dict[str, str] = {}
        self.version_id = ""

    @staticmethod
    def make_settings(**values: Any) -> Settings:
        return Settings(**(TIMINGS | values))

    def settings_with(self, **changes: Any) -> Settings:
        return self.make_settings(**(self.settings.model_dump(include=set(Settings.model_fields)) | changes))

    def env(self, settings: Settings | None = None) -> dict[str, str]:
        s = settings or self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
        env.update(
            SAMTUNE_DATA_DIR=str(s.data_dir),
            SAMTUNE_DATABASE_URL=s.database_url,
            SAMTUNE_STORAGE_URL=s.storage_url,
            SAMTUNE_BROKER_URL=s.broker_url,
            SAMTUNE_REDIS_URL=s.redis_url or "",
            SAMTUNE_SAM3_PATH=str(s.sam3_path),
            SAMTUNE_JOB_LEASE_SECONDS=str(s.job_lease_seconds),
            SAMTUNE_JOB_HEARTBEAT_SECONDS=str(s.job_heartbeat_seconds),
            SAMTUNE_METRICS_FLUSH_SECONDS=str(s.metrics_flush_seconds),
            SAMTUNE_REAPER_INTERVAL_SECONDS=str(s.reaper_interval_seconds),
            SAMTUNE_JOB_REQUEUE_AFTER_SECONDS=str(s.job_requeue_after_seconds),
            SAMTUNE_SECRET_KEY="faults-test",
            SAMTUNE_LOG_LEVEL="info",
            PYTHONUNBUFFERED="1",
            # One thread per process: on this small shared machine, OpenMP threads that spin waiting for each
            # other make a step tens of times slower than one thread does.
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        return env

    def start(self, name: str, *args: str, settings: Settings | None = None) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "app.cli", *args], self.env(settings), self.logs)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, concurrency: int = 1, settings: Settings | None = None) -> Proc:
        return self.start(name, "worker", "-Q", "gpu,cpu", "-c", str(concurrency), settings=settings)

    def checkpoint_pointer(self, job_id: str) -> dict:
        """What a resume would start from (not shown by the API): the job's checkpoint columns."""
        engine = make_engine(self.settings.database_url)
        try:
            with make_sessionmaker(engine)() as session:
                job = session.get(TrainingJob, uuid.UUID(job_id))
                assert job is not None
                return {"prefix": job.checkpoint_prefix, "step": job.checkpoint_step or 0}
        finally:
            engine.dispose()

    def client(self, settings: Settings | None = None) -> TestClient:
        """The API in-process, sending its tasks to the real broker of `settings`."""
        return TestClient(create_app(settings or self.settings))

    def stop_all(self) -> None:
        stop_together(*self.procs)

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """On a failure, the tail of every process log (pytest shows it with the failure)."""
        try:
            yield
        except BaseException:
            for proc in self.procs:
                print(f"===== {proc.name} ({proc.log_path}) =====\n{proc.log()[-4000:]}")
            raise


@pytest.fixture(scope="module")
def dep(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("faults")
    for db in (DB_SHARED, DB_KILL, DB_PARKED, DB_FEED):
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
    d = Deployment(root, fresh_postgres_database(postgres_url, DATABASE))
    migrate.upgrade(d.settings.database_url)
    # The shared worker starts now (it takes a while to import torch) and is ready by the time a test needs it.
    d.shared = d.worker("shared", concurrency=2)
    try:
        engine = make_engine(d.settings.database_url)
        factory = make_sessionmaker(engine)
        with transaction(factory) as session:
            _, key = create_key_for_workspace(session, "faults")
        d.auth = {"Authorization": f"Bearer {key}"}
        concepts = list(HELD_OUT_DOMAINS["new-colours"])
        counts = {"train": TRAIN_IMAGES, "valid": 4, "test": 4}
        data = write_dataset(root / "shapes", concepts, counts, size=112, seed=3)
        archive = shutil.make_archive(str(root / "shapes"), "zip", data)
        # Built in-process with the real builder: its message goes to a broker no worker consumes.
        with d.client(d.settings_with(broker_url=redis_url(DB_PARKED))) as c:
            ds = c.post("/api/v1/datasets", json={"name": "shapes"}, headers=d.auth)
            assert ds.status_code == 201, ds.text
            with open(archive, "rb") as f:
                up = c.post(
                    f"/api/v1/datasets/{ds.json()['id']}/uploads",
                    files={"file": ("shapes.zip", f)},
                    headers=d.auth,
                )
            assert up.status_code == 201, up.text
            spec = {"preprocessing": {"resize": {"width": 112, "height": 112}}}
            v = c.post(f"/api/v1/datasets/{ds.json()['id']}/versions", json=spec, headers=d.auth)
            assert v.status_code == 202, v.text
            build_version(factory, d.storage, d.settings, uuid.UUID(v.json()["id"]))
            assert c.get(f"/api/v1/versions/{v.json()['id']}", headers=d.auth).json()["status"] == "ready"
            d.version_id = v.json()["id"]
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB_PARKED).flushdb()
        engine.dispose()
        yield d
    finally:
        d.stop_all()
        for db in (DB_SHARED, DB_KILL, DB_PARKED, DB_FEED):
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db).flushdb()
        admin = make_engine(d.settings.database_url.rsplit("/", 1)[0] + "/postgres")
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def shared(dep: Deployment) -> Proc:
    """The installation's long-running worker (concurrency 2, broker DB 10), ready."""
    proc = dep.shared
    assert proc is not None
    with dep.logs_on_failure():
        proc.wait_log(r"celery@\S+ ready", timeout=120)
    return proc


# --- API helpers ----------------------------------------------------------------------------------------------


class Api:
    """The endpoints the tests read, over any client (in-process TestClient or HTTP to a server process)."""

    def __init__(self, client: httpx.Client, auth: dict[str, str]) -> None:
        self.client, self.auth = client, auth

    def create(self, version_id: str, epochs: int, base_model: str = EMBEDDED_BASE, **hp: Any) -> dict:
        body = {
            "version_id": version_id,
            "base_model": base_model,
            "mode": "decoder",
            "hyperparameters": HP | {"epochs": epochs} | hp,
        }
        r = self.client.post("/api/v1/jobs", json=body, headers=self.auth)
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "queued"
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/api/v1/jobs/{job_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def metrics(self, job_id: str) -> list[dict]:
        r = self.client.get(f"/api/v1/jobs/{job_id}/metrics", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, job_id: str, action: str) -> dict:
        r = self.client.post(f"/api/v1/jobs/{job_id}/{action}", headers=self.auth)
        assert r.status_code == 202, r.text
        return r.json()

    def wait_status(self, job_id: str, statuses: set[str], timeout: float) -> dict:
        def reached() -> dict | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        try:
            return wait_until(
                reached, timeout=timeout, message=f"job {job_id} to be {'/'.join(sorted(statuses))}"
            )
        except AssertionError as exc:
            job = self.job(job_id)
            raise AssertionError(f"{exc}; it is {job['status']}: {events_summary(job)}") from None

    def wait_terminal(self, job_id: str, timeout: float = 150) -> dict:
        return self.wait_status(job_id, {"succeeded", "failed", "cancelled"}, timeout)


def events_summary(job: dict) -> list[tuple[str, int, str]]:
    return [(e["kind"], e["attempt"], e["message"]) for e in job["events"]]


def status_events(job: dict, status: str | None = None) -> list[dict]:
    return [e for e in job["events"] if e["kind"] == "status" and status in (None, e["data"].get("status"))]


def assert_single_clean_attempt(job: dict) -> None:
    """Succeeded on its first attempt: one claim, no restart, a registered model."""
    summary = events_summary(job)
    assert job["status"] == "succeeded", (job["error"], summary)
    assert job["attempt"] == 1, summary
    running = status_events(job, "running")
    assert len(running) == 1 and running[0]["data"]["attempt"] == 1, summary
    assert not [e for e in job["events"] if e["data"].get("restart") or e["kind"] == "resumed"], summary
    assert job["model_id"] is not None and job["error"] is None


def assert_metric_history(points: list[dict], total_steps: int) -> None:
    """Every (metric, step) at most once; `loss` at every multiple of LOG_EVERY and at the last step, and the
    validation metrics at every epoch's end: no gaps, no duplicates."""
    seen = Counter((p["name"], p["step"]) for p in points)
    assert not [k for k, n in seen.items() if n > 1], "duplicate metric points"
    loss = [p["step"] for p in points if p["name"] == "loss"]
    assert loss == sorted(set(range(LOG_EVERY, total_steps + 1, LOG_EVERY)) | {total_steps}), loss
    valid = [p["step"] for p in points if p["name"] == "valid_segm_AP"]
    assert valid == list(range(STEPS_PER_EPOCH, total_steps + 1, STEPS_PER_EPOCH)), valid


def observed_step(api: Api, job_id: str) -> tuple[int, dict]:
    """The furthest step the database shows for the job (progress and metric points) and the job."""
    job = api.job(job_id)
    steps = [p["step"] for p in api.metrics(job_id)]
    return max([job["progress"].get("step") or 0, *steps]), job


# --- 1. SIGKILL ---------------------------------------------------------------------------------------------


def test_sigkilled_worker_is_replaced_and_the_job_resumes_from_its_last_checkpoint(dep: Deployment) -> None:
    every = 4  # checkpoint interval
    epochs = 20
    total = epochs * STEPS_PER_EPOCH
    kill_settings = dep.settings_with(broker_url=redis_url(DB_KILL))
    # A second machine: its own data directory (no local leftovers, no caches); it shares only the database,
    # the broker and the object storage with the first.
    other_machine = dep.settings_with(broker_url=redis_url(DB_KILL), data_dir=dep.root / "machine-b")
    with dep.logs_on_failure(), dep.client(kill_settings) as c:
        api = Api(c, dep.auth)
        beat = dep.start("beat", "beat", settings=dep.settings_with(broker_url=redis_url(DB_KILL),
                                                                     data_dir=dep.root / "beat"))  # fmt: skip
        first = dep.worker("worker-a", settings=kill_settings)
        job = api.create(dep.version_id, epochs, checkpoint_every_steps=every)
        job_id = job["id"]
        assert job["progress"]["total_steps"] == total

        api.wait_status(job_id, {"running"}, timeout=120)
        # The replacement starts while the first one trains (the reaper will hand it the job).
        second = dep.worker("worker-b", settings=other_machine)

        # Kill once the database shows step 10 or later: the worker is a little further, inside an epoch or not.
        def far_enough() -> tuple[int, dict] | None:
            step, seen = observed_step(api, job_id)
            return (step, seen) if step >= LOG_EVERY else None

        reached, before = wait_until(far_enough, timeout=120, interval=0.1, message="the job to pass step 10")
        loss_before = {p["step"]: p["value"] for p in api.metrics(job_id) if p["name"] == "loss"}
        assert before["status"] == "running" and reached < total, events_summary(before)
        first.kill()
        assert first.popen.returncode == -signal.SIGKILL
        time.sleep(0.5)
        pointer = dep.checkpoint_pointer(job_id)
        assert pointer["step"] > 0 and pointer["step"] % every == 0, pointer

        done = api.wait_terminal(job_id, timeout=180)
        summary = events_summary(done)
        assert done["status"] == "succeeded", (done["error"], summary)
        assert done["attempt"] == 2, summary
        assert done["model_id"] is not None and done["error"] is None
        assert done["progress"]["step"] == total

        # The reaper noticed the silent worker and re-queued the job to resume from the pointer.
        restarts = [e for e in status_events(done, "queued") if e["data"].get("restart")]
        assert len(restarts) == 1, summary
        assert restarts[0]["data"]["from_step"] == pointer["step"] and restarts[0]["attempt"] == 1
        running = status_events(done, "running")
        assert [e["data"]["attempt"] for e in running] == [1, 2], summary
        assert f"resuming from step {pointer['step']}" in running[1]["message"]
        # The second attempt resumed from the last uploaded checkpoint: at most one interval redone.
        resumed = [e for e in done["events"] if e["kind"] == "resumed"]
        assert len(resumed) == 1 and resumed[0]["attempt"] == 2, summary
        resumed_at = resumed[0]["data"]["step"]
        assert resumed_at == pointer["step"], (resumed_at, pointer)
        assert resumed_at > 0 and reached - resumed_at <= every, (reached, resumed_at)

        points = api.metrics(job_id)
        assert_metric_history(points, total)
        # A redone step reproduces its point exactly (every random choice derives from (seed, step)).
        loss_after = {p["step"]: p["value"] for p in points if p["name"] == "loss"}
        for step, value in loss_before.items():
            if step > resumed_at:
                assert loss_after[step] == pytest.approx(value, rel=1e-3), (step, value, loss_after[step])
        # The attempts' checkpoints are gone once the model is registered; the model is in storage.
        assert list(dep.storage.list(f"jobs/{job_id}/")) == []
        # A decoder-mode model is stored as its changed tensors over its base (app/models/assembly.py).
        assert dep.storage.exists(f"models/{done['model_id']}/delta.safetensors")
        # The second attempt ran in worker-b, the first in worker-a.
        assert f"resumed from the checkpoint at step {resumed_at}" in second.log()
        assert "resumed from the checkpoint" not in first.log()
        stop_together(beat, second)


# --- 2. the same message twice ------------------------------------------------------------------------------


def test_a_message_delivered_twice_runs_one_attempt(dep: Deployment, shared: Proc) -> None:
    with dep.logs_on_failure(), dep.client() as c:
        api = Api(c, dep.auth)
        job = api.create(dep.version_id, epochs=1)  # the API sends one message...
        # ...and here is another, as a redelivery would bring it.
        CeleryQueue(make_celery(dep.settings)).send(TRAIN_JOB, [job["id"]], GPU_QUEUE)
        done = api.wait_terminal(job["id"])
        assert_single_clean_attempt(done)
        # The second delivery was taken by the other worker process and declined by the claim.
        shared.wait_log(rf"job {job['id']} not claimed: it is (running|succeeded)", timeout=60)
        assert_metric_history(api.metrics(job["id"]), STEPS_PER_EPOCH)


# --- 3. Redis restarted ------------------------------------------------------------------------------------


class PrivateRedis:
    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes", "--dir", str(directory)]  # fmt: skip
        self.port = port
        self.log = open(directory / "redis.log", "ab")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port)
        wait_until(lambda: _pings(client), timeout=20, interval=0.05, message="redis-server to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis-server flushes its append-only file and exits
            self.proc.wait(timeout=20)

    def close(self) -> None:
        self.stop()
        self.log.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_restart_loses_no_job(dep: Deployment, tmp_path: Path) -> None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        pytest.skip("no redis-server binary to run a private Redis")
    port = free_port()
    server = PrivateRedis(binary, tmp_path, port)
    server.start()
    settings = dep.settings_with(broker_url=redis_url(0, port), redis_url=redis_url(1, port))
    try:
        with dep.logs_on_failure(), dep.client(settings) as c:
            api = Api(c, dep.auth)
            worker = dep.worker("worker-redis", settings=settings)
            long = api.create(dep.version_id, epochs=30)
            # The second waits in the broker behind the first (the worker has one process).
            queued = api.create(dep.version_id, epochs=1)
            api.wait_status(long["id"], {"running"}, timeout=120)
            step_before, _ = wait_until(
                lambda: (s := observed_step(api, long["id"]))[0] > 0 and s,
                timeout=90,
                interval=0.1,
                message="the first job's first metrics",
            )

            server.stop()
            time.sleep(2.5)
            during = api.job(long["id"])
            # Training went on without Redis (the lease lives in the database).
            assert during["status"] in ("running", "succeeded"), events_summary(during)
            assert during["progress"]["step"] > step_before
            server.start()

            first = api.wait_terminal(long["id"], timeout=150)
            assert_single_clean_attempt(first)
            assert first["progress"]["step"] > step_before
            second = api.wait_terminal(queued["id"], timeout=120)
            assert_single_clean_attempt(second)
            assert_metric_history(api.metrics(long["id"]), 30 * STEPS_PER_EPOCH)
            # The worker did lose its broker connection, and came back by itself.
            assert "Connection to broker lost" in worker.log() and worker.alive()
            # The live feed works again: the job that ran after the restart published its whole life (the
            # final status is published just after the commit the API already shows).
            feed = redis.Redis(host="127.0.0.1", port=port, db=1)

            def kinds() -> list[bytes]:
                return [f[b"kind"] for _, f in feed.xrange(stream_key(queued["id"]))]

            wait_until(
                lambda: kinds()[-1:] == [b"status"], timeout=10, message="the final status in the live feed"
            )
            assert b"metrics" in kinds(), kinds()
            worker.stop()
    finally:
        server.close()


# --- 4. the API restarted ----------------------------------------------------------------------------------


def test_api_restart_changes_nothing_for_running_jobs(dep: Deployment, shared: Proc) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def serve() -> Proc:
        proc = dep.start("api", "serve", "--host", "127.0.0.1", "--port", str(port))

        def healthy() -> bool:
            assert proc.alive(), proc.log()[-3000:]
            return answers(f"{base}/healthz", timeout=1)

        wait_until(healthy, timeout=90, interval=0.25, message="the API to answer")
        return proc

    with dep.logs_on_failure():
        server = serve()
        with httpx.Client(base_url=base, timeout=30) as http:
            api = Api(http, dep.auth)
            job = api.create(dep.version_id, epochs=20)
            api.wait_status(job["id"], {"running"}, timeout=90)
            server.kill()
            with pytest.raises(httpx.TransportError):
                http.get("/healthz")
            server = serve()
            done = api.wait_terminal(job["id"])
            assert_single_clean_attempt(done)
            assert_metric_history(api.metrics(job["id"]), 20 * STEPS_PER_EPOCH)
        server.stop()


# --- 5. stop and cancel ---------------------------------------------------------------------------------------


def test_cancel_queued_and_running_and_stop_running(dep: Deployment, shared: Proc) -> None:
    parked = dep.settings_with(broker_url=redis_url(DB_PARKED))  # a broker no worker consumes
    with dep.logs_on_failure(), dep.client(parked) as pc, dep.client() as c:
        # Cancel while queued: no worker has seen the job.
        papi = Api(pc, dep.auth)
        early = papi.create(dep.version_id, epochs=2)
        out = papi.post(early["id"], "cancel")
        assert out["status"] == "cancelled" and out["attempt"] == 0
        # Now a worker gets the job's message after all (handed over to the shared worker's broker): it must
        # decline to run a cancelled job.
        src = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB_PARKED)
        dst = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB_SHARED)
        messages = src.lrange(GPU_QUEUE, 0, -1)
        assert len(messages) == 1, messages
        dst.lpush(GPU_QUEUE, *messages)
        src.delete(GPU_QUEUE)

        api = Api(c, dep.auth)
        to_cancel = api.create(dep.version_id, epochs=40, checkpoint_every_steps=2)
        to_stop = api.create(dep.version_id, epochs=40, checkpoint_every_steps=50)
        shared.wait_log(rf"job {early['id']} not claimed: it is cancelled", timeout=60)
        late = api.job(early["id"])
        assert late["status"] == "cancelled" and late["attempt"] == 0 and late["model_id"] is None
        assert [e["data"]["status"] for e in status_events(late)] == ["queued", "cancelled"]

        # Cancel while running, once a checkpoint is in storage.
        def checkpointed() -> bool:
            return bool(list(dep.storage.list(f"jobs/{to_cancel['id']}/")))

        wait_until(checkpointed, timeout=120, message="a checkpoint of the job to cancel")
        assert api.post(to_cancel["id"], "cancel")["cancel_requested"] is True

        # Stop while running, once a validation has given a best checkpoint.
        api.wait_status(to_stop["id"], {"running"}, timeout=60)
        wait_until(
            lambda: api.job(to_stop["id"])["best_valid"],
            timeout=120,
            message="a validation of the job to stop",
        )
        assert api.post(to_stop["id"], "stop")["stop_requested"] is True

        cancelled = api.wait_terminal(to_cancel["id"])
        summary = events_summary(cancelled)
        assert cancelled["status"] == "cancelled" and cancelled["attempt"] == 1, summary
        assert cancelled["model_id"] is None and cancelled["progress"]["step"] < 40 * STEPS_PER_EPOCH
        assert list(dep.storage.list(f"jobs/{to_cancel['id']}/")) == []
        assert not (dep.settings.data_dir / "runs" / to_cancel["id"]).exists()

        stopped = api.wait_terminal(to_stop["id"])
        summary = events_summary(stopped)
        assert stopped["status"] == "succeeded" and stopped["attempt"] == 1, summary
        assert stopped["model_id"] is not None, summary
        assert [e["data"].get("stopped") for e in status_events(stopped, "succeeded")] == [True], summary
        assert any(e["kind"] == "stop" for e in stopped["events"]), summary
        assert stopped["progress"]["step"] < 40 * STEPS_PER_EPOCH
        assert dep.storage.exists(f"models/{stopped['model_id']}/delta.safetensors")
        assert list(dep.storage.list(f"jobs/{to_stop['id']}/")) == []


# --- 5b. a cancel that its worker never read ----------------------------------------------------------------


def test_a_cancel_that_its_dead_worker_never_read_is_carried_out_by_the_reaper(dep: Deployment) -> None:
    settings = dep.settings_with(broker_url=redis_url(DB_KILL))
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB_KILL).flushdb()
    with dep.logs_on_failure(), dep.client(settings) as c:
        api = Api(c, dep.auth)
        doomed = dep.worker("worker-doomed", settings=settings)
        job = api.create(dep.version_id, epochs=40, checkpoint_every_steps=2)
        wait_until(lambda: list(dep.storage.list(f"jobs/{job['id']}/")), timeout=120, message="a checkpoint")
        doomed.kill()
        # The flag is set, but no worker is left to read it; the lease has not expired yet.
        out = api.post(job["id"], "cancel")
        assert out["status"] == "running" and out["cancel_requested"] is True

        tasks = CeleryQueue(make_celery(settings))

        def reaped() -> dict | None:
            reap_stale_jobs(settings, tasks)
            seen = api.job(job["id"])
            return seen if seen["status"] != "running" else None

        done = wait_until(reaped, timeout=60, interval=0.5, message="the reaper to act on the expired lease")
        summary = events_summary(done)
        # Cancelled, not resumed (a new attempt would never claim a cancelled job: it would stay queued).
        assert done["status"] == "cancelled" and done["attempt"] == 1, summary
        assert not [e for e in done["events"] if e["data"].get("restart")], summary
        assert done["model_id"] is None
        assert list(dep.storage.list(f"jobs/{job['id']}/")) == []
        assert job["id"] not in reap_stale_jobs(settings, tasks)


# --- 6. a genuine error -------------------------------------------------------------------------------------


def test_a_genuine_error_fails_once_readably_and_is_not_retried(dep: Deployment, shared: Proc) -> None:
    with dep.logs_on_failure(), dep.client() as c:
        api = Api(c, dep.auth)
        listed = {m["name"]: m for m in c.get("/api/v1/base-models", headers=dep.auth).json()}
        assert listed[META_BASE]["available"] is True  # the API believes the configured directory
        job = api.create(dep.version_id, epochs=2, base_model=META_BASE)
        failed = api.wait_terminal(job["id"], timeout=90)
        summary = events_summary(failed)
        assert failed["status"] == "failed" and failed["attempt"] == 1, summary
        assert "not a SAM 3 config" in failed["error"] and "bert" in failed["error"], failed["error"]
        assert len(status_events(failed, "running")) == 1
        assert [e["data"]["error"] for e in status_events(failed, "failed")] == [failed["error"]]
        assert failed["model_id"] is None

        # Several reaper passes later it is still failed, and nothing was sent for it.
        tasks = CeleryQueue(make_celery(dep.settings))
        for _ in range(3):
            assert job["id"] not in reap_stale_jobs(dep.settings, tasks)
            time.sleep(dep.settings.reaper_interval_seconds)
        again = api.job(job["id"])
        assert again["status"] == "failed" and again["attempt"] == 1
        assert events_summary(again) == summary


# --- 7. a batch prediction whose worker was SIGKILLed -------------------------------------------------------


def batch_row(dep: Deployment, batch_id: str) -> BatchPrediction:
    engine = make_engine(dep.settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            row = session.get(BatchPrediction, uuid.UUID(batch_id))
            assert row is not None
            session.expunge(row)
            return row
    finally:
        engine.dispose()


def test_a_batch_prediction_whose_worker_was_killed_is_retried_by_the_reaper(
    dep: Deployment, shared: Proc
) -> None:
    settings = dep.settings_with(broker_url=redis_url(DB_KILL))
    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=DB_KILL).flushdb()
    with dep.logs_on_failure(), dep.client() as c, dep.client(settings) as kc:
        api = Api(c, dep.auth)
        trained = api.wait_terminal(api.create(dep.version_id, epochs=1)["id"])
        model_id = trained["model_id"]
        assert model_id, events_summary(trained)

        doomed = dep.worker("worker-batch-a", settings=settings)
        doomed.wait_log(r"celery@\S+ ready", timeout=120)
        r = kc.post(
            f"/api/v1/models/{model_id}/predict-version/{dep.version_id}?split=train", headers=dep.auth
        )
        assert r.status_code == 202, r.text
        batch_id = r.json()["id"]

        def running() -> bool:
            return (
                kc.get(f"/api/v1/batch-predictions/{batch_id}", headers=dep.auth).json()["status"]
                == "running"
            )

        wait_until(running, timeout=120, interval=0.02, message="the batch to be claimed")
        doomed.kill()
        assert doomed.popen.returncode == -signal.SIGKILL
        # Killed mid-batch: the row says running, and the model it uses cannot be deleted.
        assert running()
        assert kc.delete(f"/api/v1/models/{model_id}", headers=dep.auth).status_code == 409

        # Until its lease expires, the reaper leaves it alone; then it sends it again, to a new worker.
        tasks = CeleryQueue(make_celery(settings))
        assert reap_stale_batches(settings, tasks) == []
        dep.worker("worker-batch-b", settings=settings)
        sent = wait_until(lambda: reap_stale_batches(settings, tasks), timeout=60, interval=0.5,
                          message="the reaper to send the batch again")  # fmt: skip
        assert sent == [batch_id]

        def finished() -> dict | None:
            out = kc.get(f"/api/v1/batch-predictions/{batch_id}", headers=dep.auth).json()
            return out if out["status"] not in ("queued", "running") else None

        done = wait_until(finished, timeout=120, message="the batch to finish on the second worker")
        assert done["status"] == "succeeded" and done["num_images"] == TRAIN_IMAGES, done
        row = batch_row(dep, batch_id)
        assert row.attempt == 2 and row.lease_token is None
        assert kc.delete(f"/api/v1/models/{model_id}", headers=dep.auth).status_code == 204
