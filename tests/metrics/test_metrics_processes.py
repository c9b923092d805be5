"""Several processes, one scrape (prometheus-client's multiprocess mode, app/metrics/multiprocess.py): two uvicorn
workers of `samtune serve` and a Celery worker of `samtune worker` write to one directory and the API's
`/metrics` adds them up; a process that dies stops counting in the live gauges, its counters stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core import migrate
from app.core.tasks import CPU_QUEUE, PURGE_STALE_UPLOADS, make_celery
from app.metrics.multiprocess import ENV
from app.metrics.router import exposition
from app.settings import Settings
from tests.support.ports import free_port
from tests.support.processes import Proc
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def _value(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_") and k != ENV}
    env.update(
        SAMTUNE_DATA_DIR=str(data), SAMTUNE_LOG_LEVEL="info", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"
    )
    return env


def _api_processes(metrics_dir: Path) -> set[str]:
    """The processes that wrote request counts: one file each, named by the process."""
    return {p.stem.split("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}


def test_two_api_workers_and_a_celery_worker_in_one_scrape(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    migrate.upgrade(settings.database_url)
    env = _env(data)
    port = free_port()
    api = ServerProcess([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
                        port=port, log_path=tmp_path / "api.log", env=env, name="samtune serve")  # fmt: skip
    worker = Proc(
        "worker", [sys.executable, "-m", "app.cli", "worker", "-Q", "cpu", "-c", "1"], env, tmp_path
    )
    try:
        with api, httpx.Client(base_url=api.url, timeout=30) as http:
            url = "/api/v1/versions/defaults"  # public: no key needed
            sent = 0

            def burst() -> None:
                nonlocal sent
                # Fresh connections, several at once: the two workers accept from one socket.
                with ThreadPoolExecutor(8) as pool:
                    codes = list(
                        pool.map(lambda _: httpx.get(api.url + url, timeout=30).status_code, range(16))
                    )
                assert codes == [200] * 16
                sent += 16

            # Until both workers have answered some (they share the socket; which one accepts is the kernel's).
            def both_answered() -> bool:
                burst()
                return len(_api_processes(settings.metrics_path)) >= 2

            wait_until(both_answered, timeout=120, interval=0.1, message="both API workers to answer")
            # Whichever worker answers the scrape, it counts every request of both.
            for _ in range(4):
                text = http.get("/metrics").text
                assert _value(text, "samtune_http_requests_total", route=url, status="200") == sent

            # The Celery worker's pool child runs a task and records it; the API's scrape shows it.
            worker.wait_log(r"ready\.", timeout=180)
            make_celery(settings).send_task(PURGE_STALE_UPLOADS, queue=CPU_QUEUE)

            def task_counted() -> bool:
                text = http.get("/metrics").text
                return _value(text, "samtune_tasks_total", task=PURGE_STALE_UPLOADS, outcome="success") == 1

            wait_until(task_counted, timeout=120, interval=0.5, message="the worker's task in /metrics")
            text = http.get("/metrics").text
            assert _value(text, "samtune_task_duration_seconds_count", task=PURGE_STALE_UPLOADS) == 1
            # The pool child ends after its one task (--max-tasks-per-child=1) and folds its counts into the
            # archive: the total stays 1.
            archive = settings.metrics_path / "counter_archive.db"
            wait_until(archive.exists, timeout=60, interval=0.25, message="the ended pool child's archive")
            text = http.get("/metrics").text
            assert _value(text, "samtune_tasks_total", task=PURGE_STALE_UPLOADS, outcome="success") == 1
    finally:
        worker.stop()


_WRITER = """
import sys, time
from app.metrics.multiprocess import mark_dead
from app.metrics.series import MODEL_CACHE_BYTES, TASKS
TASKS.labels("samtune.probe", "success").inc()
MODEL_CACHE_BYTES.set(int(sys.argv[1]))
if sys.argv[2] == "exit":
    mark_dead()  # as a Celery pool child's worker_process_shutdown and an API worker's lifespan end do
    print("written", flush=True)
    sys.exit(0)
print("written", flush=True)
time.sleep(600)
"""


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv(ENV, str(path))  # exposition() reads the directory, as the API's does
    return path


def _writer(metrics_dir: Path, cache_bytes: int, then: str = "sleep") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")} | {ENV: str(metrics_dir)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(cache_bytes), then], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    return proc


def test_two_processes_write_one_scrape_sees_both_and_a_dead_ones_gauge_goes(metrics_dir: Path) -> None:
    first, second = _writer(metrics_dir, 100), _writer(metrics_dir, 23)
    try:
        text = exposition([]).decode()
        assert _value(text, "samtune_tasks_total", task="samtune.probe") == 2
        assert _value(text, "samtune_model_cache_bytes") == 123
        # SIGKILL: no clean-up of its own. The next scrape finds its PID gone and drops its live gauge; what it
        # counted stays counted.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        text = exposition([]).decode()
        assert _value(text, "samtune_model_cache_bytes") == 23
        assert _value(text, "samtune_tasks_total", task="samtune.probe") == 2
        # A process that ends cleanly folds its counts into the archive files and removes its own: the totals
        # stay, the directory does not grow by a file per process.
        for _ in range(3):
            _writer(metrics_dir, 1000, then="exit").wait(timeout=30)
        text = exposition([]).decode()
        assert _value(text, "samtune_tasks_total", task="samtune.probe") == 5
        assert _value(text, "samtune_model_cache_bytes") == 23
        counters = sorted(p.name for p in metrics_dir.glob("counter_*.db"))
        assert len(counters) == 3 and "counter_archive.db" in counters, counters  # the archive, first, second
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait(timeout=30)
