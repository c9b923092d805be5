"""docker-compose.yml's samtune services run as containers of the image the Dockerfile builds (`make
test-docker`; never part of `make test`: it needs a Docker engine and the image, which the make target
provides). deploy/compose.ci.yml puts them on the host's network against this machine's PostgreSQL (a
database of this test's), Redis (databases BROKER_DB and FEED_DB) and S3 endpoint (moto's server; the bucket
is made by the compose file's own s3-bucket job). Then the user's flow over HTTP: a key made with `docker
compose exec api samtune keys create`, upload, version, a job on the bundled base, its event stream, the
model, a prediction through the native and a Roboflow route; a second job survives `docker compose restart
worker`; every container runs as the image's non-root user, every HEALTHCHECK reaches healthy; `docker
compose down` keeps the named volumes and a second `up` finds the data.

No bridge or compose network may be created (the engine runs with --bridge=none): the test checks that only
Docker's built-in host and none networks exist while the services run.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.deploy.files import REPO, env_example
from tests.deploy.topology import check_flow, drive_flow, read_events
from tests.support.databases import drop_postgres_database, fresh_postgres_database
from tests.support.jobs import FAST_HYPERPARAMETERS
from tests.support.ports import free_port
from tests.support.s3 import s3_client
from tests.support.waiting import wait_until
from trainer.base_model import EMBEDDED_BASE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

PROJECT = os.environ.get("SAMTUNE_DOCKER_PROJECT", "samtune-ci")
IMAGE = "samtune:latest"
DATABASE = "samtune_docker"
BROKER_DB, FEED_DB = 11, 12
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The services a deployment runs for good (migrate and s3-bucket run once, before them).
LONG_RUNNING = ("api", "inference", "worker", "worker-cpu", "beat")
# The image's user (Dockerfile: useradd --uid 10001 samtune).
IMAGE_UID = "10001"
COMPOSE_FILES = ("docker-compose.yml", "deploy/compose.ci.yml")


def _port(variable: str) -> int:
    """A port from the environment (make test-docker's SAMTUNE_DOCKER_*_PORT), else a free one."""
    value = os.environ.get(variable)
    return int(value) if value else free_port()


@dataclass
class Compose:
    """`docker compose` on docker-compose.yml with CI's override, for one project and one env file."""

    env_file: Path
    api_port: int
    logs: Path

    def argv(self, *args: str) -> list[str]:
        files = [a for f in COMPOSE_FILES for a in ("-f", str(REPO / f))]
        return ["docker", "compose", "-p", PROJECT, "--project-directory", str(REPO), *files,
                "--env-file", str(self.env_file), *args]  # fmt: skip

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)
        with open(self.logs, "a") as log:
            log.write(f"$ docker compose {' '.join(args)}\n{out.stdout}{out.stderr}\n")
        if check:
            assert out.returncode == 0, f"docker compose {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out

    def up(self) -> None:
        """Start the services and wait until every HEALTHCHECK reports healthy, beat's included (it answers a
        ping while its loop ticks). The one-shot migration and bucket job must have exited 0 before the others
        start (depends_on)."""
        self("up", "-d", "--no-build", *LONG_RUNNING, timeout=700)

        def healthy() -> bool:
            info = containers(self)
            for service in LONG_RUNNING:
                state = info[service]["State"]
                assert state["Status"] == "running" and not state["Restarting"], (service, state)
                if state["Health"]["Status"] != "healthy":
                    return False
            return True

        wait_until(healthy, timeout=600, interval=3, message="every service's HEALTHCHECK to report healthy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"


def docker(*args: str) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"docker {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def containers(compose: Compose) -> dict[str, dict[str, Any]]:
    """`docker inspect` of the project's containers, by service."""
    ids = compose("ps", "-a", "-q").stdout.split()
    assert ids, "no containers"
    out: dict[str, dict[str, Any]] = {}
    for info in json.loads(docker("inspect", *ids)):
        out[info["Config"]["Labels"]["com.docker.compose.service"]] = info
    return out


@pytest.fixture
def compose(postgres_url: str, s3_endpoint: str, tmp_path: Path) -> Iterator[Compose]:
    docker("image", "inspect", IMAGE)  # made by make test-docker: `docker build` of this checkout
    database_url = fresh_postgres_database(postgres_url, DATABASE)
    _flush()
    bucket = f"samtune-docker-{uuid.uuid4().hex[:10]}"
    api_port, inference_port = _port("SAMTUNE_DOCKER_API_PORT"), _port("SAMTUNE_DOCKER_INFERENCE_PORT")
    # What a user's .env holds (the example's values), plus where this machine's services are.
    example = env_example().values
    ci = {
        "CI_ENV_FILE": str(tmp_path / "ci.env"),
        "CI_DATABASE_URL": database_url,
        "CI_REDIS_PORT": str(REDIS_PORT),
        "CI_BROKER_DB": str(BROKER_DB),
        "CI_FEED_DB": str(FEED_DB),
        "CI_BUCKET": bucket,
        "CI_S3_ENDPOINT": s3_endpoint,
        "CI_API_PORT": str(api_port),
        "CI_INFERENCE_PORT": str(inference_port),
        # moto's server takes any key.
        "S3_ACCESS_KEY": "test",
        "S3_SECRET_KEY": "test",
    }
    env_file = tmp_path / "ci.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in (example | ci).items()))
    c = Compose(env_file, api_port, tmp_path / "compose.log")
    c("down", "-v", "--remove-orphans")  # what an interrupted earlier run left
    try:
        yield c
    except BaseException:
        raise
    finally:
        logs = c("logs", "--no-color", "--tail", "150", check=False)
        print(f"===== docker compose logs =====\n{logs.stdout[-30000:]}")
        c("down", "-v", "--remove-orphans", "-t", "30", check=False)
        drop_postgres_database(database_url)
        _flush()
        s3 = s3_client(s3_endpoint)
        if any(b["Name"] == bucket for b in s3.list_buckets()["Buckets"]):
            for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=obj["Key"])


def _flush() -> None:
    for db in (BROKER_DB, FEED_DB):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
        client.flushdb()
        client.close()


def create_key(compose: Compose) -> str:
    """`docker compose exec api samtune keys create`: its last line is the key."""
    out = compose("exec", "-T", "api", "samtune", "keys", "create", "--workspace", "docker-ci").stdout
    key = out.strip().splitlines()[-1].strip()
    assert key and " " not in key, out
    return key


def check_containers(compose: Compose) -> None:
    """The image's user, healthy probes, host networking, no network but Docker's own."""
    info = containers(compose)
    assert set(LONG_RUNNING) | {"migrate", "s3-bucket"} <= set(info), sorted(info)
    for service, c in info.items():
        assert c["Config"]["Image"] == IMAGE, (service, c["Config"]["Image"])
        assert c["Config"]["User"] == "samtune", (service, c["Config"]["User"])
        assert c["HostConfig"]["NetworkMode"] == "host", service
        # No GPU here, so CI's override reserves none; docker-compose.yml's reservations are checked by
        # tests/deploy/test_compose.py.
        assert not c["HostConfig"].get("DeviceRequests"), service
    for service in ("migrate", "s3-bucket"):
        state = info[service]["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 0, (service, state)
    for service in LONG_RUNNING:
        state = info[service]["State"]
        assert state["Status"] == "running", (service, state)
        assert state["Health"]["Status"] == "healthy", (service, state["Health"])
        uid = compose("exec", "-T", service, "id", "-u").stdout.strip()
        assert uid == IMAGE_UID, (service, uid)
    networks = set(docker("network", "ls", "--format", "{{.Name}}").split())
    assert networks == {"host", "none"}, networks


def start_job(http: httpx.Client, version_id: str, epochs: int, **hyperparameters: Any) -> str:
    hyper = dict(FAST_HYPERPARAMETERS) | {"epochs": epochs} | hyperparameters
    body = {
        "version_id": version_id,
        "base_model": EMBEDDED_BASE,
        "mode": "decoder",
        "hyperparameters": hyper,
    }
    r = http.post("/api/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def wait_job(http: httpx.Client, job_id: str, timeout: float, want: tuple[str, ...]) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("failed", "cancelled") and job["status"] not in want:
            raise AssertionError((job["status"], job.get("error")))
        return job if job["status"] in want else None

    return wait_until(reached, timeout=timeout, interval=1, message=f"job {job_id} to be {'/'.join(want)}")


def roboflow_predict(http: httpx.Client, key: str, model: dict[str, Any], image: Path) -> dict[str, Any]:
    body = {"model_id": model["version_name"], "api_key": key, "confidence": 0.01,
            "image": {"type": "base64", "value": base64.b64encode(image.read_bytes()).decode()}}  # fmt: skip
    r = http.post("/infer/instance_segmentation", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert answer["image"] == {"width": 112, "height": 112}, answer["image"]
    assert isinstance(answer["predictions"], list)
    return answer


def test_compose_services_run_the_whole_flow_in_containers(compose: Compose, tmp_path: Path) -> None:
    started = time.monotonic()
    compose.up()
    print(f"up --wait (every probe healthy): {time.monotonic() - started:.0f}s")
    check_containers(compose)
    # The bucket is the compose file's s3-bucket job's work.
    key = create_key(compose)

    flow = drive_flow(compose.url, key, tmp_path / "flow", job_timeout=600)
    check_flow(flow)
    image = sorted((tmp_path / "flow" / "synth" / "test").glob("*.jpg"))[0]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=compose.url, headers=auth, timeout=120) as http:
        roboflow_predict(http, key, flow.model, image)

        # A second job, and the training worker restarted while it runs: it still succeeds (the worker's
        # SIGTERM lets the running job finish within stop_grace_period, or the reaper requeues it).
        # Early stopping off: on the tiny model it ended a 30-epoch job after 9 epochs, 4 s after its first step,
        # before this test could see it running (a clean-clone CI run of 2026-12-04).
        job_id = start_job(http, flow.version["id"], epochs=100, early_stopping_patience=0)
        wait_until(lambda: (http.get(f"/api/v1/jobs/{job_id}").json().get("progress") or {}).get("step", 0) >= 1,
                   timeout=300, interval=1, message="the second job's first step")  # fmt: skip
        assert wait_job(http, job_id, timeout=10, want=("running",))  # in the middle of it
        restarted = compose("restart", "worker", timeout=600)
        assert restarted.returncode == 0
        job = wait_job(http, job_id, timeout=600, want=("succeeded",))
        assert job["model_id"], job
        token = http.post(f"/api/v1/jobs/{job_id}/events-token").json()["url"].split(compose.url, 1)[-1]
        events = read_events(http, token, timeout=60)
        assert events[-1].kind == "status" and events[-1].data["status"] == "succeeded", events[-3:]
        # The worker came back healthy.
        wait_until(lambda: containers(compose)["worker"]["State"].get("Health", {}).get("Status") == "healthy",
                   timeout=300, interval=5, message="the restarted worker to be healthy")  # fmt: skip
        beat_files = set(compose("exec", "-T", "beat", "ls", "-A", "/data").stdout.split())
        assert beat_files, "beat keeps its schedule in the samtune-data volume"

    # `down` keeps the named volumes; a second `up` finds the data (database and bucket outside, the
    # samtune-data volume inside).
    compose("down", "-t", "120")
    volumes = set(docker("volume", "ls", "--format", "{{.Name}}").split())
    assert {f"{PROJECT}_samtune-data", f"{PROJECT}_hf-cache"} <= volumes, volumes
    assert not compose("ps", "-a", "-q").stdout.split()
    compose.up()
    check_containers(compose)
    assert beat_files <= set(compose("exec", "-T", "api", "ls", "-A", "/data").stdout.split())
    with httpx.Client(base_url=compose.url, headers=auth, timeout=120) as http:
        datasets = http.get("/api/v1/datasets").json()
        items = datasets["items"] if isinstance(datasets, dict) else datasets
        assert flow.dataset_id in {d["id"] for d in items}, datasets
        assert http.get(f"/api/v1/models/{job['model_id']}").status_code == 200
        with open(image, "rb") as f:
            p = http.post(f"/api/v1/models/{job['model_id']}/predict",
                          files={"image": (image.name, f, "image/jpeg")}, data={"confidence": "0.01"})  # fmt: skip
        assert p.status_code == 200, p.text
        roboflow_predict(http, key, http.get(f"/api/v1/models/{job['model_id']}").json(), image)
