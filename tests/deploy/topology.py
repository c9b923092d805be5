"""The production topology of docker-compose.yml without Docker, and the flow a user drives through it.

`ProductionTopology` runs the compose file's own commands (read from docker-compose.yml, so a change there
changes what runs here) as separate processes on this machine: the migration, then the API, the inference
service, the workers and beat, with the environment compose gives them (each service's `environment` block
interpolated with .env.example, and the image's ENV with its paths moved to this checkout), except that the
service host names (`postgres`, `redis`, `s3`) point at the real PostgreSQL, Redis and S3 endpoint (moto's
server) of this machine, in a fresh database, fresh Redis databases and a fresh bucket, and `inference`
(named in the API's SAMTUNE_INFERENCE_URLS) at the inference process. The API and the inference service
listen on free ports of 127.0.0.1 instead of 0.0.0.0:8000 and 0.0.0.0:8001.

`drive_flow` is what a user does over HTTP: a dataset upload, a version, a job on the bundled tiny base, its
event stream to the end, the model, a prediction.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deploy.files import (
    REPO,
    command,
    dockerfile_stages,
    env_example,
    samtune_services,
    service_environment,
)
from tests.support.jobs import FAST_HYPERPARAMETERS, SMALL_VERSION
from tests.support.ports import free_port
from tests.support.processes import Proc, stop_together
from tests.support.servers import answers
from tests.support.sse import SseEvent, parse_block
from tests.support.waiting import wait_until
from trainer.base_model import EMBEDDED_BASE
from trainer.synth import HELD_OUT_DOMAINS, write_dataset

BIN = Path(sys.executable).parent
# The executables the image puts on PATH, here from this virtual environment.
IMAGE_EXECUTABLES = ("samtune", "alembic", "celery", "python")
# Redis databases of this module (the server is shared with the other tests): the broker and the live feed.
BROKER_DB, FEED_DB = 8, 9
# The hosts of the compose network, as they appear in samtune's environment.
COMPOSE_HOSTS = ("@postgres:", "@redis:", "//s3:", "//inference:")
# The compose services that listen on a port (their command's --host/--port): here on a free port of 127.0.0.1.
LISTENING = ("api", "inference")


def local_argv(argv: list[str]) -> list[str]:
    """A command of the image, with its executable taken from this virtual environment."""
    assert argv[0] in IMAGE_EXECUTABLES, argv
    exe = sys.executable if argv[0] == "python" else str(BIN / argv[0])
    return [exe, *argv[1:]]


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with the value of `option` replaced (the option must be there)."""
    assert option in argv, f"{argv} has no {option}"
    out = list(argv)
    out[out.index(option) + 1] = value
    return out


def compose_port(service: str) -> int:
    """The port a listening service's compose command gives (its `--port`)."""
    argv = command(service)
    return int(argv[argv.index("--port") + 1])


def base_env() -> dict[str, str]:
    """This process's environment without any SAMTUNE_ variable, made for a child's quick, quiet run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    # One thread per process: on a small shared machine, OpenMP threads that spin waiting for each other
    # make a step many times slower.
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@dataclass
class LocalServices:
    """Where this machine's PostgreSQL, Redis and S3 endpoint are, for one topology."""

    database_url: str
    redis_host: str
    redis_port: int
    s3_endpoint: str
    bucket: str


class ProductionTopology:
    """The compose services as processes. Use as a context manager: every process is stopped at the end."""

    def __init__(self, root: Path, local: LocalServices) -> None:
        self.root = root
        self.local = local
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "data"  # the samtune-data volume, shared by every samtune service
        self.ports = {service: free_port() for service in LISTENING}
        self.port = self.ports["api"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, Proc] = {}

    def local_url(self, url: str) -> str:
        """A compose URL of a service that listens (`http://inference:8001`) moved to where this topology
        runs it; the port must be the one the service's command listens on."""
        m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
        assert m, f"not a service URL: {url!r}"
        service, port = m.group(1), int(m.group(2))
        assert service in self.ports, f"{url}: {service} is not a service this test runs"
        assert compose_port(service) == port, f"{url}: {service} does not listen on {port}"
        return f"http://127.0.0.1:{self.ports[service]}"

    # -- the environment of a service ------------------------------------------------------------------
    def env(self, service: str) -> dict[str, str]:
        example = env_example().values
        compose = service_environment(service, example)
        redis = f"{self.local.redis_host}:{self.local.redis_port}"
        local = {
            "SAMTUNE_DATABASE_URL": self.local.database_url,
            "SAMTUNE_BROKER_URL": _with_db(compose["SAMTUNE_BROKER_URL"], redis, BROKER_DB),
            "SAMTUNE_REDIS_URL": _with_db(compose["SAMTUNE_REDIS_URL"], redis, FEED_DB),
            "SAMTUNE_STORAGE_URL": "s3://" + self.local.bucket,
            "SAMTUNE_S3_ENDPOINT_URL": self.local.s3_endpoint,
        }
        if "SAMTUNE_INFERENCE_URLS" in compose:
            urls = compose["SAMTUNE_INFERENCE_URLS"].split(",")
            local["SAMTUNE_INFERENCE_URLS"] = ",".join(self.local_url(u.strip()) for u in urls)
        # A setting that names a compose host and is not redirected here would reach nothing: the test says so.
        for key, value in compose.items():
            if any(host in value for host in COMPOSE_HOSTS):
                assert key in local, f"{service}: {key}={value} names a compose host this test does not map"
        assert compose["SAMTUNE_STORAGE_URL"].startswith("s3://")
        env = base_env()
        env.update(image_env(self.data_dir))  # the Dockerfile's ENV
        env.update({k: v for k, v in example.items() if k.startswith("SAMTUNE_")})  # env_file: .env
        env.update(compose | local)  # environment: (wins over env_file, as in compose)
        env.update(
            # The compose worker has a GPU and .env.example says so; this machine's workers have none.
            SAMTUNE_WORKER_DEVICE="cpu",
            HOSTNAME=socket.gethostname(),  # what a container's shell has, for the workers' healthcheck
        )
        return env

    # -- processes -------------------------------------------------------------------------------------
    def run_once(self, service: str) -> subprocess.CompletedProcess[str]:
        """A one-shot service (the migration), to completion."""
        out = subprocess.run(local_argv(command(service)), cwd=REPO, env=self.env(service),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, f"{service} failed:\n{out.stdout}\n{out.stderr}"
        return out

    def start(self, service: str) -> Proc:
        argv = local_argv(command(service))
        if service in self.ports:
            argv = with_option(with_option(argv, "--host", "127.0.0.1"), "--port", str(self.ports[service]))
        proc = Proc(service, argv, self.env(service), self.logs)
        self.procs[service] = proc
        return proc

    def samtune(self, *args: str, service: str = "api") -> str:
        """`docker compose exec <service> samtune ...`: the command's output (its last line is its answer)."""
        out = subprocess.run(local_argv(["samtune", *args]), cwd=REPO, env=self.env(service),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, f"samtune {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def healthcheck(self, service: str) -> subprocess.CompletedProcess[str]:
        """The compose healthcheck of a service, run the way Docker runs it inside the container."""
        test = samtune_services()[service]["healthcheck"]["test"]
        env = self.env(service)
        if test[0] == "CMD":
            argv = test[1:]
            if service in self.ports:
                there, here = f"127.0.0.1:{compose_port(service)}", f"127.0.0.1:{self.ports[service]}"
                argv = [a.replace(there, here) for a in argv]
            return subprocess.run(
                local_argv(argv), env=env, cwd=REPO, capture_output=True, text=True, timeout=60
            )
        assert test[0] == "CMD-SHELL", test
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        script = test[1].replace("$$", "$")
        return subprocess.run(["/bin/sh", "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    def wait_healthy(self, timeout: float = 120) -> None:
        """Every started service that listens answers its /healthz."""
        for service in self.ports:
            if service not in self.procs:
                continue
            proc, url = self.procs[service], f"http://127.0.0.1:{self.ports[service]}/healthz"

            def healthy(proc: Proc = proc, url: str = url) -> bool:
                assert proc.alive(), proc.log()[-3000:]
                return answers(url)

            wait_until(healthy, timeout=timeout, interval=0.25, message=f"{service} to answer /healthz")

    def stop(self) -> None:
        stop_together(*self.procs.values())

    @contextlib.contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            for proc in self.procs.values():
                print(f"===== {proc.name} ({proc.log_path}) =====\n{proc.log()[-4000:]}")
            raise


def image_env(data_dir: Path) -> dict[str, str]:
    """The SAMTUNE_ variables the image's final stage sets, with its paths moved to this machine: the code
    directory (the final WORKDIR) to this checkout, the /data volume to `data_dir`."""
    final = dockerfile_stages()[-1]
    code_dir = final.workdir_at(len(final.instructions))
    out = {}
    for name, value in final.env().items():
        if name.startswith("SAMTUNE_"):
            if value == "/data" or value.startswith("/data/"):
                value = str(data_dir) + value.removeprefix("/data")
            elif value.startswith(code_dir + "/"):
                value = str(REPO) + value.removeprefix(code_dir)
            mapped = Path(value)
            assert mapped.is_relative_to(REPO) or mapped.is_relative_to(data_dir), (
                f"the image sets {name}={value}, which this test cannot map"
            )
            out[name] = value
    assert "SAMTUNE_DATA_DIR" in out
    return out


def _with_db(url: str, host_port: str, db: int) -> str:
    """A compose Redis URL (`redis://:password@redis:6379/0`) moved to this machine's Redis and DB `db`. The
    local Redis has no password; one that is sent anyway is refused, so it is dropped."""
    assert url.startswith("redis://") and "@redis:6379/" in url, url
    return f"redis://{host_port}/{db}"


# --- the user's flow ----------------------------------------------------------------------------------------


@dataclass
class FlowResult:
    dataset_id: str
    version: dict[str, Any]
    job: dict[str, Any]
    events: list[SseEvent]
    model: dict[str, Any]
    prediction: dict[str, Any]


def dataset_zip(root: Path) -> Path:
    """A small synthetic instance-segmentation dataset of concepts the bundled base never saw, zipped."""
    data = write_dataset(root / "synth", list(HELD_OUT_DOMAINS["new-colours"]),
                         {"train": 2, "valid": 1, "test": 1}, size=112, seed=1, max_objects=2)  # fmt: skip
    return Path(shutil.make_archive(str(root / "synth"), "zip", data))


def read_events(http: httpx.Client, path: str, timeout: float) -> list[SseEvent]:
    """An event stream read as it is written, until the server ends it."""
    events, block = [], []
    deadline = time.monotonic() + timeout
    with http.stream("GET", path, timeout=httpx.Timeout(10, read=timeout)) as r:
        assert r.status_code == 200, r.read().decode()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            assert time.monotonic() < deadline, f"the stream did not end within {timeout}s: {events[-3:]}"
            if line:
                block.append(line)
                continue
            event = parse_block("\n".join(block))
            block = []
            if event is not None:
                events.append(event)
    return events


def wait_version_ready(http: httpx.Client, version_id: str, timeout: float) -> dict[str, Any]:
    """The version once a worker has built it; a failed build fails the caller at once."""

    def built() -> dict[str, Any] | None:
        v: dict[str, Any] = http.get(f"/api/v1/versions/{version_id}").json()
        assert v["status"] != "failed", v
        return v if v["status"] == "ready" else None

    return wait_until(built, timeout=timeout, interval=0.5, message="the version to be built by a worker")


def drive_flow(url: str, key: str, root: Path, job_timeout: float = 240) -> FlowResult:
    """Dataset, upload, version, job, its events to the end, model, predict: all over HTTP with `key`."""
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
        r = http.post("/api/v1/datasets", json={"name": f"deploy-{uuid.uuid4().hex[:6]}"})
        assert r.status_code == 201, r.text
        dataset_id = r.json()["id"]
        archive = dataset_zip(root)
        with open(archive, "rb") as f:
            up = http.post(f"/api/v1/datasets/{dataset_id}/uploads", files={"file": ("synth.zip", f)})
        assert up.status_code == 201, up.text
        assert up.json()["added"]["train"], up.json()

        r = http.post(f"/api/v1/datasets/{dataset_id}/versions", json=SMALL_VERSION)
        assert r.status_code == 202, r.text
        version_id = r.json()["id"]

        version = wait_version_ready(http, version_id, timeout=120)

        body = {"version_id": version_id, "base_model": EMBEDDED_BASE, "mode": "decoder",
                "hyperparameters": dict(FAST_HYPERPARAMETERS)}  # fmt: skip
        r = http.post("/api/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        # The event stream through a signed token, as a browser's EventSource reads it: the token is made by
        # one API process and may be checked by the other (they share SAMTUNE_SECRET_KEY).
        token = http.post(f"/api/v1/jobs/{job_id}/events-token")
        assert token.status_code == 200, token.text
        events_path = token.json()["url"].split(url, 1)[-1]
        with httpx.Client(base_url=url, timeout=60) as anonymous:
            events = read_events(anonymous, events_path, timeout=job_timeout)
        job = http.get(f"/api/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", (
            job["error"],
            [(e["kind"], e["message"]) for e in job["events"]],
        )

        model_id = job["model_id"]
        model = http.get(f"/api/v1/models/{model_id}")
        assert model.status_code == 200, model.text
        image = sorted((root / "synth" / "test").glob("*.jpg"))[0]
        with open(image, "rb") as f:
            p = http.post(f"/api/v1/models/{model_id}/predict", files={"image": (image.name, f, "image/jpeg")},
                          data={"confidence": "0.01"})  # fmt: skip
        assert p.status_code == 200, p.text
    return FlowResult(dataset_id, version, job, events, model.json(), p.json())


def check_flow(result: FlowResult) -> None:
    """What the user saw is a whole job: a stream that ends with success, a model with metrics, an answer."""
    statuses = [e.data["status"] for e in result.events if e.kind == "status"]
    assert statuses[-1] == "succeeded" and "running" in statuses, statuses
    assert result.events[-1].kind == "status", result.events[-1]
    assert any(e.kind == "metrics" for e in result.events), [e.kind for e in result.events]
    # Every event has an id to resume from, unique, except the database feed's progress snapshots.
    ids = [e.id for e in result.events if e.id is not None]
    assert len(set(ids)) == len(ids), "event ids repeat"
    assert {e.kind for e in result.events if e.id is None} <= {"progress"}, result.events
    assert result.job["progress"]["step"] >= 1 and result.job["test"]["fine_tuned"], result.job
    assert result.model["id"] == result.job["model_id"]
    prediction = result.prediction
    assert prediction["image"] == {"width": 112, "height": 112}, prediction["image"]
    assert isinstance(prediction["predictions"], list)
    for p in prediction["predictions"]:
        assert p["class"] in {c.name for c in HELD_OUT_DOMAINS["new-colours"]} and 0 <= p["confidence"] <= 1
