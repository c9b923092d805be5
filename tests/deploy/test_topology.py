"""samtune deployed two ways, driven over HTTP the way a user drives it (see tests/deploy/topology.py).

1. The production topology of docker-compose.yml without Docker: PostgreSQL, Redis and an S3 endpoint (moto's
   server) for real, `alembic upgrade head`, then the API (uvicorn, 2 processes), the inference service the API
   forwards predictions to, the GPU and CPU workers and beat as separate processes running the compose file's
   own commands.
2. The embedded default exactly as `make run` starts it (its recipe read from the Makefile): `samtune
   bootstrap`, then `samtune up` on SQLite, a local folder and the server-less broker; a worker child and the
   inference child, each killed with SIGKILL, are restarted by the supervisor, and the restarted ones do the
   work.

Redis: databases 8 (broker) and 9 (live feed) of the shared server. PostgreSQL: a fresh database, dropped
afterwards.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from app.core.tasks import CPU_QUEUE, GPU_QUEUE
from app.jobs.feed import stream_key
from app.models.assembly import DELTA_CARD, DELTA_FILE
from app.settings import Settings
from tests.deploy.files import make_recipe
from tests.deploy.topology import (
    BIN,
    BROKER_DB,
    FEED_DB,
    LocalServices,
    ProductionTopology,
    base_env,
    check_flow,
    drive_flow,
)
from tests.support.databases import drop_postgres_database, fresh_postgres_database
from tests.support.ports import free_port
from tests.support.s3 import fresh_bucket, s3_client
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until
from trainer.base_model import EMBEDDED_BASE

pytestmark = pytest.mark.timeout(420)

DATABASE = "samtune_deploy_topology"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _flush(*dbs: int) -> None:
    for db in dbs:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        client.flushdb()
        client.close()


@pytest.fixture
def local_services(postgres_url: str, s3_endpoint: str) -> Iterator[LocalServices]:
    """A fresh database, fresh Redis databases and a fresh bucket on this machine's servers."""
    database_url = fresh_postgres_database(postgres_url, DATABASE)
    _flush(BROKER_DB, FEED_DB)
    bucket = fresh_bucket(s3_endpoint, "samtune-deploy")
    yield LocalServices(database_url, REDIS_HOST, REDIS_PORT, s3_endpoint, bucket)
    drop_postgres_database(database_url)
    _flush(BROKER_DB, FEED_DB)


def test_production_topology_runs_the_whole_flow(local_services: LocalServices, tmp_path: Path) -> None:
    topo = ProductionTopology(tmp_path, local_services)
    try:
        with topo.logs_on_failure():
            # The one-shot migration first, as compose orders it; then the long-running services.
            migrated = topo.run_once("migrate")
            assert "Running upgrade" in migrated.stderr, migrated.stderr
            for service in ("api", "inference", "worker", "worker-cpu", "beat"):
                topo.start(service)
            # The first key, as docs/deploy.md creates it (`docker compose exec api samtune keys create ...`).
            key = topo.samtune("keys", "create", "--workspace", "deploy").strip().splitlines()[-1]
            assert key.startswith("st_")
            topo.wait_healthy()
            for worker in ("worker", "worker-cpu"):
                topo.procs[worker].wait_log(r"celery@\S+ ready", timeout=150)

            result = drive_flow(topo.url, key, tmp_path)
            check_flow(result)
            job_id, model_id = result.job["id"], result.model["id"]

            # Each piece went where the compose file sends it: objects to the bucket (nothing in a local
            # folder), live events to the Redis feed database, messages through the Redis broker.
            keys = [o["Key"] for o in s3_client(local_services.s3_endpoint).list_objects_v2(
                Bucket=local_services.bucket, MaxKeys=1000).get("Contents", [])]  # fmt: skip
            # A decoder-mode model is stored as its delta from the base (app/models/assembly.py).
            assert {f"models/{model_id}/{DELTA_FILE}", f"models/{model_id}/{DELTA_CARD}"} <= set(keys), keys
            assert any(k.startswith("workspaces/") and "/images/" in k for k in keys), keys
            assert not (topo.data_dir / "objects").exists()
            feed = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=FEED_DB)
            kinds = {f[b"kind"] for _, f in feed.xrange(stream_key(job_id))}
            assert {b"status", b"metrics"} <= kinds, kinds
            broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)
            bindings = {k.decode() for k in broker.keys("_kombu.binding.*")}
            assert {f"_kombu.binding.{CPU_QUEUE}", f"_kombu.binding.{GPU_QUEUE}"} <= bindings, bindings
            # The version was built by the CPU worker and the job trained by the GPU worker.
            cpu_log, gpu_log = topo.procs["worker-cpu"].log(), topo.procs["worker"].log()
            assert re.search(r"Task samtune\.build_version\[\S+\] succeeded", cpu_log), cpu_log[-2000:]
            assert re.search(r"Task samtune\.train_job\[\S+\] succeeded", gpu_log), gpu_log[-2000:]
            assert "Task samtune.train_job[" not in cpu_log and "Task samtune.build_version[" not in gpu_log
            # The prediction was computed by the inference service, called by the API with the internal token:
            # the model is loaded there, and a call without the token is refused.
            assert re.search(r'"POST /internal/v1/predict HTTP/1\.1" 200', topo.procs["inference"].log()), (
                topo.procs["inference"].log()[-2000:]
            )
            inference_url = f"http://127.0.0.1:{topo.ports['inference']}"
            env = topo.env("inference")
            token = Settings(secret_key=env["SAMTUNE_SECRET_KEY"],
                             inference_token=env.get("SAMTUNE_INFERENCE_TOKEN", "")).internal_token  # fmt: skip
            status = httpx.get(f"{inference_url}/internal/v1/status",
                               headers={"X-Samtune-Internal-Token": token})  # fmt: skip
            assert status.status_code == 200, status.text
            assert model_id in status.json()["models"], status.json()
            assert httpx.get(f"{inference_url}/internal/v1/status").status_code == 401

            # What the image puts beside the code is found where its ENV says: the bundled base model and the
            # web UI's browser files (node_modules).
            with httpx.Client(base_url=topo.url, headers={"Authorization": f"Bearer {key}"}) as http:
                bases = {b["name"]: b for b in http.get("/api/v1/base-models").json()}
                assert bases[EMBEDDED_BASE]["available"] is True, bases
                vendor = http.get("/static/vendor/chart.umd.min.js")
                assert vendor.status_code == 200 and b"Chart" in vendor.content[:2000], vendor.status_code

            # The API runs as two server processes under uvicorn's supervisor.
            started = re.findall(r"Started server process \[(\d+)\]", topo.procs["api"].log())
            assert len(set(started)) == 2, topo.procs["api"].log()[-2000:]
            # Beat drives the reapers: its first due task reaches the CPU worker.
            topo.procs["worker-cpu"].wait_log(r"samtune\.reap_stale_(jobs|builds)", timeout=90)
            assert topo.procs["beat"].alive()

            # The compose healthchecks pass against the running services.
            for service in ("api", "inference", "worker", "worker-cpu", "beat"):
                probe = topo.healthcheck(service)
                assert probe.returncode == 0, (service, probe.stdout, probe.stderr)
    finally:
        topo.stop()


def test_make_run_embedded_default_and_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    # The commands of `make run`, from the Makefile itself.
    port = free_port()
    values = {"$(BIN)": str(BIN), "$(HOST)": "127.0.0.1", "$(PORT)": str(port)}
    argvs = []
    for line in make_recipe("run"):
        for name, value in values.items():
            line = line.replace(name, value)
        assert "$(" not in line, line
        argvs.append(shlex.split(line))
    assert [a[1:2] for a in argvs] == [["bootstrap"], ["up"]], argvs

    data = tmp_path / "data"
    env = base_env() | {"SAMTUNE_DATA_DIR": str(data)}  # what `make run SAMTUNE_DATA_DIR=...` exports
    boot = subprocess.run(argvs[0], env=env, capture_output=True, text=True, timeout=120)
    assert boot.returncode == 0, boot.stderr
    key = boot.stdout.strip().splitlines()[-1]
    assert key.startswith("st_"), boot.stdout
    logs = tmp_path / "logs"
    logs.mkdir()
    up = ServerProcess(argvs[1], port=port, env=env, log_path=logs / "up.log", name="samtune up")
    url = up.url
    with up.start(timeout=120):
        supervisor = psutil.Process(up.pid)

        def child_pids(command: str) -> list[int]:
            pids = []
            for child in supervisor.children(recursive=False):
                try:
                    cmd = child.cmdline()
                except psutil.Error:  # killed, not yet reaped
                    continue
                if "app.cli" in cmd and command in cmd:
                    pids.append(child.pid)
            return pids

        def kill_and_wait_restart(command: str) -> int:
            """SIGKILL the supervisor's `command` child; the pid of the one it starts instead."""
            (first,) = wait_until(lambda: child_pids(command), timeout=60,
                                  message=f"the supervisor's {command} child")  # fmt: skip
            os.kill(first, signal.SIGKILL)
            (second,) = wait_until(lambda: [p for p in child_pids(command) if p != first], timeout=60,
                                   message=f"a new {command} child")  # fmt: skip
            assert re.search(rf"{command} exited with -9; restarting", up.logs()), up.logs()[-2000:]
            return second

        worker = kill_and_wait_restart("worker")
        inference = kill_and_wait_restart("inference")

        # The whole flow, with the version built and the job trained by the restarted worker and the prediction
        # (through the API) computed by the restarted inference service.
        result = drive_flow(url, key, tmp_path)
        check_flow(result)
        assert child_pids("worker") == [worker] and child_pids("inference") == [inference]
        assert re.search(r'"POST /internal/v1/predict HTTP/1\.1" 200', up.logs()), up.logs()[-2000:]
        # The embedded default keeps everything in the data directory.
        assert (data / "samtune.db").is_file() and (data / "broker").is_dir()
        # A decoder-mode model is stored as its trained tensors over its base (app/models/assembly.py).
        assert (data / "objects" / "models" / result.model["id"] / "delta.safetensors").is_file()
        assert httpx.get(f"{url}/healthz").status_code == 200
        children = supervisor.children(recursive=True)
        up.stop(grace=60, strict=True)  # `make run`'s Ctrl-C (SIGTERM): the supervisor stops its children
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == [], alive
