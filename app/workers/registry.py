"""Which training workers are alive and how many devices each has: a row per worker process (app/workers/
tables.py) that its heartbeat refreshes. The database, not Redis, holds it: the embedded installation has no
Redis, and the API already reads the database.

A worker registers when Celery says it is ready and deletes its row when it shuts down; a worker killed without
shutting down stops refreshing, and its row stops counting after `LIVE_SECONDS`."""

from __future__ import annotations

import logging
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import transaction, utcnow
from app.core.errors import Unprocessable
from app.settings import Settings
from app.workers.tables import Worker

logger = logging.getLogger("samtune.worker.registry")

HEARTBEAT_SECONDS = 30.0
# Three missed heartbeats: a worker busy with a step still refreshes (the heartbeat is its own thread).
LIVE_SECONDS = 3 * HEARTBEAT_SECONDS


def worker_device(settings: Settings) -> str:
    if settings.worker_device != "auto":
        return settings.worker_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_count(settings: Settings, device_type: str) -> int:
    """The devices a job may use on this worker: SAMTUNE_WORKER_DEVICES when set (on a CPU worker, that many
    gloo processes), else every CUDA device this process sees (CUDA_VISIBLE_DEVICES narrows it), else 1."""
    if settings.worker_devices is not None:
        return settings.worker_devices
    if device_type == "cuda":
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def beat(
    factory: sessionmaker[Session], name: str, device_type: str, devices: int, *, hostname: str | None = None,
    now: datetime | None = None,
) -> None:  # fmt: skip
    """Register the worker, or refresh its row (what it has may have changed across a restart)."""
    now = now or utcnow()
    with transaction(factory) as session:
        row = session.get(Worker, name)
        if row is None:
            row = Worker(name=name, started_at=now)
            session.add(row)
        row.hostname = hostname or socket.gethostname()
        row.device_type, row.devices, row.seen_at = device_type, devices, now


def forget(factory: sessionmaker[Session], name: str) -> None:
    with transaction(factory) as session:
        session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session, now: datetime | None = None) -> list[Worker]:
    """Live workers, the most devices first."""
    since = (now or utcnow()) - timedelta(seconds=LIVE_SECONDS)
    query = select(Worker).where(Worker.seen_at >= since).order_by(Worker.devices.desc(), Worker.name)
    return list(session.scalars(query))


def check_devices(session: Session, gpus: int) -> None:
    """422 when a job asks for more devices than any live worker has, naming what exists. One device is never
    refused: a job may be queued before any worker starts."""
    if gpus <= 1:
        return
    workers = live_workers(session)
    if not workers:
        raise Unprocessable(
            f"asked for {gpus} GPUs; no training worker has registered in the last {LIVE_SECONDS:.0f} s, so "
            "none is known to have them (start `samtune worker` on a machine with that many devices)",
            source="gpus",
        )
    largest = workers[0]
    if largest.devices < gpus:
        unit = "GPU" if largest.device_type == "cuda" else "device"
        raise Unprocessable(
            f"asked for {gpus} GPUs; the largest live worker has {largest.devices} {unit}"
            f"{'s' if largest.devices != 1 else ''} (worker {largest.hostname}, {largest.name})",
            source="gpus",
        )


class Heartbeat:
    """A thread that keeps this worker's row fresh until `stop()`, which deletes the row."""

    def __init__(self, factory: sessionmaker[Session], name: str, device_type: str, devices: int) -> None:
        self.factory, self.name, self.device_type, self.devices = factory, name, device_type, devices
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"worker-heartbeat-{name}", daemon=True)

    def start(self) -> Heartbeat:
        beat(self.factory, self.name, self.device_type, self.devices)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                beat(self.factory, self.name, self.device_type, self.devices)
            except Exception:  # the database may be restarting: the next beat tries again
                logger.warning("worker heartbeat failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            forget(self.factory, self.name)
        except Exception:
            logger.warning("could not deregister worker %s", self.name, exc_info=True)


def connect_to_celery(settings: Settings) -> None:
    """Register the worker process `samtune worker` starts: from Celery's `worker_ready` (its node name known)
    until `worker_shutdown`. The Celery parent process does this, never a pool child, and it asks CUDA only for
    the device count (NVML; no CUDA context is made)."""
    from celery.signals import worker_ready, worker_shutdown

    from app.core.db import make_engine, make_sessionmaker

    state: dict[str, Any] = {}

    def ready(sender: object = None, **_: object) -> None:
        device_type = worker_device(settings)
        devices = device_count(settings, device_type)
        name = str(getattr(sender, "hostname", None) or f"celery@{socket.gethostname()}")
        engine = make_engine(settings.database_url)
        state["engine"] = engine
        state["beat"] = Heartbeat(make_sessionmaker(engine), name, device_type, devices).start()
        logger.info("worker %s registered: %d %s device(s)", name, devices, device_type)

    def shutdown(**_: object) -> None:
        if (heartbeat := state.pop("beat", None)) is not None:
            heartbeat.stop()
        if (engine := state.pop("engine", None)) is not None:
            engine.dispose()

    # Connected once per process: a second call replaces the first (its settings), never adds to it.
    for signal, receiver, uid in ((worker_ready, ready, "samtune.worker_registry.ready"),
                                  (worker_shutdown, shutdown, "samtune.worker_registry.shutdown")):  # fmt: skip
        signal.disconnect(dispatch_uid=uid)
        signal.connect(receiver, weak=False, dispatch_uid=uid)
