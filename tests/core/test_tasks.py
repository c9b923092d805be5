"""The task names, queues and Celery factory have one home (app/core/tasks.py), and nothing is built at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from celery.app.utils import find_app

from app.core import tasks
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]

# What deployments' brokers may hold messages for: renaming one would strand them.
WIRE_NAMES = {
    "samtune.build_version": "cpu",
    "samtune.train_job": "gpu",
    "samtune.predict_version": "gpu",
    "samtune.send_webhook": "cpu",
    "samtune.reap_stale_builds": "cpu",
    "samtune.reap_stale_jobs": "cpu",
    "samtune.purge_stale_uploads": "cpu",
    "samtune.reap_stale_predictions": "cpu",
}


def test_importing_the_api_builds_no_celery_app_and_reads_no_settings() -> None:
    code = (
        "import sys\n"
        "import app.settings\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('Settings() built at import')\n"
        "app.settings.Settings.__init__ = refuse\n"
        "import app.main, worker.celery_app\n"
        "assert worker.celery_app._build.cache_info().currsize == 0\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr[-3000:]


def test_celerys_command_line_finds_the_worker_app(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SAMTUNE_DATA_DIR", str(tmp_path))
    import worker.celery_app

    worker.celery_app._build.cache_clear()
    try:
        found = find_app("worker.celery_app")
        assert found is worker.celery_app._build()
        assert found.conf.samtune_settings.data_dir == tmp_path
    finally:
        worker.celery_app._build.cache_clear()


def test_every_task_keeps_its_wire_name_and_has_one_queue(tmp_path: Path) -> None:
    celery = tasks.make_celery(Settings(data_dir=tmp_path))
    celery.loader.import_default_modules()
    registered = {name for name in celery.tasks if name.startswith("samtune.")}
    assert registered == set(tasks.ROUTES), "every task a worker runs is routed, and nothing else"
    assert {name: tasks.ROUTES[name] for name in WIRE_NAMES} == WIRE_NAMES
    assert {e["task"] for e in celery.conf.beat_schedule.values()} <= registered
