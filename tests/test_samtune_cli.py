"""The command line on the embedded default (SQLite, local folder, filesystem broker), as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port

SAMTUNE = [sys.executable, "-m", "app.cli"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    env["SAMTUNE_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def test_keys_create_prints_key_last(tmp_path: Path) -> None:
    env = _env(tmp_path)
    subprocess.run([*SAMTUNE, "db", "upgrade"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [*SAMTUNE, "keys", "create", "--workspace", "acme"],
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


def test_serve_keeps_query_keys_out_of_the_log(tmp_path: Path) -> None:
    env = _env(tmp_path)
    boot = subprocess.run([*SAMTUNE, "bootstrap"], env=env, check=True, capture_output=True, text=True)
    key = boot.stdout.strip().splitlines()[-1]
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*SAMTUNE, "serve", "--port", str(port)], env=env, stdout=out, stderr=out)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz")
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/datasets", params={"api_key": key})
        assert r.status_code == 200
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/keys", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "/api/v1/datasets?api_key=[redacted]" in text
    assert key not in text


@pytest.mark.timeout(240)
def test_up_supervises_and_restarts_a_dead_worker(tmp_path: Path) -> None:
    env = _env(tmp_path)
    port = free_port()
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*SAMTUNE, "up", "--port", str(port)], env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90)
        parent = psutil.Process(proc.pid)

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

        deadline = time.monotonic() + 60
        while not worker_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        (old,) = worker_pids()
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pids = worker_pids()
            if pids and pids != [old]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the worker was not restarted:\n" + log.read_text())
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert "restarting" in log.read_text()
        children = parent.children(recursive=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    # Stopping `up` stops the whole group: no API, worker or beat process outlives it.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
