"""Series that are facts of the database or the broker, read when `/metrics` is scraped rather than pushed by
the workers: jobs by status, the running jobs' speed and ETA (which their heartbeats already write to the
job's `progress`), and the messages waiting in each queue. Any API process answers them alike, and a worker on
another machine (which no scrape reaches) is counted all the same."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, get_args

from kombu import Connection
from kombu.exceptions import ChannelError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from app.core.tasks import CPU_QUEUE, GPU_QUEUE, make_celery
from app.jobs.schemas import JobStatus
from app.jobs.tables import TrainingJob
from app.settings import Settings

logger = logging.getLogger("samtune.metrics")

QUEUES = (CPU_QUEUE, GPU_QUEUE)
BROKER_TIMEOUT_S = 3.0  # a scrape should answer within Prometheus's default 10 s timeout, broker down or not


class ScrapeTimeCollector(Collector):
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        # The same transport options the API sends with (the filesystem broker's folders), built once.
        self._transport_options = dict(make_celery(settings).conf.broker_transport_options or {})

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        depth = self._queue_depths()
        if depth is not None:
            family = GaugeMetricFamily(
                "samtune_queue_depth", "Messages waiting in a broker queue (not yet taken by a worker).",
                labels=["queue"],
            )  # fmt: skip
            for queue, count in depth.items():
                family.add_metric([queue], count)
            yield family

    def _jobs(self) -> Iterator[Metric]:
        with self.engine.connect() as conn:
            counts = dict(
                conn.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status)).all()
            )
            running = conn.execute(
                select(TrainingJob.id, TrainingJob.progress).where(TrainingJob.status == "running")
            ).all()
        jobs = GaugeMetricFamily("samtune_jobs", "Training jobs by status.", labels=["status"])
        for status in get_args(JobStatus):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        speed = GaugeMetricFamily(
            "samtune_job_steps_per_second", "A running job's training speed, from its last heartbeat.",
            labels=["job_id"],
        )  # fmt: skip
        eta = GaugeMetricFamily(
            "samtune_job_eta_seconds", "A running job's estimated seconds to the end of training.",
            labels=["job_id"],
        )  # fmt: skip
        for job_id, progress in running:
            progress = progress or {}
            if isinstance(progress.get("steps_per_second"), int | float):
                speed.add_metric([str(job_id)], progress["steps_per_second"])
            if isinstance(progress.get("eta_seconds"), int | float):
                eta.add_metric([str(job_id)], progress["eta_seconds"])
        yield speed
        yield eta

    def _queue_depths(self) -> dict[str, int] | None:
        """Messages per queue; None when the broker does not answer (the series is then absent, not 0)."""
        options = self._transport_options | {
            "socket_timeout": BROKER_TIMEOUT_S,
            "socket_connect_timeout": BROKER_TIMEOUT_S,
        }
        try:
            with Connection(self.settings.broker_url, connect_timeout=BROKER_TIMEOUT_S,
                            transport_options=options) as connection:  # fmt: skip
                connection.ensure_connection(max_retries=1, timeout=int(BROKER_TIMEOUT_S))
                # A virtual transport's channel (Redis, filesystem): typed as the abstract StdChannel.
                channel: Any = connection.default_channel
                depths = {}
                for queue in QUEUES:
                    try:
                        depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                    # Redis keeps no key for an empty queue (never used, or drained): asked for, it is "not found".
                    except ChannelError:
                        depths[queue] = 0
                return depths
        except Exception as exc:  # noqa: BLE001 - the scrape still answers everything else
            logger.warning("queue depth not read: the broker did not answer (%s)", type(exc).__name__)
            return None
