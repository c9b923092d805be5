"""The command line on the embedded default (SQLite, local folder, filesystem broker), as a user runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.ports import free_port
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until

SAMTUNE = [sys.executable, "-m", "app.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    env["SAMTUNE_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_keys_create_prints_key_last(tmp_path: Path) -> None:
    # A fresh data directory, never migrated: the first thing a newcomer may run.
    env = _env(tmp_path / "fresh")
    for workspace in ("acme", "acme"):  # the second run finds the schema current and the workspace there
        out = subprocess.run(
            [*SAMTUNE, "keys", "create", "--workspace", workspace],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = out.stdout.strip().splitlines()[-1]
        assert key.startswith("st_") and len(key) == 51


def test_bootstrap_creates_first_key_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = subprocess.run([*SAMTUNE, "bootstrap"], env=env, check=True, capture_output=True, text=True)
    assert first.stdout.strip().splitlines()[-1].startswith("st_")
    second = subprocess.run([*SAMTUNE, "bootstrap"], env=env, check=True, capture_output=True, text=True)
    assert "already exist" in second.stdout
    assert (tmp_path / "samtune.db").exists()


@contextmanager
def _serving(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    """A bootstrapped `samtune serve` on a free port: (port, its first key, its log file); stopped by SIGINT."""
    env = _env(tmp_path)
    boot = subprocess.run([*SAMTUNE, "bootstrap"], env=env, check=True, capture_output=True, text=True)
    key = boot.stdout.strip().splitlines()[-1]
    port = free_port()
    log = tmp_path / "serve.log"
    server = ServerProcess(
        [*SAMTUNE, "serve", "--port", str(port)],
        port=port,
        env=env,
        log_path=log,
        cwd=Path.cwd(),
        stop_signal=signal.SIGINT,
        name="samtune serve",
    )
    server.start(timeout=60)
    try:
        yield port, key, log
    finally:
        server.stop(grace=30, strict=True)


def test_serve_keeps_query_keys_out_of_the_log(tmp_path: Path) -> None:
    with _serving(tmp_path) as (port, key, log):
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/datasets", params={"api_key": key})
        assert r.status_code == 200
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/keys", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    text = log.read_text()
    assert "/api/v1/datasets?api_key=[redacted]" in text
    assert key not in text


@pytest.mark.timeout(240)
def test_up_supervises_and_restarts_a_dead_worker(tmp_path: Path) -> None:
    env = _env(tmp_path)
    port = free_port()
    log = tmp_path / "up.log"
    server = ServerProcess(
        [*SAMTUNE, "up", "--port", str(port)],
        port=port,
        env=env,
        log_path=log,
        cwd=Path.cwd(),
        name="samtune up",
    )
    server.start(timeout=90)
    try:
        parent = psutil.Process(server.pid)

        def worker_pids() -> list[int]:
            pids = []
            for child in parent.children(recursive=False):
                try:
                    cmd = child.cmdline()
                except psutil.Error:  # a killed child not yet reaped by the supervisor
                    continue
                if "worker" in cmd and "app.cli" in cmd:
                    pids.append(child.pid)
            return pids

        wait_until(worker_pids, timeout=60, message="the supervisor's worker child")
        (old,) = worker_pids()
        os.kill(old, signal.SIGKILL)
        try:
            wait_until(lambda: (pids := worker_pids()) and pids != [old], timeout=60, message="a new worker")
        except AssertionError:
            raise AssertionError("the worker was not restarted:\n" + log.read_text()) from None
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert "restarting" in log.read_text()
        children = parent.children(recursive=True)
    finally:
        server.stop(grace=60, strict=True)
    # Stopping `up` stops the whole group: no API, worker or beat process outlives it.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    # The API child logs in samtune's format (the worker's and beat's may not have logged yet: the worker is
    # killed early; test_worker_on_the_embedded_default_keeps_its_files_in_the_data_dir checks `samtune worker`).
    assert " INFO uvicorn.error [" in log.read_text()


def test_version() -> None:
    from importlib.metadata import version

    for cmd in ([*SAMTUNE, "--version"], [str(Path(sys.executable).parent / "samtune"), "--version"]):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == f"samtune {version('samtune')}"


# The real command line, with Celery's entry point replaced by one that prints the arguments it is given.
_CELERY_ARGS = """
import json, sys
import celery.bin.celery as entry
entry.celery.main = lambda args, **_: print(json.dumps(args))
from app.cli import main
main(sys.argv[1:], prog_name="samtune")
"""


def _celery_args(tmp_path: Path, *argv: str) -> list[str]:
    import json

    done = subprocess.run(
        [sys.executable, "-c", _CELERY_ARGS, *argv], env=_env(tmp_path), cwd=Path(__file__).resolve().parents[1],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_worker_and_beat_pass_further_options_to_celery(tmp_path: Path) -> None:
    # docs/operations.md's multi-GPU commands.
    args = _celery_args(tmp_path, "worker", "-Q", "gpu", "-c", "1", "-n", "gpu0@%h")
    assert args[:3] == ["-A", "worker.celery_app", "worker"]
    assert args[args.index("-Q") + 1] == "gpu" and args[args.index("-c") + 1] == "1"
    assert args[-2:] == ["-n", "gpu0@%h"]
    assert "--prefetch-multiplier=1" in args and "--max-tasks-per-child=1" in args
    # Options and arguments in any order; the user's -l comes after samtune's, so it wins.
    args = _celery_args(tmp_path, "worker", "--autoscale=4,1", "-c", "2", "-l", "debug", "--without-gossip")
    assert args[args.index("-c") + 1] == "2"
    assert args[-4:] == ["--autoscale=4,1", "-l", "debug", "--without-gossip"]
    assert _celery_args(tmp_path, "worker")[-2:] == ["-l", "INFO"]
    args = _celery_args(tmp_path, "beat", "--max-interval", "5")
    assert args == ["-A", "worker.celery_app", "beat", "-l", "INFO", "--max-interval", "5"]


def test_worker_on_the_embedded_default_keeps_its_files_in_the_data_dir(tmp_path: Path) -> None:
    """kombu's filesystem transport keeps its exchange bindings in a `control/` folder of the current directory
    unless told otherwise: a worker wrote there, and a process started elsewhere could not reach it. The worker
    answers a broadcast (ping) from another process, under the name passed through with -n, writes nothing
    where it was started, and logs in samtune's format."""
    from app.core.tasks import make_celery
    from app.settings import Settings

    data, cwd = tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "worker.log"
    cmd = [str(Path(sys.executable).parent / "samtune"), "worker", "-Q", "cpu", "-c", "1", "-n", "probe@%h"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=_env(data), cwd=cwd, stdout=out, stderr=out)
    settings = Settings(data_dir=data)
    celery = make_celery(settings)
    try:
        deadline = time.monotonic() + 90
        replies: list[dict[str, object]] = []
        while not replies and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            replies = celery.control.ping(timeout=1.0)
        assert replies and list(replies[0])[0].startswith("probe@"), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert list(cwd.iterdir()) == []
    control = settings.broker_control_dir
    assert control.parent == data and (control / "celery.pidbox.exchange").exists()
    text = log.read_text()
    assert " INFO celery.apps.worker [" in text and " ready." in text, text


def test_beat_answers_its_liveness_probe_and_a_hung_beat_does_not(tmp_path: Path) -> None:
    """docker-compose.yml's beat probe (`celery inspect ping -d celerybeat@HOST`), on the embedded default's
    broker: beat answers while it runs, and a beat that no longer runs (stopped with SIGSTOP, as a hang looks
    from outside) answers nothing, so the probe fails and Docker restarts it."""
    from app.core.tasks import make_celery
    from app.settings import Settings

    data = tmp_path / "data"
    log = tmp_path / "beat.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "samtune"), "beat"], env=_env(data),
                                cwd=tmp_path, stdout=out, stderr=out)  # fmt: skip
    celery = make_celery(Settings(data_dir=data))
    node = f"celerybeat@{socket.gethostname()}"

    def ping() -> list[dict[str, object]]:
        return celery.control.ping(destination=[node], timeout=2.0)

    try:
        deadline = time.monotonic() + 90
        replies: list[dict[str, object]] = []
        while not replies and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            replies = ping()
        assert replies == [{node: {"ok": "pong"}}], log.read_text()
        proc.send_signal(signal.SIGSTOP)
        try:
            assert ping() == []
        finally:
            proc.send_signal(signal.SIGCONT)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_serve_redacts_percent_encoded_key_names(tmp_path: Path) -> None:
    """Starlette decodes a parameter's name before the key is read: `?api%5Fkey=` signs in like `?api_key=`,
    and must be redacted like it, in `samtune serve`'s own log configuration."""
    with _serving(tmp_path) as (port, key, log):
        base = f"http://127.0.0.1:{port}/api/v1/datasets"
        for name in ("api%5Fkey", "%61pi_key", "API%5fKEY", "api_key"):
            assert httpx.get(f"{base}?limit=5&{name}={key}").status_code in (200, 401), name
        assert httpx.get(f"{base}?api%5Fkey={key}").status_code == 200  # it does sign in
        assert httpx.get(f"{base}?to%6Ben={key}").status_code == 401
    text = log.read_text()
    assert key not in text and key[len("st_") + 8 :] not in text
    assert "/api/v1/datasets?api%5Fkey=[redacted] HTTP/1.1" in text
    assert "/api/v1/datasets?limit=5&%61pi_key=[redacted] HTTP/1.1" in text
    assert "/api/v1/datasets?to%6Ben=[redacted] HTTP/1.1" in text
    # uvicorn's lines in samtune's format: the configuration reached the API process.
    assert " INFO uvicorn.error [" in text and "Application startup complete." in text, text
